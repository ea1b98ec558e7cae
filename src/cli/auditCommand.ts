import { statSync } from 'node:fs';
import { verifyAuditFiles } from '../audit/verifyAudit.js';
import { formatSummary, summarizeAuditFiles } from '../audit/auditSummary.js';
import { forTerminal } from '../display/terminalText.js';
import { UsageError } from './usageError.js';

function checkFiles(files: string[]): void {
  if (files.length === 0) throw new UsageError('name at least one audit file');
  for (const f of files) {
    let ok = false;
    try { ok = statSync(f).isFile(); } catch { /* missing */ }
    if (!ok) throw new UsageError(`cannot read audit file "${f}"`);
  }
}

export interface AuditVerifyArgs { files: string[]; partial?: boolean; head?: string; json?: boolean }

/** `patchgate audit verify FILE...`: 0 intact, 1 at the first break (file and line named), 2 usage. */
export async function runAuditVerify(a: AuditVerifyArgs, out: (line: string) => void): Promise<number> {
  checkFiles(a.files);
  const head = a.head?.toLowerCase();
  if (head !== undefined && !/^[0-9a-f]{64}$/.test(head)) throw new UsageError('--head: expected a SHA-256 (64 hex digits)');
  const t0 = process.hrtime.bigint();
  const r = await verifyAuditFiles(a.files, { partial: a.partial, expectHash: head });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (a.json) {
    out(JSON.stringify({ ...r, seconds: Math.round(seconds * 1000) / 1000 }));
    return r.intact ? 0 : 1;
  }
  const width = Math.max(...a.files.map((f) => f.length));
  for (const [i, f] of r.files.entries()) {
    const broken = r.break && r.break.file === f.file;
    if (broken) break;
    const note = i === 0 ? (r.fromGenesis ? ' (from genesis)' : ' (continues an earlier file: --partial)') : '';
    out(`ok      ${f.file.padEnd(width)}  ${f.lines} lines${note}`);
  }
  if (r.break) {
    out(forTerminal(`BROKEN  ${r.break.file}:${r.break.line}: ${r.break.reason}`));
    return 1;
  }
  const anchor = r.anchorAt ? `; --head found at ${r.anchorAt.file}:${r.anchorAt.line}` : '';
  out(`intact: ${r.records} lines in ${r.files.length} file${r.files.length === 1 ? '' : 's'}, head ${r.head}${anchor} (${seconds.toFixed(2)} s)`);
  return 0;
}

export interface AuditSummaryArgs { files: string[]; json?: boolean; top?: number }

/** `patchgate audit summary FILE... [--json]`: counts by host, reason, signer; top blocked URLs. */
export async function runAuditSummary(a: AuditSummaryArgs, out: (line: string) => void): Promise<number> {
  checkFiles(a.files);
  const top = a.top ?? 10;
  if (!Number.isInteger(top) || top < 0) throw new UsageError('--top: expected a whole number');
  const s = await summarizeAuditFiles(a.files, top);
  out(a.json ? JSON.stringify(s) : formatSummary(s));
  return 0;
}
