/** The command-line contract of `patchgate audit verify` and `patchgate audit summary`, run as a real process. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';
import { AuditLog } from '../../src/audit/auditLog.js';
import { lineHash } from '../../src/audit/auditChain.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';

const BIN = join(REPO, 'bin', 'patchgate.js');
function pg(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, cwd: REPO });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let dir: string;
let log: string;
let head: string;

const signer = (cn: string) => ({ subject: `O=Vendor, CN=${cn}`, issuer: 'CN=Update CA', serial: '01', sha256: '11'.repeat(32) });
function rec(i: number, o: Partial<AuditRecord>): AuditRecord {
  return {
    id: `id-${i}`, kind: 'transfer', client: '10.0.0.5', method: 'GET', url: `http://a.test/${i}.exe`, host: 'a.test', inspected: true,
    served: 'full', status: 200, verdict: 'allow', reasons: [], rulesSha256: 'r', durations: {}, ...o,
  };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-audit-cli-'));
  log = join(dir, 'audit.jsonl');
  const a = new AuditLog(log);
  const untrusted = [{ code: 'UNTRUSTED_ROOT' as const, message: 'm' }, { code: 'WEAK_ALGORITHM' as const, message: 'md5' }];
  // a.test: 3 allowed (2 by Publisher, 1 by Other); b.test: 2 blocked for the same URL, 1 blocked elsewhere; 1 passed; 1 CONNECT.
  a.record(rec(1, { signer: signer('Publisher'), sha256: 'aa'.repeat(32) }));
  a.record(rec(2, { signer: signer('Publisher'), sha256: 'aa'.repeat(32), served: 'range', status: 206 }));
  a.record(rec(3, { signer: signer('Other'), sha256: 'bb'.repeat(32) }));
  a.record(rec(4, { host: 'b.test', url: 'http://b.test/flame.exe', verdict: 'block', served: 'blocked', status: 403, reasons: untrusted, signer: signer('MS'), sha256: 'cc'.repeat(32) }));
  a.record(rec(5, { host: 'b.test', url: 'http://b.test/flame.exe', verdict: 'block', served: 'blocked', status: 403, reasons: untrusted, signer: signer('MS'), sha256: 'cc'.repeat(32) }));
  a.record(rec(6, { host: 'b.test', url: 'http://b.test/cut.exe', verdict: 'block', served: 'blocked', status: 403, reasons: [{ code: 'UPSTREAM_ERROR', message: 'closed' }] }));
  a.record(rec(7, { url: 'http://a.test/meta.xml', verdict: 'pass', served: 'passed', inspected: false }));
  a.record(rec(8, { kind: 'connect', method: 'CONNECT', url: 'pinned.test:443', host: 'pinned.test', verdict: 'pass', served: 'tunnel', inspected: false }));
  await a.close();
  head = a.head.hash;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('patchgate audit verify', () => {
  it('exit 0 on an intact log, with the line count and the head', () => {
    const r = pg('audit', 'verify', log);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^ok\s+.*audit\.jsonl\s+8 lines \(from genesis\)/m);
    expect(r.out).toContain(`intact: 8 lines in 1 file, head ${head}`);
  });

  it('exit 1 at the first break, naming the file and the line', () => {
    const bad = join(dir, 'bad.jsonl');
    const ls = readFileSync(log, 'utf8').split('\n');
    ls[3] = ls[3]!.replace('"status":403', '"status":200');
    writeFileSync(bad, ls.join('\n'));
    const r = pg('audit', 'verify', bad);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(new RegExp(`^BROKEN  ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:5: prev `, 'm'));
    const j = pg('audit', 'verify', '--json', bad);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.out)).toMatchObject({ intact: false, break: { file: bad, line: 5 } });
  });

  it('--head: the chain must contain a hash recorded earlier', () => {
    const ls = readFileSync(log, 'utf8').split('\n');
    expect(pg('audit', 'verify', '--head', lineHash(ls[6]!), log).code).toBe(0);
    const cut = join(dir, 'cut.jsonl');
    writeFileSync(cut, ls.slice(0, 6).join('\n') + '\n');
    const r = pg('audit', 'verify', '--head', head, cut);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/cut\.jsonl:7: the expected head/);
  });

  it('exit 2 on usage errors: a missing file, no file, a malformed --head', () => {
    const missing = pg('audit', 'verify', join(dir, 'nope.jsonl'));
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/cannot read audit file/);
    expect(missing.out).toBe('');
    expect(pg('audit', 'verify').code).toBe(2);
    expect(pg('audit', 'verify', '--head', 'xyz', log).code).toBe(2);
    expect(pg('audit').code).toBe(2);
  });
});

describe('patchgate audit summary', () => {
  it('--json: counts by verdict, host, reason, signer, and the top blocked URLs', () => {
    const r = pg('audit', 'summary', '--json', log);
    expect(r.code, r.err).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.records).toBe(8);
    expect(s.chain).toMatchObject({ intact: true, lines: 8, head });
    expect(s.verdicts).toEqual({ allow: 3, block: 3, pass: 2 });
    expect(s.payloads).toEqual({ allowed: 2, blocked: 1 });
    expect(s.byHost).toEqual({ 'a.test': { allow: 3, block: 0, pass: 1 }, 'b.test': { allow: 0, block: 3, pass: 0 }, 'pinned.test': { allow: 0, block: 0, pass: 1 } });
    expect(s.byReason).toEqual({ UNTRUSTED_ROOT: 2, WEAK_ALGORITHM: 2, UPSTREAM_ERROR: 1 });
    expect(s.bySigner).toEqual({ 'O=Vendor, CN=Publisher': { allow: 2, block: 0 }, 'O=Vendor, CN=Other': { allow: 1, block: 0 }, 'O=Vendor, CN=MS': { allow: 0, block: 2 }, '(none)': { allow: 0, block: 1 } });
    expect(s.topBlockedUrls).toEqual([
      { url: 'http://b.test/flame.exe', count: 2, reasons: ['UNTRUSTED_ROOT', 'WEAK_ALGORITHM'] },
      { url: 'http://b.test/cut.exe', count: 1, reasons: ['UPSTREAM_ERROR'] },
    ]);
  });

  it('the report names the same numbers; a broken chain is said, not hidden', () => {
    const r = pg('audit', 'summary', '--top', '1', log);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/chain\s+intact, 8 lines from genesis/);
    expect(r.out).toMatch(/verdicts\s+allow 3, block 3, pass 2/);
    expect(r.out).toMatch(/^\s+b\.test\s+0\s+3\s+0$/m);
    expect(r.out).toMatch(/^\s+UNTRUSTED_ROOT\s+2$/m);
    expect(r.out).toMatch(/^\s+O=Vendor, CN=MS\s+0\s+2$/m);
    expect(r.out).toMatch(/^\s+http:\/\/b\.test\/flame\.exe\s+2\s+UNTRUSTED_ROOT,WEAK_ALGORITHM$/m);
    expect(r.out).not.toContain('cut.exe');
    const bad = join(dir, 'bad2.jsonl');
    const ls = readFileSync(log, 'utf8').split('\n');
    ls.splice(2, 1);
    writeFileSync(bad, ls.join('\n'));
    const b = pg('audit', 'summary', bad);
    expect(b.out).toMatch(/chain\s+BROKEN at .*bad2\.jsonl:3/);
    expect(b.out).toMatch(/verdicts\s+allow 2, block 3, pass 2/);
  });
});
