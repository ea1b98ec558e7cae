/**
 * Hostile upstreams against the gate (in process, 127.0.0.1 only): a slowloris body and slowloris
 * headers, Content-Length that lies in both directions (and trailing bytes that try to poison the
 * pooled connection), chunk sizes of 2^64, header floods, gzip/br bombs (nested too), a TLS peer
 * that answers with garbage, a TLS peer that speaks garbage after the handshake, a reset in
 * mid-body, and redirect loops.
 *
 * Each test expects the clean block (403 with the right reason, no payload byte to the client),
 * runs a legitimate download beside the attack (it must be allowed, byte-identical), and ends
 * with the leak check: no hold in flight, no spool file, the process's open fds back to where
 * they were.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import net, { type AddressInfo, type Socket } from 'node:net';
import { brotliCompressSync, gzipSync, constants as zc } from 'node:zlib';
import {
  type GateHandle, type Origin, type OriginCert,
  httpsThroughProxy, makeOriginCert, proxyRequest, quietConsole, send, sleep, startGate, startOrigin, syntheticBytes, syntheticPe,
} from '../support/gateHarness.js';
import { expectNoLeak, fdCount, fixture, legitimateFetch, sha256, startRawOrigin, trickle, type RawOrigin } from './hostileSupport.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const reasons = (h: unknown) => String(h ?? '').split(',').map((s) => s.trim()).filter(Boolean).sort();

let restore: () => void;
let g: GateHandle;
let origin: Origin;
let raw: RawOrigin;
let cert: OriginCert;
let baseline = 0;
const perTest: net.Server[] = [];
const good = fixture('good.exe');
const flame = fixture('flame.exe');
const head = good.subarray(0, 64);
// good.exe and flame.exe share their PE headers: mark flame.exe by bytes of its own signature.
const flameMark = flame.subarray(4700, 4800); // inside its certificate bag (the forged "MS" leaf)

beforeAll(async () => {
  restore = quietConsole();
  cert = makeOriginCert();
  origin = await startOrigin();
  raw = await startRawOrigin();
  g = await startGate({
    hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }],
    limits: { idleTimeoutMs: 700, totalTimeoutMs: 2500, memoryHoldBytes: 64 * KiB, maxPayloadBytes: 8 * MiB, cacheTtlMs: 300 },
    upstreamCaPem: cert.certPem,
  });
  // Warm up (first TLS leaf, agents, lazy modules), then take the fd baseline.
  await legitimateFetch(g, origin, 'warmup');
  await sleep(700);
  await expectNoLeak(g, fdCount() + 100);
  baseline = fdCount();
});

afterEach(async () => {
  // This test's own listeners are not the gate's: close them before counting. A leak fails the
  // test that caused it; the next test starts from what is open now.
  try {
    await expectNoLeak(g, baseline, () => Promise.all(perTest.splice(0).map((srv) => new Promise<void>((r) => { srv.close(() => r()); setTimeout(r, 300).unref(); }))).then(() => {}));
  } finally {
    baseline = Math.max(baseline, fdCount());
  }
});

afterAll(async () => {
  await g?.dispose();
  await origin?.close();
  await raw?.close();
  restore?.();
});

/** Runs the attack beside a legitimate download; both must finish. */
async function withLegit<T>(tag: string, attack: () => Promise<T>): Promise<T> {
  const [r] = await Promise.all([attack(), legitimateFetch(g, origin, tag)]);
  return r;
}
const noPayloadBytes = (body: Buffer) => {
  expect(body.includes(head)).toBe(false);
  expect(body.includes(flameMark)).toBe(false);
};

