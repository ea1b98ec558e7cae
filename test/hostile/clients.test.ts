/**
 * Hostile clients against the gate (in process, 127.0.0.1 only): request smuggling (CL.TE,
 * TE.CL, duplicate and obfuscated framing headers), pipelined requests whose second is an update
 * URL, absurd Range headers, the update host reached by other spellings of its IP literal (CONNECT
 * and absolute-form), Host headers that disagree with the target.
 *
 * The invariant behind every assertion: a byte of flame.exe (a payload the gate blocks) never
 * reaches a client, whatever the framing; a smuggled request never reaches the origin as a request
 * of its own; the gate answers with a clean refusal or the verified answer, keeps serving a
 * legitimate client in parallel, and leaks no spool file and no file descriptor.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import {
  type GateHandle, type Origin, type OriginCert,
  connectThrough, httpsThroughProxy, makeOriginCert, proxyRequest, quietConsole, send, sleep, startGate, startOrigin,
} from '../support/gateHarness.js';
import { connectRaw, expectNoLeak, fdCount, fixture, legitimateFetch, parseResponses, rawClient, sha256 } from './hostileSupport.js';

const reasons = (h: unknown) => String(h ?? '').split(',').map((s) => s.trim()).filter(Boolean).sort();

let restore: () => void;
let g: GateHandle;
let origin: Origin;
let sorigin: Origin;
let cert: OriginCert;
let baseline = 0;
const good = fixture('good.exe');
const flame = fixture('flame.exe');
// good.exe and flame.exe share their PE headers: mark flame.exe by bytes of its own signature.
const flameMark = flame.subarray(4700, 4800); // inside its certificate bag (the forged "MS" leaf)
let O = '';

beforeAll(async () => {
  if (good.includes(flameMark)) throw new Error('flameMark is not unique to flame.exe');
  restore = quietConsole();
  cert = makeOriginCert();
  origin = await startOrigin();
  sorigin = await startOrigin({ tls: cert });
  O = `127.0.0.1:${origin.port}`;
  for (const o of [origin, sorigin]) {
    o.route('/flame.exe', send(flame));
    o.route('/good.exe', send(good));
    o.route('/meta.xml', send(Buffer.from('<meta>not a payload</meta>'), { headers: { 'content-type': 'text/xml' } }));
    o.route('/smuggle', (req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-length': 2 }); res.end('ok'); }); });
  }
  g = await startGate({
    // localhost: the pass-through host (loopback is reachable only when a rule names it).
    hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }, { pattern: 'localhost', mode: 'pass' }],
    limits: { idleTimeoutMs: 1500, totalTimeoutMs: 5000, memoryHoldBytes: 64 * 1024, maxPayloadBytes: 8 * 1024 * 1024, cacheTtlMs: 300 },
    upstreamCaPem: cert.certPem,
  });
  await legitimateFetch(g, origin, 'warmup');
  await httpsThroughProxy(g.port, sorigin.url('/good.exe'), { ca: g.caPem });
  await sleep(700);
  await expectNoLeak(g, fdCount() + 100);
  baseline = fdCount();
});

afterEach(async () => {
  // A leak fails the test that caused it; the next test starts from what is open now.
  try {
    await expectNoLeak(g, baseline);
  } finally {
    baseline = Math.max(baseline, fdCount());
  }
});

afterAll(async () => {
  await g?.dispose();
  await origin?.close();
  await sorigin?.close();
  restore?.();
});

async function withLegit<T>(tag: string, attack: () => Promise<T>): Promise<T> {
  const [r] = await Promise.all([attack(), legitimateFetch(g, origin, tag)]);
  return r;
}

describe('request smuggling', () => {
  const smuggled = (path: string) => `GET http://${O}${path} HTTP/1.1\r\nHost: ${O}\r\n\r\n`;
  const attacks: [string, (p: string) => string][] = [
    ['CL.TE', (p) => { const body = `0\r\n\r\n${smuggled(p)}`; return `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`; }],
    ['TE.CL', (p) => { const inner = smuggled(p); const chunk = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`; return `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n${chunk}`; }],
    ['duplicate Content-Length', (p) => `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nContent-Length: 0\r\nContent-Length: ${smuggled(p).length}\r\n\r\n${smuggled(p)}`],
    ['Content-Length list', (p) => `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nContent-Length: 0, ${smuggled(p).length}\r\n\r\n${smuggled(p)}`],
    ['TE obfuscated (xchunked) + CL', (p) => { const body = `0\r\n\r\n${smuggled(p)}`; return `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: xchunked\r\n\r\n${body}`; }],
    ['TE with a space before the colon', (p) => { const body = `0\r\n\r\n${smuggled(p)}`; return `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nTransfer-Encoding : chunked\r\nContent-Length: ${body.length}\r\n\r\n${body}`; }],
    ['two TE headers (chunked, identity)', (p) => { const body = `0\r\n\r\n${smuggled(p)}`; return `POST http://${O}/smuggle HTTP/1.1\r\nHost: ${O}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: ${body.length}\r\n\r\n${body}`; }],
    ['bare LF line endings', (p) => `POST http://${O}/smuggle HTTP/1.1\nHost: ${O}\nContent-Length: 0\nTransfer-Encoding: chunked\n\n0\n\n${smuggled(p)}`],
  ];
  for (const [name, build] of attacks) {
    it(`${name}: a clean refusal (or one answer); the smuggled request never reaches the origin, no payload byte to the client`, async () => {
      const path = `/smuggled-${name.replace(/[^a-z]/gi, '')}.exe`;
      origin.route(path, send(flame));
      const r = await withLegit(`smuggle-${name}`, () => rawClient(g.port, build(path), 2500));
      const responses = parseResponses(r.data);
      expect(origin.hits(path), `the origin saw the smuggled ${path}`).toBe(0);
      expect(r.data.includes(flameMark)).toBe(false);
      // Whatever the gate answered: a 400 refusal, or the one POST's answer; never a second response.
      expect(responses.length).toBeLessThanOrEqual(1);
      if (responses[0]) expect([200, 400, 403, 411, 501]).toContain(responses[0].status);
    });
  }
});

describe('pipelining', () => {
  it('GET metadata (passed) then GET a forged payload, in one write: the second is blocked 403, in order, no payload byte', async () => {
    const req = (p: string) => `GET http://${O}${p} HTTP/1.1\r\nHost: ${O}\r\n\r\n`;
    const r = await withLegit('pipeline-1', () => rawClient(g.port, req('/meta.xml') + req('/flame.exe'), 3000));
    const rs = parseResponses(r.data);
    expect(rs.map((x) => x.status)).toEqual([200, 403]);
    expect(rs[0]!.body.toString()).toBe('<meta>not a payload</meta>');
    expect(rs[1]!.headers['x-patchgate-verdict']).toBe('block');
    expect(r.data.includes(flameMark)).toBe(false);
  });

  it('GET an allowed payload, a forged one, then a pass-through host, in one write: 200 (exact bytes), 403, 200 — in order', async () => {
    const req = (hostPort: string, p: string) => `GET http://${hostPort}${p} HTTP/1.1\r\nHost: ${hostPort}\r\n\r\n`;
    const r = await withLegit('pipeline-2', () => rawClient(g.port, req(O, '/good.exe') + req(O, '/flame.exe') + req(`localhost:${origin.port}`, '/meta.xml'), 4000));
    const rs = parseResponses(r.data);
    expect(rs.map((x) => x.status)).toEqual([200, 403, 200]);
    expect(sha256(rs[0]!.body)).toBe(sha256(good));
    expect(r.data.includes(flameMark)).toBe(false);
  });

  it('pipelined inside an intercepted HTTPS tunnel: the forged payload is blocked', async () => {
    const c = await connectThrough(g.port, `127.0.0.1:${sorigin.port}`);
    expect(c.status).toBe(200);
    const tls = await import('node:tls');
    const t = tls.connect({ socket: c.socket!, ca: g.caPem, host: '127.0.0.1' });
    await new Promise<void>((res, rej) => { t.once('secureConnect', () => res()); t.once('error', rej); });
    const hp = `127.0.0.1:${sorigin.port}`;
    const chunks: Buffer[] = [];
    t.on('data', (d: Buffer) => chunks.push(d));
    t.write(`GET /meta.xml HTTP/1.1\r\nHost: ${hp}\r\n\r\nGET /flame.exe HTTP/1.1\r\nHost: ${hp}\r\n\r\nGET /good.exe HTTP/1.1\r\nHost: ${hp}\r\n\r\n`);
    await withLegit('pipeline-tls', async () => {
      const deadline = Date.now() + 4000;
      while (parseResponses(Buffer.concat(chunks)).length < 3 && Date.now() < deadline) await sleep(25);
    });
    t.destroy();
    const rs = parseResponses(Buffer.concat(chunks));
    expect(rs.map((x) => x.status)).toEqual([200, 403, 200]);
    expect(Buffer.concat(chunks).includes(flameMark)).toBe(false);
    expect(sha256(rs[2]!.body)).toBe(sha256(good));
  });
});

describe('absurd Range headers', () => {
  const size = good.length;
  const many = (n: number) => `bytes=${Array.from({ length: n }, (_, i) => `${i * 2}-${i * 2}`).join(',')}`;
  const cases: [string, string][] = [
    ['overlapping', 'bytes=0-100,50-150'],
    ['1,000 ranges', many(1000)],
    ['10,000 ranges', many(10_000)],
    ['suffix of zero', 'bytes=-0'],
    ['double minus', 'bytes=--5'],
    ['negative start', 'bytes=-5-10'],
    ['reversed', 'bytes=5-1'],
    ['past the end', 'bytes=99999999-'],
    ['exactly the size', `bytes=${size}-`],
    ['2^64', 'bytes=18446744073709551616-18446744073709551617'],
    ['end beyond 2^53', 'bytes=0-99999999999999999999999'],
    ['last byte', 'bytes=-1'],
    ['first byte', 'bytes=0-0'],
    ['other unit', 'items=0-5'],
    ['garbage', 'bytes=a-b'],
  ];
  for (const [name, range] of cases) {
    it(`${name} (${range.length > 40 ? `${range.slice(0, 40)}…` : range}): 200 whole, 206 exact, 416 or a clean header refusal — never a wrong byte`, async () => {
      const path = `/range-${name.replace(/[^a-z0-9]/gi, '')}.exe`;
      origin.route(path, send(good));
      const r = await withLegit(`range-${name}`, () => proxyRequest(g.port, origin.url(path), { headers: { range } }));
      expect([200, 206, 416, 431]).toContain(r.status);
      if (r.status === 200) expect(sha256(r.body)).toBe(sha256(good));
      if (r.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(r.headers['content-range']));
        expect(m).not.toBeNull();
        const [a, b, total] = [Number(m![1]), Number(m![2]), Number(m![3])];
        expect(total).toBe(size);
        expect(b).toBeLessThan(size);
        expect(r.body.equals(good.subarray(a, b + 1))).toBe(true);
        expect(Number(r.headers['content-length'])).toBe(r.body.length);
      }
      if (r.status === 416) {
        expect(r.headers['content-range']).toBe(`bytes */${size}`);
        expect(r.body.length).toBe(0);
      }
    });
  }

  it('any Range on a blocked payload gets the 403 and no byte of it', async () => {
    for (const range of ['bytes=0-0', 'bytes=-64', 'bytes=0-100,50-150', many(1000)]) {
      const r = await proxyRequest(g.port, origin.url('/flame.exe'), { headers: { range } });
      expect(r.status).toBe(403);
      expect(r.raw.includes(flameMark)).toBe(false);
      expect(r.body.includes(flameMark)).toBe(false);
    }
    await legitimateFetch(g, origin, 'range-blocked');
  });
});

describe('the update host by other names for its IP literal', () => {
  it('CONNECT 127.0.0.1 (the inspected IP literal) is intercepted, not tunnelled: gate certificate, forged payload blocked', async () => {
    const r = await withLegit('connect-ip', () => httpsThroughProxy(g.port, sorigin.url('/flame.exe'), { ca: g.caPem }));
    expect(r.status).toBe(403);
    const peer = new X509Certificate(r.peerCertificate!.raw);
    expect(peer.fingerprint256).not.toBe(cert.fingerprint256);
    expect(r.raw.includes(flameMark)).toBe(false);
  });

  it('CONNECT and absolute-form to other spellings of 127.0.0.1 are refused or inspected — never passed blind', async () => {
    const spellings = ['[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[0:0:0:0:0:ffff:127.0.0.1]', '127.1', '2130706433', '0x7f.0.0.1', '0177.0.0.1', '127.0.0.1.', '127.000.000.001'];
    const leaks: string[] = [];
    await withLegit('ip-spellings', async () => {
      for (const h of spellings) {
        // Plain HTTP, absolute-form (the Host header agrees with the target).
        const r = await rawClient(g.port, `GET http://${h}:${origin.port}/flame.exe HTTP/1.1\r\nHost: ${h}:${origin.port}\r\nConnection: close\r\n\r\n`, 3000);
        if (r.data.includes(flameMark)) leaks.push(`GET http://${h}:${origin.port}/flame.exe -> ${r.data.subarray(0, 12).toString()} with flame.exe's bytes`);
        // CONNECT, then TLS and a request: the client must never see the origin's own certificate,
        // and the forged payload must be blocked.
        const c = await connectRaw(g.port, `${h}:${sorigin.port}`);
        if (c.status === 200 && c.socket) {
          const tls = await import('node:tls');
          const got = await new Promise<{ peer?: string; data: Buffer }>((res) => {
            const chunks: Buffer[] = [];
            let peer: string | undefined;
            const t = tls.connect({ socket: c.socket!, rejectUnauthorized: false });
            let finished = false;
            const done = () => { if (finished) return; finished = true; t.destroy(); res({ peer, data: Buffer.concat(chunks) }); };
            t.once('secureConnect', () => {
              peer = t.getPeerCertificate()?.fingerprint256;
              t.write(`GET /flame.exe HTTP/1.1\r\nHost: 127.0.0.1:${sorigin.port}\r\n\r\n`);
            });
            // Close as soon as one whole response is in (the way an HTTP client does), not on the server's FIN.
            t.on('data', (d: Buffer) => { chunks.push(d); const rs = parseResponses(Buffer.concat(chunks)); if (rs.length && Number(rs[0]!.headers['content-length'] ?? -1) === rs[0]!.body.length) done(); });
            t.once('end', done);
            t.once('error', done);
            setTimeout(done, 3000);
          });
          if (got.peer === cert.fingerprint256) leaks.push(`CONNECT ${h}:${sorigin.port} was tunnelled blind to the update host (the client saw the origin's certificate)`);
          if (got.data.includes(flameMark)) leaks.push(`CONNECT ${h}:${sorigin.port}: flame.exe's bytes reached the client`);
        }
      }
    });
    expect(leaks).toEqual([]);
  });
});

