/**
 * A SIGHUP whose audit reopen fails (issue 13, item 3): the path became a folder (EISDIR), as a
 * mistaken logrotate or operator could leave it. The gate used to die of the uncaught error. It
 * must keep the old descriptor (records go on to the renamed file), say so on stderr, count it in
 * /metrics and show it in /healthz; a later SIGHUP with the path fixed reopens, and the chain
 * across the files stays intact.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, renameSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { proxyRequest, waitFor } from '../support/gateHarness.js';
import { adminGet, startRunProcess, useRunTestBed } from '../support/runProcess.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';

const bed = useRunTestBed('patchgate-reopen-');
const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter(Boolean).length;

describe('patchgate run: a failed audit reopen on SIGHUP', () => {
  it('EISDIR: the gate lives, keeps writing to the old file, reports it (stderr, metric, /healthz); a fixed path reopens on the next SIGHUP', async () => {
    const audit = join(bed.dir, 'audit.jsonl');
    const gate = await startRunProcess({ audit, dir: bed.dir });
    try {
      expect((await proxyRequest(gate.port, bed.origin.url('/good.exe'))).status).toBe(200);
      renameSync(audit, `${audit}.1`);
      mkdirSync(audit); // the path is now a folder: the reopen fails with EISDIR
      gate.child.kill('SIGHUP');
      expect(await waitFor(() => /cannot open the audit log/.test(gate.stderr()), 5000), gate.stderr()).toBe(true);
      expect(gate.stderr()).toMatch(/SIGHUP: cannot open the audit log .*EISDIR/);
      expect(gate.child.exitCode).toBeNull();

      // Still serving, and the record goes to the file that was open (now audit.jsonl.1).
      expect((await proxyRequest(gate.port, bed.origin.url('/flame.exe'))).status).toBe(403);
      expect(await waitFor(() => lines(`${audit}.1`) === 2, 3000)).toBe(true);
      const health = JSON.parse(await adminGet(gate.adminPort, '/healthz'));
      expect(health).toMatchObject({ status: 'degraded', auditReopen: { ok: false }, faults: { audit: { count: 1 } } });
      expect(health.auditReopen.error).toMatch(/EISDIR/);
      expect(await adminGet(gate.adminPort, '/metrics')).toMatch(/^patchgate_audit_reopen_errors_total\{code="EISDIR"\} 1$/m);
      // The failure was reported once, as a reopen failure, not as a write failure.
      expect(gate.stderr()).not.toMatch(/audit log: write failed/);

      // Fixed: the next SIGHUP opens a new file that links to the old one.
      rmdirSync(audit);
      gate.child.kill('SIGHUP');
      expect(await waitFor(async () => JSON.parse(await adminGet(gate.adminPort, '/healthz')).status === 'ok', 5000)).toBe(true);
      expect((await proxyRequest(gate.port, bed.origin.url('/good.exe'))).status).toBe(200);
      expect(await waitFor(() => { try { return lines(audit) === 1; } catch { return false; } }, 3000)).toBe(true);
    } finally {
      gate.child.kill('SIGTERM');
      await gate.exited;
    }
    const v = await verifyAuditFiles([`${audit}.1`, audit]);
    expect(v).toMatchObject({ intact: true, records: 3 });
  });
});