describe('slow upstreams', () => {
  it('slowloris body (16 bytes every 150 ms, never idle long enough): TIMEOUT at the total limit, upstream cut', async () => {
    let cut: Socket | undefined;
    raw.route('/slow-body.exe', async (s) => {
      cut = s;
      s.write(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${good.length}\r\n\r\n`);
      await trickle(s, good, 16, 150);
    });
    const t0 = Date.now();
    const r = await withLegit('slow-body', () => proxyRequest(g.port, raw.url('/slow-body.exe')));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['TIMEOUT']);
    expect(Date.now() - t0).toBeLessThan(5000);
    noPayloadBytes(r.body);
    await sleep(100);
    expect(cut?.destroyed, 'the gate hangs up on the slow upstream').toBe(true);
  });

  it('slowloris headers (one header byte every 100 ms): TIMEOUT, upstream cut', async () => {
    let cut: Socket | undefined;
    raw.route('/slow-head.exe', async (s) => {
      cut = s;
      await trickle(s, Buffer.from(`HTTP/1.1 200 OK\r\nx-pad: ${'a'.repeat(200)}\r\ncontent-length: 10\r\n\r\n`), 1, 100);
    });
    const r = await withLegit('slow-head', () => proxyRequest(g.port, raw.url('/slow-head.exe')));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['TIMEOUT']);
    await sleep(100);
    expect(cut?.destroyed).toBe(true);
  });
});

describe('Content-Length that lies', () => {
  it('longer than the body, then close: UPSTREAM_ERROR; then hang: TIMEOUT', async () => {
    raw.route('/cl-long-close.exe', (s) => { s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${good.length + 5000}\r\n\r\n`), good])); });
    raw.route('/cl-long-hang.exe', (s) => { s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${good.length + 5000}\r\n\r\n`), good])); });
    const [a, b] = await withLegit('cl-long', () => Promise.all([proxyRequest(g.port, raw.url('/cl-long-close.exe')), proxyRequest(g.port, raw.url('/cl-long-hang.exe'))]));
    expect([a.status, reasons(a.headers['x-patchgate-reason'])]).toEqual([403, ['UPSTREAM_ERROR']]);
    expect([b.status, reasons(b.headers['x-patchgate-reason'])]).toEqual([403, ['TIMEOUT']]);
    noPayloadBytes(a.body);
    noPayloadBytes(b.body);
  });

  it('shorter than the body: only the declared bytes are judged (truncated: blocked), and the surplus never answers a later request', async () => {
    // The surplus is a whole forged response: if the pooled connection were reused, the next
    // request on it would read flame.exe as its answer.
    const surplus = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${flame.length}\r\n\r\n`), flame]);
    raw.route('/cl-short.exe', (s) => { s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${good.length - 1000}\r\n\r\n`), good, surplus])); });
    raw.route('/after-short.exe', (s) => { s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: ${good.length}\r\n\r\n`), good])); });
    const r = await withLegit('cl-short', () => proxyRequest(g.port, raw.url('/cl-short.exe')));
    expect(r.status).toBe(403);
    // Truncated PE (MALFORMED) or the surplus seen as a protocol error (UPSTREAM_ERROR): both block.
    expect(reasons(r.headers['x-patchgate-reason']).some((c) => ['MALFORMED', 'UPSTREAM_ERROR'].includes(c))).toBe(true);
    noPayloadBytes(r.body);
    for (let i = 0; i < 3; i++) {
      const next = await proxyRequest(g.port, raw.url('/after-short.exe'));
      expect(next.status, next.body.toString().slice(0, 200)).toBe(200);
      expect(sha256(next.body)).toBe(sha256(good));
    }
  });

  it('shorter than the body, the declared bytes being a whole good file: that file (allowed) or a block, never a byte more', async () => {
    raw.route('/cl-exact-plus.exe', (s) => { s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${good.length}\r\n\r\n`), good, flame])); });
    const r = await withLegit('cl-exact-plus', () => proxyRequest(g.port, raw.url('/cl-exact-plus.exe')));
    expect([200, 403]).toContain(r.status);
    if (r.status === 200) expect(sha256(r.body)).toBe(sha256(good));
    else noPayloadBytes(r.body);
    expect(r.raw.includes(flameMark)).toBe(false);
  });
});

describe('chunked encoding and headers', () => {
  for (const size of ['FFFFFFFFFFFFFFFF', '10000000000000000', 'ffffffffffffffffffffffffffffffff', '-1', '0x10', '7fffffff;ext=1']) {
    it(`a chunk size of ${size}: UPSTREAM_ERROR, quickly`, async () => {
      const path = `/chunk-${size.replace(/[^0-9a-z]/gi, '_')}.exe`;
      raw.route(path, (s) => { s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n40\r\n`), head, Buffer.from(`\r\n${size}\r\n`), good])); });
      const t0 = Date.now();
      const r = await withLegit(`chunk-${size}`, () => proxyRequest(g.port, raw.url(path)));
      expect(r.status).toBe(403);
      expect(reasons(r.headers['x-patchgate-reason']).some((c) => ['UPSTREAM_ERROR', 'TIMEOUT', 'OVERSIZE', 'MALFORMED'].includes(c))).toBe(true);
      expect(Date.now() - t0).toBeLessThan(3000);
      noPayloadBytes(r.body);
    });
  }

  it('header floods (10,000 headers; one 1 MiB header): UPSTREAM_ERROR, memory flat', async () => {
    raw.route('/flood-many.exe', (s) => {
      s.write('HTTP/1.1 200 OK\r\n');
      for (let i = 0; i < 10_000 && !s.destroyed; i++) s.write(`x-flood-${i}: ${'v'.repeat(20)}\r\n`);
      if (!s.destroyed) s.write(`content-length: ${good.length}\r\n\r\n`);
      if (!s.destroyed) s.end(good);
    });
    raw.route('/flood-one.exe', (s) => {
      s.write(`HTTP/1.1 200 OK\r\nx-huge: ${'h'.repeat(MiB)}\r\ncontent-length: ${good.length}\r\n\r\n`);
      if (!s.destroyed) s.end(good);
    });
    const rss0 = process.memoryUsage().rss;
    const [a, b] = await withLegit('flood', () => Promise.all([proxyRequest(g.port, raw.url('/flood-many.exe')), proxyRequest(g.port, raw.url('/flood-one.exe'))]));
    for (const r of [a, b]) {
      expect(r.status).toBe(403);
      expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
      noPayloadBytes(r.body);
    }
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * MiB);
  });
});

