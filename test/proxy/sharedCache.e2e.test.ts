/**
 * The gate's shared copies follow RFC 9111 (issue 13 item 9): a payload fetched with another
 * client's credentials is never served to a client without them; `no-store` and `private`
 * responses are not kept, nor shared with requests that joined the download; `Vary` (other than
 * Accept-Encoding, which the gate undoes itself) is not shared; `max-age` shortens the time a copy
 * is kept. Real sockets on 127.0.0.1: the origin counts the requests that reach it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, sleep, startGate, startOrigin } from '../support/gateHarness.js';
import { fixture, sha256 } from '../hostile/hostileSupport.js';

let restore: () => void;
let origin: Origin;
let g: GateHandle;
const good = fixture('good.exe');
const AUTH = 'Basic ' + Buffer.from('alice:secret').toString('base64');

/** Serves good.exe only with alice's credentials (else 401), with the given extra headers. */
const authOnly = (headers: Record<string, string> = {}) => (req: IncomingMessage, res: ServerResponse) => {
  req.resume();
  if (req.headers.authorization !== AUTH) {
    res.writeHead(401, { 'www-authenticate': 'Basic realm="updates"', 'content-length': 0 });
    return res.end();
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': good.length, ...headers });
  res.end(good);
};

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { cacheTtlMs: 60_000 } });
});
afterAll(async () => { await g?.dispose(); await origin?.close(); restore?.(); });

const hits = (p: string) => origin.hits(p);

describe('item 9: credentials (RFC 9111 §3.5)', () => {
  it("a client without credentials never gets the copy fetched with another client's", async () => {
    origin.route('/auth.exe', authOnly());
    const a = await proxyRequest(g.port, origin.url('/auth.exe'), { headers: { authorization: AUTH } });
    expect(a.status).toBe(200);
    expect(sha256(a.body)).toBe(sha256(good));
    const b = await proxyRequest(g.port, origin.url('/auth.exe'));
    expect(b.status).toBe(401);
    expect(b.body.length).toBe(0);
    expect(hits('/auth.exe')).toBe(2);
  });

  it('nor while the credentialed download is still running (no joining across credentials)', async () => {
    origin.route('/auth-slow.exe', (req, res) => {
      if (req.headers.authorization !== AUTH) return authOnly()(req, res);
      return send(good, { chunk: 2048, delayMs: 20 })(req, res);
    });
    const [a, b] = await Promise.all([
      proxyRequest(g.port, origin.url('/auth-slow.exe'), { headers: { authorization: AUTH } }),
      sleep(60).then(() => proxyRequest(g.port, origin.url('/auth-slow.exe'))),
    ]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(401);
  });

  it('without public the response to credentials is not kept; with public it is (for the same credentials)', async () => {
    origin.route('/auth-private.exe', authOnly());
    origin.route('/auth-public.exe', authOnly({ 'cache-control': 'public, max-age=60' }));
    for (let i = 0; i < 2; i++) {
      expect((await proxyRequest(g.port, origin.url('/auth-private.exe'), { headers: { authorization: AUTH } })).status).toBe(200);
      expect((await proxyRequest(g.port, origin.url('/auth-public.exe'), { headers: { authorization: AUTH, range: 'bytes=0-99' } })).status).toBe(206);
    }
    expect(hits('/auth-private.exe')).toBe(2);
    expect(hits('/auth-public.exe')).toBe(1);
  });
});

describe('item 9: Cache-Control and Vary', () => {
  it('no-store and private responses are not kept; a plain one is', async () => {
    origin.route('/no-store.exe', send(good, { headers: { 'cache-control': 'no-store' } }));
    origin.route('/private.exe', send(good, { headers: { 'cache-control': 'private, max-age=600' } }));
    origin.route('/plain.exe', send(good));
    for (let i = 0; i < 2; i++) {
      for (const p of ['/no-store.exe', '/private.exe', '/plain.exe']) {
        const r = await proxyRequest(g.port, origin.url(p));
        expect(r.status, p).toBe(200);
        expect(sha256(r.body)).toBe(sha256(good));
      }
    }
    expect(hits('/no-store.exe')).toBe(2);
    expect(hits('/private.exe')).toBe(2);
    expect(hits('/plain.exe')).toBe(1);
  });

  it('a private response is not shared with a request that joined its download: each gets its own fetch', async () => {
    origin.route('/private-slow.exe', send(good, { chunk: 2048, delayMs: 20, headers: { 'cache-control': 'private' } }));
    const rs = await Promise.all([0, 1, 2].map((i) => sleep(i * 40).then(() => proxyRequest(g.port, origin.url('/private-slow.exe')))));
    for (const r of rs) {
      expect(r.status).toBe(200);
      expect(sha256(r.body)).toBe(sha256(good));
    }
    expect(hits('/private-slow.exe')).toBe(3);
    const recs = await g.waitRecords((x) => x.url === origin.url('/private-slow.exe'), 3);
    expect(recs.filter((x) => x.shared)).toHaveLength(0);
  });

  it('Vary on a request header is not shared; Vary: Accept-Encoding is (the gate decodes itself)', async () => {
    origin.route('/vary-ua.exe', send(good, { headers: { vary: 'User-Agent' } }));
    origin.route('/vary-ae.exe', send(good, { headers: { vary: 'Accept-Encoding' } }));
    for (const ua of ['a', 'b']) {
      expect((await proxyRequest(g.port, origin.url('/vary-ua.exe'), { headers: { 'user-agent': ua } })).status).toBe(200);
      expect((await proxyRequest(g.port, origin.url('/vary-ae.exe'), { headers: { 'user-agent': ua } })).status).toBe(200);
    }
    expect(hits('/vary-ua.exe')).toBe(2);
    expect(hits('/vary-ae.exe')).toBe(1);
  });

  it('max-age shortens the time a verified copy is kept', async () => {
    origin.route('/short.exe', send(good, { headers: { 'cache-control': 'max-age=1' } }));
    expect((await proxyRequest(g.port, origin.url('/short.exe'))).status).toBe(200);
    expect((await proxyRequest(g.port, origin.url('/short.exe'))).status).toBe(200);
    expect(hits('/short.exe')).toBe(1);
    await sleep(1200);
    expect((await proxyRequest(g.port, origin.url('/short.exe'))).status).toBe(200);
    expect(hits('/short.exe')).toBe(2);
  });
});
