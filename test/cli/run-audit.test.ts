/**
 * `patchgate run` as a real process: the audit chain across a logrotate-style rotation (rename,
 * then SIGHUP) and across a restart, the head it prints, and /metrics and /healthz on the admin
 * address.
 */
import { describe, expect, it } from 'vitest';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { proxyRequest, waitFor } from '../support/gateHarness.js';
import { adminGet, auditHeads, startRunProcess, useRunTestBed } from '../support/runProcess.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';

const bed = useRunTestBed('patchgate-run-audit-');

const startRun = (audit: string) => startRunProcess({ audit, dir: bed.dir });
const heads = auditHeads;

describe('patchgate run: audit chain and metrics', () => {
  it('rename + SIGHUP rotates the audit file; a restart resumes; FILE.1 FILE verifies; /metrics counts the traffic', async () => {
    const audit = join(bed.dir, 'audit.jsonl');
    const gate = await startRun(audit);
    expect(heads(gate.stderr())[0]).toEqual({ hash: '0'.repeat(64), when: 'start' });
    expect((await proxyRequest(gate.port, bed.origin.url('/good.exe'))).status).toBe(200);
    expect((await proxyRequest(gate.port, bed.origin.url('/flame.exe'))).status).toBe(403);

    const text = await adminGet(gate.adminPort, '/metrics');
    expect(text).toMatch(/^patchgate_transfers_total\{verdict="allow",reason="none"\} 1$/m);
    expect(text).toMatch(/^patchgate_transfers_total\{verdict="block",reason="UNTRUSTED_ROOT"\} 1$/m);
    expect(text).toMatch(/^patchgate_verify_duration_seconds_count 2$/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m); // prom-client's default metrics, in the CLI
    const health = JSON.parse(await adminGet(gate.adminPort, '/healthz'));
    expect(health).toMatchObject({ status: 'ok', inFlight: 0, audit: { written: 2 } });

    // logrotate (create): rename, then the postrotate SIGHUP.
    renameSync(audit, `${audit}.1`);
    gate.child.kill('SIGHUP');
    expect(await waitFor(() => heads(gate.stderr()).some((h) => h.when.startsWith('SIGHUP')), 5000)).toBe(true);
    expect((await proxyRequest(gate.port, bed.origin.url('/flame.exe'))).status).toBe(403);
    gate.child.kill('SIGTERM');
    expect(await gate.exited).toBe(0);
    const stopHead = heads(gate.stderr()).find((h) => h.when === 'stop')!;

    const rotated = await verifyAuditFiles([`${audit}.1`, audit]);
    expect(rotated).toMatchObject({ intact: true, records: 3, head: stopHead.hash });
    expect(rotated.files.map((f) => f.lines)).toEqual([2, 1]);

    // A restart appends to the same file and carries on from its last line.
    const again = await startRun(audit);
    expect(heads(again.stderr())[0]).toEqual({ hash: stopHead.hash, when: 'start' });
    expect((await proxyRequest(again.port, bed.origin.url('/good.exe'))).status).toBe(200);
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
    const all = await verifyAuditFiles([`${audit}.1`, audit], { expectHash: stopHead.hash });
    expect(all).toMatchObject({ intact: true, records: 4 });
  });
});