describe('decompression bombs', () => {
  it('gzip (256 MiB of zeros after PE headers), gzip inside gzip, and br: OVERSIZE at the 8 MiB limit, memory bounded', async () => {
    const bomb = Buffer.concat([head, Buffer.alloc(256 * MiB)]);
    const gz = gzipSync(bomb, { level: 9 });
    const gzgz = gzipSync(gz, { level: 9 });
    const br = brotliCompressSync(bomb, { params: { [zc.BROTLI_PARAM_QUALITY]: 5 } });
    origin.route('/bomb-gz.exe', send(gz, { headers: { 'content-encoding': 'gzip' } }));
    origin.route('/bomb-gzgz.exe', send(gzgz, { headers: { 'content-encoding': 'gzip, gzip' } }));
    origin.route('/bomb-br.exe', send(br, { headers: { 'content-encoding': 'br' } }));
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    const rs = await withLegit('bombs', () => Promise.all(['/bomb-gz.exe', '/bomb-gzgz.exe', '/bomb-br.exe'].map((p) => proxyRequest(g.port, origin.url(p)))));
    clearInterval(timer);
    for (const r of rs) {
      expect(r.status).toBe(403);
      expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['OVERSIZE']);
      noPayloadBytes(r.body);
    }
    expect(peak - rss0, 'RSS growth while decoding three bombs').toBeLessThan(150 * MiB);
  });
});

