// The reason-code table of docs/reason-codes.md, written from REASON_CODES (src/verify/reasonCodes.ts):
// one row per code, in the code's order, with the code's own text. scripts/docs-reason-codes.mjs
// writes it; test/docs/reasonCodes.test.ts checks that the file holds exactly this table.

export const TABLE_BEGIN = '<!-- reason-codes: written from src/verify/reasonCodes.ts by `npm run docs:reason-codes`; edit the text there -->';
export const TABLE_END = '<!-- /reason-codes -->';

/** The markdown table for a `{CODE: description}` object. */
export function reasonCodeTable(reasonCodes) {
  const rows = Object.entries(reasonCodes).map(([code, text]) => `| \`${code}\` | ${text.replace(/\|/g, '\\|')} |`);
  return ['| code | meaning |', '|---|---|', ...rows].join('\n');
}

/** The text between the markers, or undefined when the markers are missing. */
export function tableInDocument(markdown) {
  const begin = markdown.indexOf(TABLE_BEGIN);
  const end = markdown.indexOf(TABLE_END);
  if (begin < 0 || end < begin) return undefined;
  return markdown.slice(begin + TABLE_BEGIN.length, end).trim();
}

/** The document with the table between the markers replaced by the one for reasonCodes. */
export function withReasonCodeTable(markdown, reasonCodes) {
  const begin = markdown.indexOf(TABLE_BEGIN);
  const end = markdown.indexOf(TABLE_END);
  if (begin < 0 || end < begin) throw new Error(`the reason-code markers are missing: ${TABLE_BEGIN} … ${TABLE_END}`);
  return markdown.slice(0, begin + TABLE_BEGIN.length) + '\n' + reasonCodeTable(reasonCodes) + '\n' + markdown.slice(end);
}
