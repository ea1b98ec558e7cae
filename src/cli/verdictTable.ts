import type { Verdict } from '../verify/verdict.js';
import { forTerminal } from '../display/terminalText.js';

/** The human-readable form of `verify` (without --json): one block per file, control characters escaped. */
export function formatVerdictText(file: string, v: Verdict): string {
  const lines = [`${v.verdict === 'allow' ? 'ALLOW' : 'BLOCK'}  ${file}`];
  lines.push(`  format   ${v.format}   size ${v.size}   sha256 ${v.sha256}`);
  if (v.signer) lines.push(`  signer   ${v.signer.subject}`);
  if (v.chain?.length) lines.push(`  chain    ${v.chain.map((c) => c.subject.replace(/^.*CN=/, '')).join(' -> ')}`);
  if (v.digest) lines.push(`  digest   ${v.digest.algorithm} ${v.digest.actual === v.digest.expected ? 'matches' : 'computed ' + v.digest.actual}`);
  if (v.trustList) lines.push(`  list     usage ${v.trustList.usage.join(', ')}; ${v.trustList.entries} entries; thisUpdate ${v.trustList.thisUpdate}${v.trustList.sequenceNumber ? `; sequence ${v.trustList.sequenceNumber}` : ''}`);
  if (v.timestamp) lines.push(`  time     ${v.timestamp.time} (timestamp by ${v.timestamp.authority})`);
  else if (v.verifiedAt) lines.push(`  time     ${v.verifiedAt}`);
  for (const r of v.reasons) lines.push(`  reason   ${r.code}: ${r.message}`);
  // Each line escaped on its own: a line feed inside a subject cannot start a forged line.
  return lines.map(forTerminal).join('\n');
}
