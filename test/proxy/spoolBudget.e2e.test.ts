/**
 * The spool's disk budget (issue 13 item 12): `limits.maxSpoolBytes` for all spools together and
 * each client's share of it; verified copies kept for later requests go first (least recently used,
 * the requester's own when its share is what is short), then new holds are refused OVERSIZE with a
 * clear message; distinct query strings of one entity are kept once where the origin's ETag says it
 * is the same, else each copy counts against the client that asked. Real sockets on 127.0.0.1 (and
 * 127.0.0.2 as a second client).
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GateHandle, type Origin, type ProxyResponse, proxyRequest, quietConsole, send, sleep, startGate, startOrigin, syntheticBytes, syntheticPe } from '../support/gateHarness.js';
import { sha256 } from '../hostile/hostileSupport.js';
import { httpRequestHead, httpResponseHead, respmodOnce, startIcap } from '../support/icapHarness.js';

const MiB = 1024 * 1024;
let restore: () => void;
let origin: Origin;
const pe1 = syntheticBytes(syntheticPe(1 * MiB, 31));
const pe3 = syntheticBytes(syntheticPe(3 * MiB, 32));

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  origin.route('/one.exe', send(pe1));
  origin.route('/three.exe', send(pe3));
  origin.route('/etag.exe', send(pe1, { headers: { etag: '"v1"' } }));
  origin.route('/noetag.exe', send(pe1));
});
afterAll(async () => { await origin?.close(); restore?.(); });

const budgetGate = () => startGate({
  hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }],
  limits: { memoryHoldBytes: 64 * 1024, memoryTotalBytes: 256 * 1024, cacheTtlMs: 60_000, maxSpoolBytes: 3 * MiB + 512 * 1024, maxSpoolBytesPerClient: 2 * MiB + 256 * 1024 },
});

/** A proxy request from another loopback address (a second client). */
function fromAddress(localAddress: string, port: number, url: string): Promise<ProxyResponse> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = http.request({ host: '127.0.0.1', port, localAddress, path: u.href, headers: { host: u.host }, agent: false }, (res) => {
      const body: Buffer[] = [];
      res.on('data', (d: Buffer) => body.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusMessage: '', headers: res.headers, body: Buffer.concat(body), raw: Buffer.alloc(0), complete: true, doneAt: Date.now() }));
    });
    req.on('error', (e) => resolve({ status: 0, statusMessage: '', headers: {}, body: Buffer.alloc(0), raw: Buffer.alloc(0), complete: false, error: e, doneAt: Date.now() }));
    req.end();
  });
}