describe('CONNECT clients that walk away', () => {
  it('an intercepted CONNECT closed before any TLS byte leaves no socket open in the gate (20 times)', async () => {
    const before = fdCount();
    for (let i = 0; i < 20; i++) {
      const c = await connectRaw(g.port, `127.0.0.1:${sorigin.port}`);
      expect(c.status).toBe(200);
      c.socket!.destroy();
    }
    await legitimateFetch(g, origin, 'connect-drop');
    // afterEach checks the fd count against the baseline; say here what leaked, if anything.
    await sleep(1000);
    expect(fdCount() - before, 'fds still open in the gate after 20 dropped CONNECTs').toBeLessThanOrEqual(3);
  });

  it('a refused CONNECT (bad host) whose client never closes its side is still closed by the gate', async () => {
    const net = await import('node:net');
    const before = fdCount();
    const held: import('node:net').Socket[] = [];
    for (let i = 0; i < 10; i++) {
      const s = net.connect({ host: '127.0.0.1', port: g.port, allowHalfOpen: true });
      s.on('error', () => {});
      s.on('data', () => {});
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.write('CONNECT 127.1:443 HTTP/1.1\r\nHost: 127.1:443\r\n\r\n');
      held.push(s);
    }
    await sleep(1500);
    // Our 10 sockets are still open (we never end them); the gate's 10 must not be.
    const open = fdCount() - before;
    for (const s of held) s.destroy();
    expect(open, 'our 10 half-open sockets plus the gate\'s own').toBeLessThanOrEqual(10 + 3);
  });
});

