/**
 * WPAD guard findings in the gate's audit chain and metrics: records of kind `wpad` interleave with
 * transfer records in one hash chain that `audit verify` accepts; the schema refuses a wpad line
 * with a field it does not know or a finding it does not list; `audit summary` counts findings;
 * the gate's transfer metrics ignore them and WpadMetrics counts them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../src/audit/auditLog.js';
import type { AuditRecord, WpadAuditRecord } from '../../src/audit/auditRecord.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';
import { auditLineProblem } from '../../src/audit/auditSchema.js';
import { summarizeAuditFiles, formatSummary } from '../../src/audit/auditSummary.js';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';
import { WpadMetrics } from '../../src/wpad/wpadMetrics.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pg-wpad-audit-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const finding = (i: number, over: Partial<WpadAuditRecord> = {}): WpadAuditRecord => ({
  id: `wpad-${i}`, kind: 'wpad', finding: 'random-name-answered', protocol: 'llmnr', interface: 'eth0', asked: 'qwertyuiopas',
  responder: '10.0.0.66', addresses: ['10.0.0.66'], message: 'llmnr on eth0: 10.0.0.66 answered a never-existing name', ...over,
});
const transfer: AuditRecord = {
  id: 't-1', kind: 'transfer', client: '127.0.0.1', method: 'GET', url: 'http://u.test/a.exe', host: 'u.test', inspected: true, served: 'blocked',
  status: 403, verdict: 'block', reasons: [{ code: 'UNTRUSTED_ROOT', message: 'x' }], rulesSha256: 'ab'.repeat(32), durations: {},
};

describe('wpad records in the audit chain', () => {
  it('interleave with transfer records; audit verify and audit summary read them', async () => {
    const file = join(dir, 'mixed.jsonl');
    const log = new AuditLog(file);
    log.record(finding(1));
    log.record(transfer);
    log.record(finding(2, { finding: 'pac-diverts-updates', protocol: 'http', pacUrl: 'http://10.0.0.66/wpad.dat', updateUrl: 'http://download.windowsupdate.com/', pacResult: 'PROXY 10.0.0.66:8080' }));
    log.record(finding(3, { finding: 'unexpected-wpad-responder', protocol: 'nbns', asked: 'wpad' }));
    await log.close();
    const v = await verifyAuditFiles([file]);
    expect(v).toMatchObject({ intact: true, records: 4, fromGenesis: true });
    const first = JSON.parse(readFileSync(file, 'utf8').split('\n')[0]!);
    expect(first).toMatchObject({ msg: 'wpad', kind: 'wpad', finding: 'random-name-answered', responder: '10.0.0.66' });
    const s = await summarizeAuditFiles([file]);
    expect(s.wpadFindings).toEqual({ 'random-name-answered': 1, 'pac-diverts-updates': 1, 'unexpected-wpad-responder': 1 });
    expect(s.verdicts).toEqual({ allow: 0, block: 1, pass: 0 });
    expect(formatSummary(s)).toMatch(/WPAD guard findings\n[\s\S]*pac-diverts-updates\s+1/);
  });

  it('a wpad line with an unknown field, an unknown finding or a missing responder is refused', () => {
    const line = (over: Record<string, unknown>) => ({ level: 30, time: 1, prev: '0'.repeat(64), msg: 'wpad', ...finding(1), ...over });
    expect(auditLineProblem(line({}))).toBeUndefined();
    expect(auditLineProblem(line({ verdict: 'allow' }))).toMatch(/unexpected field "verdict"/);
    expect(auditLineProblem(line({ finding: 'nothing-to-see' }))).toMatch(/finding/);
    const { responder: _r, ...noResponder } = line({});
    expect(auditLineProblem(noResponder)).toMatch(/missing field "responder"/);
  });

  it('a tampered wpad line breaks the chain', async () => {
    const file = join(dir, 'tampered.jsonl');
    const log = new AuditLog(file);
    log.record(finding(1));
    log.record(finding(2));
    await log.close();
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[0] = lines[0]!.replace('10.0.0.66', '10.0.0.67');
    writeFileSync(file, lines.join('\n'));
    const v = await verifyAuditFiles([file]);
    expect(v.intact).toBe(false);
    expect(v.break?.line).toBe(2);
  });
});

describe('wpad metrics', () => {
  it('WpadMetrics counts findings, answers and rounds; the gate\'s transfer counters ignore wpad records', async () => {
    const gate = new GateMetrics();
    const wpad = new WpadMetrics(gate.registry);
    gate.observeRecord(finding(1));
    wpad.finding('random-name-answered', 'llmnr');
    wpad.finding('random-name-answered', 'llmnr');
    wpad.finding('pac-diverts-updates', 'http');
    wpad.answer('nbns', 'wpad');
    wpad.roundDone();
    const text = await gate.text();
    expect(text).toContain('patchgate_wpad_findings_total{finding="random-name-answered",protocol="llmnr"} 2');
    expect(text).toContain('patchgate_wpad_findings_total{finding="pac-diverts-updates",protocol="http"} 1');
    expect(text).toContain('patchgate_wpad_findings_total{finding="unexpected-wpad-responder",protocol="llmnr"} 0');
    expect(text).toContain('patchgate_wpad_answers_total{protocol="nbns",asked="wpad"} 1');
    expect(text).toContain('patchgate_wpad_rounds_total 1');
    expect(text).toMatch(/patchgate_wpad_last_round_timestamp_seconds \d/);
    expect(text).not.toMatch(/patchgate_transfers_total\{verdict="undefined"/);
    expect(text).toContain('patchgate_transfers_total{verdict="allow",reason="none"} 0');
  });
});
