import type { AuditRecord, WpadAuditRecord } from './auditRecord.js';
import { verifyAuditFiles, type ChainBreak } from './verifyAudit.js';
import { forTerminal } from '../display/terminalText.js';

export interface VerdictCounts { allow: number; block: number; pass: number }

export interface AuditSummary {
  files: string[];
  /** Audit records counted (lines that parse and match the schema). */
  records: number;
  /** Time of the first and last record (ISO-8601). */
  first?: string;
  last?: string;
  chain: { intact: boolean; lines: number; head: string; fromGenesis: boolean; break?: ChainBreak };
  verdicts: VerdictCounts;
  /** Distinct payloads (by SHA-256) allowed and blocked. */
  payloads: { allowed: number; blocked: number };
  byHost: Record<string, VerdictCounts>;
  /** Blocked records by reason code (a record with several reasons counts under each). */
  byReason: Record<string, number>;
  /** Allowed and blocked records by signer subject ("(none)" when the payload had no usable signer). */
  bySigner: Record<string, { allow: number; block: number }>;
  topBlockedUrls: { url: string; count: number; reasons: string[] }[];
  /** WPAD guard findings (records of kind `wpad`) by finding; absent when there are none. */
  wpadFindings?: Record<string, number>;
}

const zero = (): VerdictCounts => ({ allow: 0, block: 0, pass: 0 });

/**
 * Counts allowed and blocked responses in audit files (in chain order), by host, reason, signer,
 * and the most blocked URLs. The chain is checked in the same pass: the summary says whether it is
 * intact, and reads on past a break so that a damaged log can still be summarised.
 */
export async function summarizeAuditFiles(files: string[], top = 10): Promise<AuditSummary> {
  const s: AuditSummary = {
    files, records: 0, chain: { intact: true, lines: 0, head: '', fromGenesis: false },
    verdicts: zero(), payloads: { allowed: 0, blocked: 0 }, byHost: {}, byReason: {}, bySigner: {}, topBlockedUrls: [],
  };
  const allowed = new Set<string>();
  const blocked = new Set<string>();
  const urls = new Map<string, { count: number; reasons: Set<string> }>();
  let first: number | undefined;
  let last: number | undefined;
  const v = await verifyAuditFiles(files, {
    partial: true,
    continueAfterBreak: true,
    onRecord: (r) => {
      const rec = r as AuditRecord & { time: number };
      s.records++;
      if ((r as { kind?: string }).kind === 'wpad') {
        const finding = (r as unknown as WpadAuditRecord).finding;
        const counts = (s.wpadFindings ??= {});
        counts[finding] = (counts[finding] ?? 0) + 1;
        return;
      }
      first = first === undefined ? rec.time : Math.min(first, rec.time);
      last = last === undefined ? rec.time : Math.max(last, rec.time);
      s.verdicts[rec.verdict]++;
      (s.byHost[rec.host] ??= zero())[rec.verdict]++;
      if (rec.verdict === 'pass') return;
      const signer = rec.signer?.subject ?? '(none)';
      (s.bySigner[signer] ??= { allow: 0, block: 0 })[rec.verdict]++;
      if (rec.sha256) (rec.verdict === 'allow' ? allowed : blocked).add(rec.sha256);
      if (rec.verdict === 'block') {
        for (const code of new Set(rec.reasons.map((x) => x.code))) s.byReason[code] = (s.byReason[code] ?? 0) + 1;
        const u = urls.get(rec.url) ?? { count: 0, reasons: new Set<string>() };
        u.count++;
        for (const x of rec.reasons) u.reasons.add(x.code);
        urls.set(rec.url, u);
      }
    },
  });
  s.chain = { intact: v.intact, lines: v.records, head: v.head, fromGenesis: v.fromGenesis, ...(v.break ? { break: v.break } : {}) };
  if (first !== undefined) s.first = new Date(first).toISOString();
  if (last !== undefined) s.last = new Date(last).toISOString();
  s.payloads = { allowed: allowed.size, blocked: blocked.size };
  s.topBlockedUrls = [...urls.entries()]
    .sort((a, b) => b[1].count - a[1].count || (a[0] < b[0] ? -1 : 1))
    .slice(0, top)
    .map(([url, u]) => ({ url, count: u.count, reasons: [...u.reasons].sort() }));
  return s;
}

function table(header: string[], rows: (string | number)[][]): string[] {
  // Escaped before the widths are measured (the final per-line pass then finds nothing to change).
  const cells = [header, ...rows.map((r) => r.map((c) => forTerminal(String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  // Numbers right-aligned, text left-aligned.
  const numeric = header.map((_, i) => rows.every((r) => typeof r[i] === 'number'));
  return cells.map((r) => '  ' + r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

const byCount = <T>(o: Record<string, T>, n: (v: T) => number) => Object.entries(o).sort((a, b) => n(b[1]) - n(a[1]) || (a[0] < b[0] ? -1 : 1));

/** The summary as a terminal report. */
export function formatSummary(s: AuditSummary): string {
  const out: string[] = [];
  const span = s.first ? `, ${s.first} .. ${s.last}` : '';
  out.push(`${s.files.join(', ')}: ${s.records} records${span}`);
  out.push(s.chain.intact
    ? `chain     intact, ${s.chain.lines} lines${s.chain.fromGenesis ? ' from genesis' : ' (continues an earlier file)'}, head ${s.chain.head}`
    : `chain     BROKEN at ${s.chain.break!.file}:${s.chain.break!.line}: ${s.chain.break!.reason} (run "patchgate audit verify")`);
  out.push(`verdicts  allow ${s.verdicts.allow}, block ${s.verdicts.block}, pass ${s.verdicts.pass}; distinct payloads allowed ${s.payloads.allowed}, blocked ${s.payloads.blocked}`);
  out.push('', 'by host');
  out.push(...table(['host', 'allow', 'block', 'pass'], byCount(s.byHost, (c) => c.allow + c.block + c.pass).map(([h, c]) => [h, c.allow, c.block, c.pass])));
  out.push('', 'by reason (blocked records)');
  const reasons = byCount(s.byReason, (n) => n);
  out.push(...(reasons.length ? table(['reason', 'records'], reasons.map(([r, n]) => [r, n])) : ['  (none)']));
  out.push('', 'by signer');
  const signers = byCount(s.bySigner, (c) => c.allow + c.block);
  out.push(...(signers.length ? table(['signer', 'allow', 'block'], signers.map(([n, c]) => [n, c.allow, c.block])) : ['  (none)']));
  out.push('', 'top blocked URLs');
  out.push(...(s.topBlockedUrls.length ? table(['url', 'records', 'reasons'], s.topBlockedUrls.map((u) => [u.url, u.count, u.reasons.join(',')])) : ['  (none)']));
  if (s.wpadFindings) {
    out.push('', 'WPAD guard findings');
    out.push(...table(['finding', 'records'], byCount(s.wpadFindings, (n) => n).map(([f, n]) => [f, n])));
  }
  // Each line escaped on its own: a line feed inside a URL or subject cannot start a forged line.
  return out.map(forTerminal).join('\n');
}
