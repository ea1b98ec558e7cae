/**
 * TLS interception on the CONNECT socket itself: the leaf names the CONNECT host, whatever SNI
 * says; no per-host HTTPS server is started (no listening socket, no descriptor kept per host);
 * the HTTP inside goes through the same rules; a tunnel that carries plain HTTP is still gated.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import { readdirSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { type GateHandle, type Origin, connectThrough, quietConsole, send, startGate, startOrigin } from '../support/gateHarness.js';
import { fx } from '../support/fixtures.js';
import { readFileSync } from 'node:fs';

let g: GateHandle;
let origin: Origin;
let restore: () => void;
beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  g = await startGate({ hosts: [{ pattern: '*.intercept.test', mode: 'inspect' }, { pattern: '127.0.0.1', mode: 'inspect' }] });
});
afterAll(async () => { await g?.dispose(); await origin?.close(); restore?.(); });

const fds = () => readdirSync('/proc/self/fd').length;

function handshake(host: string, servername?: string): Promise<{ t: tls.TLSSocket; cert: X509Certificate }> {
  return connectThrough(g.port, `${host}:443`).then((c) => {
    expect(c.status).toBe(200);
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: c.socket!, ca: g.caPem, servername: servername ?? host, checkServerIdentity: () => undefined });
      t.once('secureConnect', () => resolve({ t, cert: new X509Certificate(t.getPeerCertificate(true).raw) }));
      t.once('error', reject);
    });
  });
}

describe('TLS terminated on the CONNECT socket', () => {
  it('issues a leaf for each CONNECT host (not for the SNI), with no HTTPS server or descriptor kept per host', async () => {
    // No library, no HTTPS server per host: nothing like http-mitm-proxy's sslServers exists on the gate.
    const lib = g.gate as unknown as { sslServers?: Record<string, unknown> };
    const before = fds();
    for (let i = 0; i < 12; i++) {
      const host = `h${i}.intercept.test`;
      const { t, cert } = await handshake(host, i % 2 ? 'other.example' : host);
      expect(cert.subjectAltName).toBe(`DNS:${host}`);
      expect(cert.checkIssued(new X509Certificate(g.caPem))).toBe(true);
      t.destroy();
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(Object.keys(lib.sslServers ?? {})).toEqual([]);
    expect(fds() - before).toBeLessThan(4);
  });

  it('requests inside the intercepted TLS are held and verified; plain HTTP inside a CONNECT is gated too', async () => {
    const flame = readFileSync(fx('flame.exe'));
    origin.route('/it/flame.exe', send(flame));
    // TLS to 127.0.0.1 (the origin speaks plain HTTP, so the upstream fetch fails): blocked, never passed.
    const { t } = await handshake('127.0.0.1');
    const viaTls = await new Promise<string>((resolve) => {
      let data = '';
      t.on('data', (d) => { data += d.toString('latin1'); });
      t.on('close', () => resolve(data));
      t.write(`GET /it/flame.exe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
    expect(viaTls).toMatch(/^HTTP\/1\.1 403 /);
    // Plain HTTP in a tunnel to the inspected host: verified like any request (flame.exe is blocked).
    const c = await connectThrough(g.port, `127.0.0.1:${origin.port}`);
    expect(c.status).toBe(200);
    const plain = await new Promise<string>((resolve) => {
      let data = '';
      c.socket!.on('data', (d) => { data += d.toString('latin1'); });
      c.socket!.on('close', () => resolve(data));
      c.socket!.write(`GET /it/flame.exe HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
    });
    expect(plain).toMatch(/^HTTP\/1\.1 403 /);
    expect(plain).toMatch(/x-patchgate-verdict: block/i);
    expect(plain.includes(flame.subarray(flame.length - 64).toString('latin1'))).toBe(false);
  });

  it('a request trickled inside intercepted TLS is cut by the header timeout, as on a listening server', async () => {
    const server = (g.gate as unknown as { intercepted: { headersTimeout: number } }).intercepted;
    const saved = server.headersTimeout;
    server.headersTimeout = 400;
    try {
      const { t } = await handshake('h-slow.intercept.test');
      const t0 = Date.now();
      t.write('GET /x HTTP/1.1\r\nHost: h-slow.intercept.test\r\n');
      const drip = setInterval(() => { if (!t.destroyed) t.write('X-Drip: 1\r\n'); }, 100);
      await new Promise<void>((resolve) => { t.on('close', () => resolve()); t.on('error', () => {}); });
      clearInterval(drip);
      expect(Date.now() - t0).toBeLessThan(4000);
    } finally {
      server.headersTimeout = saved;
    }
  });
});