describe('TLS peers that misbehave', () => {
  async function garbageServer(onConn: (s: Socket) => void): Promise<number> {
    const srv = net.createServer((s) => { s.on('error', () => {}); onConn(s); });
    perTest.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return (srv.address() as AddressInfo).port;
  }

  it('an upstream that answers the TLS ClientHello with garbage: UPSTREAM_ERROR to the intercepted client', async () => {
    const port = await garbageServer((s) => s.once('data', () => s.end(Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\x16\x03\x01\xff\xff garbage'))));
    const r = await withLegit('tls-garbage', () => httpsThroughProxy(g.port, `https://127.0.0.1:${port}/x.exe`, { ca: g.caPem }));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
  });

  it('an upstream that completes the handshake and then sends garbage instead of HTTP: UPSTREAM_ERROR', async () => {
    const srv = tls.createServer({ key: cert.keyPem, cert: cert.certPem }, (s) => {
      s.on('error', () => {});
      s.once('data', () => s.end(Buffer.concat([Buffer.from('\x00\xffNOT HTTP AT ALL\r\n\r\n'), good])));
    });
    perTest.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const r = await withLegit('tls-then-garbage', () => httpsThroughProxy(g.port, `https://127.0.0.1:${port}/x.exe`, { ca: g.caPem }));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
    noPayloadBytes(r.body);
  });

  it('a client that sends garbage instead of a ClientHello after CONNECT is cut; the gate keeps serving', async () => {
    const port = await garbageServer((s) => s.destroy());
    await withLegit('client-tls-garbage', async () => {
      const s = net.connect({ host: '127.0.0.1', port: g.port });
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`);
      await new Promise<void>((r) => s.once('data', () => r()));
      s.write(Buffer.alloc(4096, 0x41));
      await new Promise<void>((r) => { s.on('close', () => r()); s.on('error', () => r()); setTimeout(() => { s.destroy(); r(); }, 2000); });
    });
  });
});

describe('resets and redirects', () => {
  it('a reset in mid-body (after 300 KiB of 512 KiB, spooled to disk): UPSTREAM_ERROR, spool removed', async () => {
    const big = syntheticBytes(syntheticPe(512 * KiB, 7));
    raw.route('/reset.exe', async (s) => {
      s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${big.length}\r\n\r\n`);
      await trickle(s, big.subarray(0, 300 * KiB), 32 * KiB, 10);
      await sleep(100);
      s.resetAndDestroy();
    });
    const r = await withLegit('reset', () => proxyRequest(g.port, raw.url('/reset.exe')));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
    expect(r.body.includes(big.subarray(0, 64))).toBe(false);
  });

  it('a redirect loop between two inspected URLs: each hop relayed once (the gate never follows), the client stops, nothing leaks', async () => {
    origin.route('/loop/a.exe', (_q, s) => { s.writeHead(302, { location: '/loop/b.exe', 'content-length': 0 }); s.end(); });
    origin.route('/loop/b.exe', (_q, s) => { s.writeHead(302, { location: origin.url('/loop/a.exe'), 'content-length': 0 }); s.end(); });
    origin.route('/loop/self.exe', (_q, s) => { s.writeHead(301, { location: '/loop/self.exe', 'content-length': 0 }); s.end(); });
    const before = origin.hits('/loop/a.exe') + origin.hits('/loop/b.exe');
    await withLegit('redirect-loop', async () => {
      let url = origin.url('/loop/a.exe');
      for (let hop = 0; hop < 24; hop++) {
        const r = await proxyRequest(g.port, url);
        expect(r.status).toBe(302);
        url = new URL(String(r.headers.location), url).href;
      }
      const self = await proxyRequest(g.port, origin.url('/loop/self.exe'));
      expect(self.status).toBe(301);
    });
    expect(origin.hits('/loop/a.exe') + origin.hits('/loop/b.exe') - before).toBe(24);
  });

  it('a redirect loop that leaves the inspected hosts is blocked at the first hop', async () => {
    origin.route('/loop/out.exe', (_q, s) => { s.writeHead(302, { location: `http://localhost:${origin.port}/loop/out.exe`, 'content-length': 0 }); s.end(); });
    const r = await withLegit('redirect-out', () => proxyRequest(g.port, origin.url('/loop/out.exe')));
    expect(r.status).toBe(403);
    expect(reasons(r.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
  });
});
