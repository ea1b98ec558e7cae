/**
 * Pass-through HTTP as the gate forwards it itself (node:http, no proxy library): hop-by-hop fields
 * stay on their hop both ways, bodies cross intact, keep-alive holds, and an origin that fails
 * mid-body never gives the client a complete-looking response. Real sockets on 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { type GateHandle, type Origin, proxyRequest, startGate, startOrigin } from '../support/gateHarness.js';

let origin: Origin;
let g: GateHandle;
/** A port nothing listens on (allowed by the rules, so that only the connection fails). */
let deadPort = 0;

beforeAll(async () => {
  origin = await startOrigin();
  origin.route('/hop', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'keep-alive, x-resp-hop', 'x-resp-hop': 'secret', 'keep-alive': 'timeout=99', 'x-kept': 'yes' });
    res.end('hop\n');
  });
  origin.route('/echo', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, { 'content-length': body.length, 'x-request-te': String(req.headers['transfer-encoding'] ?? '') });
      res.end(body);
    });
  });
  origin.route('/cut', (_req, res) => {
    res.writeHead(200, { 'content-length': 100_000 });
    res.write(Buffer.alloc(10_000, 1));
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const dead = http.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', () => r()));
  deadPort = (dead.address() as { port: number }).port;
  await new Promise((r) => dead.close(r));
  g = await startGate({ hosts: [{ pattern: 'localhost', mode: 'pass' }], access: { httpPorts: [origin.port, deadPort] } });
});

afterAll(async () => {
  await g?.dispose();
  await origin?.close();
});

describe('pass-through HTTP', () => {
  it('hop-by-hop fields (and the ones Connection names, and Proxy-*) do not cross the gate, either way', async () => {
    const r = await proxyRequest(g.port, origin.url('/hop', 'localhost'), {
      headers: { connection: 'keep-alive, x-req-hop', 'x-req-hop': 'secret', 'proxy-authorization': 'Basic dTpw', te: 'trailers', 'x-end-to-end': '1' },
    });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('hop\n');
    const seen = origin.log.filter((l) => l.path === '/hop').at(-1)!.headers;
    expect(seen['x-req-hop']).toBeUndefined();
    expect(seen['proxy-authorization']).toBeUndefined();
    expect(seen.te).toBeUndefined();
    expect(seen['x-end-to-end']).toBe('1');
    expect(r.headers['x-resp-hop']).toBeUndefined();
    // The gate's own connection may carry its Keep-Alive; the origin's does not cross.
    expect(r.headers['keep-alive']).not.toBe('timeout=99');
    expect(r.headers['x-kept']).toBe('yes');
  });

  it('a chunked request body reaches the origin whole, and a Content-Length one too', async () => {
    const body = Buffer.alloc(300_000, 7);
    for (const chunked of [true, false]) {
      const r = await new Promise<{ status: number; body: Buffer; te: string }>((resolve, reject) => {
        const u = new URL(origin.url('/echo', 'localhost'));
        const req = http.request({ host: '127.0.0.1', port: g.port, method: 'POST', path: u.href, headers: { host: u.host, ...(chunked ? {} : { 'content-length': body.length }) } }, (res) => {
          const c: Buffer[] = [];
          res.on('data', (d: Buffer) => c.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(c), te: String(res.headers['x-request-te']) }));
        });
        req.on('error', reject);
        req.write(body.subarray(0, 1000));
        req.end(body.subarray(1000));
      });
      expect(r.status).toBe(200);
      expect(r.body.equals(body)).toBe(true);
      expect(r.te).toBe(chunked ? 'chunked' : '');
    }
  });

  it('keep-alive: back-to-back requests share one client connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    try {
      for (let i = 0; i < 5; i++) {
        const u = new URL(origin.url('/hop', 'localhost'));
        await new Promise<void>((resolve, reject) => {
          const req = http.request({ host: '127.0.0.1', port: g.port, path: u.href, headers: { host: u.host }, agent }, (res) => {
            sockets.add(res.socket);
            res.resume();
            res.on('end', () => resolve());
          });
          req.on('error', reject);
          req.end();
        });
      }
      expect(sockets.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it('an origin that fails mid-body: the client response ends short, never complete', async () => {
    const r = await proxyRequest(g.port, origin.url('/cut', 'localhost'), { timeoutMs: 5000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.body.length).toBeLessThan(100_000);
  });

  it('an origin that cannot be reached: 502', async () => {
    const r = await proxyRequest(g.port, `http://localhost:${deadPort}/x`);
    expect(r.status).toBe(502);
    expect(r.body.toString()).toMatch(/^upstream: .*ECONNREFUSED/);
  });
});
