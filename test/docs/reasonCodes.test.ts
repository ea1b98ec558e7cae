import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REASON_CODES } from '../../src/verify/reasonCodes.js';
import { reasonCodeTable, tableInDocument } from '../../scripts/lib/reasonCodeTable.mjs';
import { REPO } from '../support/fixtures.js';

const doc = readFileSync(join(REPO, 'docs', 'reason-codes.md'), 'utf8');
const codes = Object.keys(REASON_CODES);

/** [code, text] of each row of the generated table, as written in the file. */
function tableRows(): [string, string][] {
  const table = tableInDocument(doc);
  expect(table, 'docs/reason-codes.md has no reason-code markers').toBeDefined();
  return table!.split('\n').slice(2).map((line) => {
    const m = /^\| `([A-Z_0-9]+)` \| (.*) \|$/.exec(line);
    expect(m, `not a reason-code row: ${line}`).not.toBeNull();
    return [m![1]!, m![2]!.replace(/\\\|/g, '|')];
  });
}

describe('docs/reason-codes.md', () => {
  it('lists every code of src/verify/reasonCodes.ts, none missing, none extra, in its order', () => {
    const listed = tableRows().map(([code]) => code);
    expect(codes.filter((c) => !listed.includes(c)), 'missing from docs/reason-codes.md').toEqual([]);
    expect(listed.filter((c) => !codes.includes(c)), 'in docs/reason-codes.md but not in the code').toEqual([]);
    expect(listed).toEqual(codes);
  });

  it("gives each code the code's own text", () => {
    for (const [code, text] of tableRows()) expect(text, code).toBe(REASON_CODES[code as keyof typeof REASON_CODES]);
  });

  it('holds exactly the table `npm run docs:reason-codes` writes', () => {
    expect(tableInDocument(doc)).toBe(reasonCodeTable(REASON_CODES));
  });

  it('names no code outside the table that the code does not have', () => {
    // Backticked upper-case words in the notes around the table: each must be a real code.
    const named = [...doc.matchAll(/`([A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{4,})`/g)].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(codes.length);
    expect([...new Set(named)].filter((c) => !codes.includes(c))).toEqual([]);
  });
});