describe('Host header and absolute-URI that disagree', () => {
  const build = (name: string): string => {
    const p = origin.port;
    switch (name) {
      case 'inspected target, passed Host': return `GET http://127.0.0.1:${p}/flame.exe HTTP/1.1\r\nHost: localhost:${p}\r\nConnection: close\r\n\r\n`;
      case 'passed target, inspected Host': return `GET http://localhost:${p}/flame.exe HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nConnection: close\r\n\r\n`;
      case 'two Host headers': return `GET http://localhost:${p}/flame.exe HTTP/1.1\r\nHost: localhost:${p}\r\nHost: 127.0.0.1:${p}\r\nConnection: close\r\n\r\n`;
      case 'userinfo in the target': return `GET http://127.0.0.1:${p}@localhost:${p}/flame.exe HTTP/1.1\r\nHost: localhost:${p}\r\nConnection: close\r\n\r\n`;
      case 'origin-form with the update host in Host': return `GET /flame.exe HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nConnection: close\r\n\r\n`;
      default: return `GET https://127.0.0.1:${sorigin.port}/flame.exe HTTP/1.1\r\nHost: 127.0.0.1:${sorigin.port}\r\nConnection: close\r\n\r\n`;
    }
  };
  for (const name of ['inspected target, passed Host', 'passed target, inspected Host', 'two Host headers', 'userinfo in the target', 'origin-form with the update host in Host', 'absolute-form https:// without CONNECT']) {
    it(`${name}: refused (400/404), inspected (403), or passed only as the passed host — never the update host's payload unverified`, async () => {
      const seen = origin.log.length;
      const r = await withLegit(`host-${name}`, () => rawClient(g.port, build(name), 3000));
      const rs = parseResponses(r.data);
      expect(rs.length, r.data.subarray(0, 200).toString()).toBeGreaterThanOrEqual(1);
      const upstream = origin.log.slice(seen).filter((l) => l.path === '/flame.exe');
      if (rs[0]!.status === 200) {
        // Passed through: only legitimate if it went to the passed host, and the origin was told so.
        expect(r.data.includes(flameMark)).toBe(true);
        expect(upstream.map((l) => String(l.headers.host)), 'Host the origin saw').toEqual([`localhost:${origin.port}`]);
      } else {
        expect(r.data.includes(flameMark), `${name}: ${r.data.subarray(0, 200).toString()}`).toBe(false);
        expect([400, 403, 404]).toContain(rs[0]!.status);
      }
    });
  }
  void reasons;
});
