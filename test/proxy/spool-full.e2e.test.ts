/**
 * A full, then read-only, spool under `patchgate run` (issue 13, item 13). The spool folder is a
 * 1 MiB tmpfs this test mounts (root, as CI runs; skipped where mounting is not allowed). A spool
 * write error used to stall the hold until the upstream idle timeout (30 s) and report
 * `TIMEOUT: upstream idle`; it must end the hold at once, blocked `INTERNAL_ERROR` with
 * `spool: <errno>`, told on stderr, counted in patchgate_spool_errors_total and shown by /healthz.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Origin, proxyRequest, send, startOrigin, syntheticBytes, syntheticPe, waitFor } from '../support/gateHarness.js';
import { adminGet, startRunProcess, type RunningGate } from '../support/runProcess.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';
import { httpRequestHead, httpResponseHead, respmodOnce, startIcap } from '../support/icapHarness.js';

const MiB = 1024 * 1024;
let dir: string;
let mnt: string;
let mounted = false;
let origin: Origin;
let gate: RunningGate | undefined;

function tryMount(at: string): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', at], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-spoolfull-'));
  mnt = join(dir, 'spool');
  mkdirSync(mnt);
  mounted = tryMount(mnt);
  origin = await startOrigin();
  // 3 MiB, signed and allowed: more than the 1 MiB the spool's disk has.
  origin.route('/big.exe', send(syntheticBytes(syntheticPe(3 * MiB, 5)), { chunk: 64 * 1024 }));
});

afterAll(async () => {
  if (gate && gate.child.exitCode === null) await gate.stop();
  await origin?.close();
  if (mounted) { try { execFileSync('umount', ['-l', mnt], { stdio: 'ignore' }); } catch { /* already */ } }
  rmSync(dir, { recursive: true, force: true });
});

const records = (f: string): AuditRecord[] => readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditRecord);

describe('patchgate run: spool write errors fail closed at once', () => {
  it.skipIf(process.getuid?.() !== 0)('ENOSPC (full), then EROFS (read-only): blocked INTERNAL_ERROR "spool: <errno>" in well under the idle timeout; stderr, metric, /healthz', async () => {
    expect(mounted, 'mount -t tmpfs (as root)').toBe(true);
    const rules = join(dir, 'rules.yaml');
    // Small in-memory holds (so the payload goes to the spool's disk), the default 30 s idle timeout,
    // and a spool budget larger than the tmpfs (the disk fills before the budget refuses).
    writeFileSync(rules, 'version: 1\nanchors: []\nlimits:\n  memoryHoldBytes: 65536\n  upstreamIdleTimeoutMs: 30000\n  maxSpoolBytes: 67108864\n  maxSpoolBytesPerClient: 67108864\n');
    const audit = join(dir, 'audit.jsonl');
    gate = await startRunProcess({ audit, dir, spoolDir: mnt, extra: ['--rules', rules] });

    // Full: the 3 MiB payload cannot fit the 1 MiB spool.
    let t0 = Date.now();
    const full = await proxyRequest(gate.port, origin.url('/big.exe'), { timeoutMs: 40_000 });
    const fullMs = Date.now() - t0;
    expect(full.status).toBe(403);
    expect(full.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
    expect(fullMs, 'the hold ended at the error, not at the 30 s idle timeout').toBeLessThan(5000);
    const rec = await waitFor(() => records(audit).find((r) => r.url.endsWith('/big.exe')), 3000);
    expect(rec!.reasons).toHaveLength(1);
    expect(rec!.reasons[0]!.code).toBe('INTERNAL_ERROR');
    expect(rec!.reasons[0]!.message).toMatch(/^spool: ENOSPC/);
    expect(gate.stderr()).toMatch(/spool write failed \(the hold is blocked INTERNAL_ERROR\): ENOSPC/);
    let metrics = await adminGet(gate.adminPort, '/metrics');
    expect(metrics).toMatch(/^patchgate_spool_errors_total\{code="ENOSPC"\} 1$/m);
    let health = JSON.parse(await adminGet(gate.adminPort, '/healthz'));
    expect(health).toMatchObject({ status: 'degraded', faults: { spool: { count: 1, last: { where: 'spool' } } } });
    expect(health.faults.spool.last.message).toMatch(/ENOSPC/);
    // The failed hold's file is gone: the spool's disk is free again.
    const used = Number(execFileSync('df', ['--output=used', '-B1', mnt], { encoding: 'utf8' }).trim().split('\n').pop());
    expect(used).toBeLessThan(64 * 1024);

    // Read-only: the next hold cannot even open its file.
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    t0 = Date.now();
    const ro = await proxyRequest(gate.port, origin.url('/big.exe?ro'), { timeoutMs: 40_000 });
    expect(ro.status).toBe(403);
    expect(ro.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
    expect(Date.now() - t0).toBeLessThan(5000);
    const roRec = (await waitFor(() => records(audit).find((r) => r.url.endsWith('/big.exe?ro')), 3000))!;
    expect(roRec.reasons[0]!.message).toMatch(/^spool: EROFS/);
    metrics = await adminGet(gate.adminPort, '/metrics');
    expect(metrics).toMatch(/^patchgate_spool_errors_total\{code="EROFS"\} 1$/m);
    health = JSON.parse(await adminGet(gate.adminPort, '/healthz'));
    expect(health.faults.spool.count).toBe(2);
    expect(gate.child.exitCode).toBeNull();
    execFileSync('mount', ['-o', 'remount,rw', mnt]);
  });

  it.skipIf(process.getuid?.() !== 0)('patchgate icap, spool full: the RESPMOD is answered with the block at once, INTERNAL_ERROR "spool: ENOSPC", counted', async () => {
    expect(mounted, 'mount -t tmpfs (as root)').toBe(true);
    const metrics = new GateMetrics({ log: () => {} });
    const icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], spoolBase: mnt, limits: { memoryHoldBytes: 65536, idleTimeoutMs: 30_000, maxSpoolBytes: 64 << 20, maxSpoolBytesPerClient: 64 << 20 }, observer: metrics });
    try {
      const body = syntheticBytes(syntheticPe(3 * MiB, 6));
      const t0 = Date.now();
      const a = await respmodOnce(icap.port, { reqHead: httpRequestHead('http://127.0.0.1:8/icap-big.exe'), resHead: httpResponseHead(200, { 'Content-Length': body.length }), body, allow204: true }, 40_000).catch((e: Error) => ({ status: 0, http: undefined, error: e.message }));
      const ms = Date.now() - t0;
      expect(a.http?.status, JSON.stringify(a).slice(0, 300)).toBe(403);
      expect(a.http?.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
      expect(ms).toBeLessThan(5000);
      const [rec] = await icap.waitRecords((r) => r.url === 'http://127.0.0.1:8/icap-big.exe');
      expect(rec!.reasons[0]!.message).toMatch(/^spool: ENOSPC/);
      expect(await metrics.text()).toMatch(/^patchgate_spool_errors_total\{code="ENOSPC"\} 1$/m);
    } finally {
      await icap.dispose();
    }
  });
});
