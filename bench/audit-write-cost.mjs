// Cost per request of writing an audit record before the payload leaves (issue 13 item 11):
// AuditLog.record (write(2) on our own descriptor), compared with pino's synchronous destination
// (what the log used before) and with an fdatasync after each record (power-loss durable).
// Usage: node bench/audit-write-cost.mjs [records]   (run `npm run build` first)
import { mkdtempSync, rmSync, openSync, writeSync, fdatasyncSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AuditLog } from '../dist/audit/auditLog.js';
import { serializeAuditLine } from '../dist/audit/auditChain.js';

const n = Number(process.argv[2] ?? 20000);
const dir = mkdtempSync(join(tmpdir(), 'patchgate-audit-cost-'));
const record = (i) => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, kind: 'transfer', client: '10.1.2.3', method: 'GET',
  url: `http://download.windowsupdate.com/c/msdownload/update/software/secu/2026/12/windows11.0-kb${5000000 + i}-x64.cab`,
  host: 'download.windowsupdate.com', inspected: true, served: 'full', status: 200, upstreamStatus: 200, bytes: 123456789, bytesToClient: 123456789,
  sha256: 'ab'.repeat(32), format: 'cab', verdict: 'allow', reasons: [],
  signer: { subject: 'CN=Microsoft Windows, O=Microsoft Corporation', issuer: 'CN=Microsoft Windows Production PCA 2011', serial: '33000001', sha256: 'cd'.repeat(32) },
  chain: ['cd'.repeat(32), 'ef'.repeat(32)], rulesSha256: '12'.repeat(32), durations: { upstreamMs: 1200, verifyMs: 3.2 },
});
const time = (label, fn) => {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn(i);
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  console.log(`${label.padEnd(48)} ${us.toFixed(2)} µs/record`);
};
const line = serializeAuditLine(record(0), '00'.repeat(32), Date.now());
console.log(`${n} records of ${Buffer.byteLength(line) + 1} bytes, in ${dir}`);
const log = new AuditLog(join(dir, 'audit.jsonl'));
time('AuditLog.record (write(2), chained)', (i) => log.record(record(i)));
await log.close();
const dest = pino.destination({ dest: join(dir, 'pino.jsonl'), sync: true });
time('pino.destination sync (before)', (i) => dest.write(serializeAuditLine(record(i), '00'.repeat(32), Date.now()) + '\n'));
dest.flushSync();
const fd = openSync(join(dir, 'fsync.jsonl'), 'a');
time('write(2) + fdatasync per record', (i) => { writeSync(fd, serializeAuditLine(record(i), '00'.repeat(32), Date.now()) + '\n'); fdatasyncSync(fd); });
closeSync(fd);
rmSync(dir, { recursive: true, force: true });