describe('item 12: limits.maxSpoolBytes', () => {
  it("a client's own least recently used copies go first; a hold larger than its share is refused OVERSIZE", async () => {
    const g = await budgetGate();
    try {
      const before = origin.hits('/one.exe');
      for (const q of ['a', 'b']) expect((await proxyRequest(g.port, origin.url(`/one.exe?${q}`))).status).toBe(200);
      expect(g.gate.spoolDisk.used).toBeGreaterThanOrEqual(2 * MiB);
      // A third copy does not fit the client's share: its oldest copy (?a) goes.
      const c = await proxyRequest(g.port, origin.url('/one.exe?c'));
      expect(c.status).toBe(200);
      expect(sha256(c.body)).toBe(sha256(pe1));
      expect(g.gate.spoolDisk.used).toBeLessThanOrEqual(g.gate.spoolDisk.perClient);
      expect((await proxyRequest(g.port, origin.url('/one.exe?b'))).status).toBe(200); // still kept
      expect(origin.hits('/one.exe') - before).toBe(3);
      expect((await proxyRequest(g.port, origin.url('/one.exe?a'))).status).toBe(200); // evicted: fetched again
      expect(origin.hits('/one.exe') - before).toBe(4);
      // Bigger than the whole share: refused, with the reason, after every own copy was dropped.
      const big = await proxyRequest(g.port, origin.url('/three.exe'));
      expect(big.status).toBe(403);
      expect(big.headers['x-patchgate-reason']).toBe('OVERSIZE');
      expect(big.body.toString()).toMatch(/spool: the spool's share of client 127\.0\.0\.1 .* is full/);
    } finally {
      await g.dispose();
    }
  });

  it('when holds in flight fill the spool, a new hold is refused OVERSIZE (spool is full), and served again once room is back', async () => {
    const g = await budgetGate();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    // Client A: a 2 MiB hold stalled before its end (its bytes are on disk, nothing is evictable).
    const pe2 = syntheticBytes(syntheticPe(2 * MiB, 33));
    origin.route('/stalled.exe', (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': pe2.length });
      res.write(pe2.subarray(0, pe2.length - 1024));
      void released.then(() => res.end(pe2.subarray(pe2.length - 1024)));
    });
    try {
      const a = proxyRequest(g.port, origin.url('/stalled.exe'), { timeoutMs: 20_000 });
      for (let i = 0; i < 100 && g.gate.spoolDisk.used < 2 * MiB - 64 * 1024; i++) await sleep(20);
      // Client B (another address, its own share): 1.5 MiB more does not fit the whole spool.
      const pe15 = syntheticBytes(syntheticPe(1.5 * MiB, 34));
      origin.route('/b.exe', send(pe15));
      const b = await fromAddress('127.0.0.2', g.port, origin.url('/b.exe'));
      expect(b.status).toBe(403);
      expect(b.headers['x-patchgate-reason']).toBe('OVERSIZE');
      expect(b.body.toString()).toMatch(/spool: the spool is full \(limits\.maxSpoolBytes \d+ bytes in use by downloads in flight\)/);
      release();
      expect((await a).status).toBe(200);
      // A's copy is kept but evictable: B's download now fits (A's copy goes).
      const b2 = await fromAddress('127.0.0.2', g.port, origin.url('/b.exe?again'));
      expect(b2.status).toBe(200);
      expect(sha256(b2.body)).toBe(sha256(pe15));
    } finally {
      release();
      await g.dispose();
    }
  });

  it('the same entity under other query strings is kept once where the ETag says so; without an ETag each copy counts', async () => {
    const g = await budgetGate();
    try {
      const r1 = await proxyRequest(g.port, origin.url('/etag.exe?token=1'));
      const r2 = await proxyRequest(g.port, origin.url('/etag.exe?token=2'));
      expect([r1.status, r2.status]).toEqual([200, 200]);
      expect(sha256(r2.body)).toBe(sha256(pe1));
      const used = g.gate.spoolDisk.used;
      expect(used).toBeLessThan(1.5 * MiB); // one copy
      const rec = (await g.waitRecords((x) => x.url.endsWith('/etag.exe?token=2')))[0];
      expect(rec).toMatchObject({ verdict: 'allow', shared: true });
      await proxyRequest(g.port, origin.url('/noetag.exe?token=1'));
      await proxyRequest(g.port, origin.url('/noetag.exe?token=2'));
      // Two copies, both counted against the requester (its share then dropped the ETag copy, its oldest).
      expect(g.gate.spoolDisk.used).toBeGreaterThanOrEqual(2 * MiB);
    } finally {
      await g.dispose();
    }
  });

  it('patchgate icap keeps to the same budget: a hold past it is refused OVERSIZE', async () => {
    const svc = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 64 * 1024, maxSpoolBytes: 4 * MiB, maxSpoolBytesPerClient: 512 * 1024 } });
    try {
      const head = httpResponseHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': pe1.length });
      const a = await respmodOnce(svc.port, { reqHead: httpRequestHead('http://127.0.0.1:8/one.exe'), resHead: head, body: pe1, preview: 4096 });
      expect(a.http?.status).toBe(403);
      expect(a.http?.headers['x-patchgate-reason']).toBe('OVERSIZE');
      expect(a.body!.toString()).toMatch(/spool: the spool's share of client 127\.0\.0\.1/);
    } finally {
      await svc.dispose();
    }
  });
});
