/**
 * Audit write failures (issue 13 item 11). The audit file is swapped for /dev/full (every write
 * fails with ENOSPC, as on a full disk) by the logrotate path, a SIGHUP-style reopen: with
 * `audit.onError: block` (the default) an allowed payload is refused INTERNAL_ERROR while its
 * record cannot be written, and /healthz says `audit-failing` (503) until writes succeed again;
 * with `serve` it is served. An allowed payload's record is in the file before its first byte
 * reaches the client. Real sockets on 127.0.0.1, a real admin server.
 */
import { existsSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin, syntheticPe } from '../support/gateHarness.js';
import { startAdminServer } from '../../src/metrics/adminServer.js';
import { gateHealth } from '../../src/cli/gateService.js';
import { fixture, sha256 } from './hostileSupport.js';
import { httpRequestHead, httpResponseHead, respmodOnce, startIcap } from '../support/icapHarness.js';

let restore: () => void;
let origin: Origin;
const good = fixture('good.exe');
const flame = fixture('flame.exe');

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  origin.route('/flame.exe', send(flame));
});
afterAll(async () => { await origin?.close(); restore?.(); });

/** Points the gate's audit path at /dev/full (or back at the real file) and reopens it, as SIGHUP does. */
function auditTo(g: Pick<GateHandle, 'auditFile' | 'audit'>, full: boolean): void {
  const real = `${g.auditFile}.real`;
  if (full) {
    renameSync(g.auditFile, real);
    symlinkSync('/dev/full', g.auditFile);
  } else {
    rmSync(g.auditFile);
    renameSync(real, g.auditFile);
  }
  expect(g.audit.reopen()).toBe(true);
}

const health = (port: number): Promise<{ status: number; body: { status: string; audit: { writable: boolean; writeFailures: number; lastError?: string } } }> =>
  new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(b) }));
    }).on('error', reject);
  });

describe('item 11: audit.onError', () => {
  it('block (default): a payload whose record cannot be written is refused INTERNAL_ERROR; /healthz reports it; writing again heals', async () => {
    const g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { cacheTtlMs: 0 } });
    const admin = await startAdminServer({ host: '127.0.0.1', port: 0, health: () => gateHealth(g.audit, g.gate, 'test') });
    try {
      for (const p of ['/a.exe', '/b.exe', '/c.exe']) origin.route(p, send(good));
      expect((await proxyRequest(g.port, origin.url('/a.exe'))).status).toBe(200);
      expect(await health(admin.port)).toMatchObject({ status: 200, body: { status: 'ok', audit: { writable: true, writeFailures: 0 } } });

      auditTo(g, true);
      const r = await proxyRequest(g.port, origin.url('/b.exe'));
      expect(r.status).toBe(403);
      expect(r.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
      expect(r.body.toString()).toMatch(/audit: the record of this transfer cannot be written/);
      expect(r.body.includes(good.subarray(0, 1024))).toBe(false);
      // A forged payload is blocked as ever (a block never needs the record to go out first).
      expect((await proxyRequest(g.port, origin.url('/flame.exe'))).status).toBe(403);
      const h = await health(admin.port);
      expect(h.status).toBe(503);
      expect(h.body.status).toBe('audit-failing');
      expect(h.body.audit.writable).toBe(false);
      expect(h.body.audit.writeFailures).toBeGreaterThanOrEqual(2);
      expect(h.body.audit.lastError).toMatch(/ENOSPC/);

      auditTo(g, false);
      const ok = await proxyRequest(g.port, origin.url('/c.exe'));
      expect(ok.status).toBe(200);
      expect(sha256(ok.body)).toBe(sha256(good));
      expect((await health(admin.port)).body.status).toBe('ok');
      // The records made while failing are not in the file; the ones before and after are.
      const urls = g.records().map((x) => x.url);
      expect(urls).toContain(origin.url('/a.exe'));
      expect(urls).toContain(origin.url('/c.exe'));
      expect(urls).not.toContain(origin.url('/b.exe'));
    } finally {
      admin.close();
      if (existsSync(`${g.auditFile}.real`)) auditTo(g, false);
      await g.dispose();
    }
  });

  it('serve: the payload is served while the audit fails (the operator chose availability)', async () => {
    const g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], auditOnError: 'serve' });
    try {
      origin.route('/s.exe', send(good));
      auditTo(g, true);
      const r = await proxyRequest(g.port, origin.url('/s.exe'));
      expect(r.status).toBe(200);
      expect(sha256(r.body)).toBe(sha256(good));
      expect(g.audit.state.writable).toBe(false);
    } finally {
      if (existsSync(`${g.auditFile}.real`)) auditTo(g, false);
      await g.dispose();
    }
  });

  it("an allowed payload's record is in the file before its first byte reaches the client", async () => {
    const g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    try {
      const pe = syntheticPe(8 * 1024 * 1024, 21);
      origin.route('/big.exe', send(() => pe.chunks(), { contentLength: pe.totalSize }));
      let seenAtFirstByte: boolean | undefined;
      const r = await proxyRequest(g.port, origin.url('/big.exe'), {
        timeoutMs: 30_000,
        onRequest: (q) => q.on('response', (res) => {
          const id = String(res.headers['x-patchgate-audit-id']);
          res.once('data', () => { seenAtFirstByte ??= readFileSync(g.auditFile, 'utf8').includes(`"id":"${id}"`); });
        }),
      });
      expect(r.status).toBe(200);
      expect(seenAtFirstByte).toBe(true);
    } finally {
      await g.dispose();
    }
  });

  it('patchgate icap too: an allowed payload whose record cannot be written gets the block page, not a 204', async () => {
    const svc = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    try {
      const ok = httpResponseHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': good.length });
      const a = await respmodOnce(svc.port, { reqHead: httpRequestHead('http://127.0.0.1:8/a.exe'), resHead: ok, body: good, preview: 4096, allow204: true });
      expect(a.status).toBe(204);
      auditTo(svc, true);
      const b = await respmodOnce(svc.port, { reqHead: httpRequestHead('http://127.0.0.1:8/b.exe'), resHead: ok, body: good, preview: 4096, allow204: true });
      expect(b.status).toBe(200);
      expect(b.http?.status).toBe(403);
      expect(b.http?.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
      expect(b.body!.toString()).toMatch(/audit: the record of this transfer cannot be written/);
      auditTo(svc, false);
    } finally {
      if (existsSync(`${svc.auditFile}.real`)) auditTo(svc, false);
      await svc.dispose();
    }
  });
});
