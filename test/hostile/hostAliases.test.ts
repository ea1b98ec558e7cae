/**
 * The inspected origin under other names (issue 13 item 10): a Host header that does not parse is
 * 400; the Host inside a CONNECT (plain HTTP in the tunnel, or inside intercepted TLS) must name the
 * CONNECT's target; with `inspectAddresses`, a name that resolves to an inspected host's address is
 * inspected too (and a CONNECT to it is intercepted or refused, never tunnelled blind).
 * Real sockets on 127.0.0.1; `localhost` is the alias of the inspected 127.0.0.1.
 */
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GateHandle, type Origin, connectThrough, proxyRequest, quietConsole, send, startGate, startOrigin } from '../support/gateHarness.js';
import { fixture, parseResponses, rawClient } from './hostileSupport.js';

let restore: () => void;
let origin: Origin;
let named: GateHandle; // matches by name only (inspectAddresses off)
let byAddress: GateHandle; // inspectAddresses on
const flame = fixture('flame.exe');
const flameMark = flame.subarray(4700, 4800);
// localhost is named by a pass rule: reachable (loopback is only when named), and not inspected by name.
const hosts = [{ pattern: '127.0.0.1', mode: 'inspect' as const }, { pattern: 'localhost', mode: 'pass' as const }];

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  origin.route('/flame.exe', send(flame));
  named = await startGate({ hosts });
  byAddress = await startGate({ hosts, access: { inspectAddresses: true } });
});
afterAll(async () => { await named?.dispose(); await byAddress?.dispose(); await origin?.close(); restore?.(); });

/** Sends one request inside a CONNECT tunnel (plain HTTP) and returns the raw answer. */
async function insideTunnel(g: GateHandle, target: string, request: string): Promise<string> {
  const c = await connectThrough(g.port, target);
  expect(c.status).toBe(200);
  return new Promise((resolve) => {
    let data = '';
    c.socket!.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    c.socket!.on('close', () => resolve(data));
    c.socket!.on('error', () => resolve(data));
    c.socket!.write(request);
    setTimeout(() => { c.socket!.destroy(); resolve(data); }, 3000).unref();
  });
}

describe('item 10: Host headers', () => {
  it('a Host header that does not parse is 400, never ignored', async () => {
    const O = `127.0.0.1:${origin.port}`;
    for (const host of [`${O}:1`, '[::1', 'a b', `${O}/x`]) {
      const r = await rawClient(named.port, `GET http://${O}/flame.exe HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      const rs = parseResponses(r.data);
      expect(rs[0]?.status, host).toBe(400);
      expect(r.data.includes(flameMark)).toBe(false);
    }
  });

  it('plain HTTP inside a CONNECT to the inspected host cannot name another Host (the forged PE stays out)', async () => {
    const answer = await insideTunnel(named, `127.0.0.1:${origin.port}`, `GET /flame.exe HTTP/1.1\r\nHost: localhost:${origin.port}\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toMatch(/names localhost/);
    expect(answer.includes(flameMark.toString('latin1'))).toBe(false);
    // Nor another port of the same host.
    const other = await insideTunnel(named, `127.0.0.1:${origin.port}`, `GET /flame.exe HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n`);
    expect(other).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('inside intercepted TLS the Host must name the CONNECT target too', async () => {
    const c = await connectThrough(named.port, '127.0.0.1:443');
    expect(c.status).toBe(200);
    const t = tls.connect({ socket: c.socket!, ca: named.caPem, host: '127.0.0.1' });
    await new Promise<void>((res, rej) => { t.once('secureConnect', () => res()); t.once('error', rej); });
    const answer = await new Promise<string>((resolve) => {
      let data = '';
      t.on('data', (d: Buffer) => { data += d.toString('latin1'); });
      t.on('close', () => resolve(data));
      t.on('error', () => resolve(data));
      t.write(`GET /flame.exe HTTP/1.1\r\nHost: localhost:${origin.port}\r\nConnection: close\r\n\r\n`);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    const rec = await named.waitRecords((r) => r.reasons.some((x) => x.code === 'ACCESS_DENIED' && /inside the CONNECT to 127\.0\.0\.1:443/.test(x.message)));
    expect(rec.length).toBeGreaterThanOrEqual(1);
  });
});

describe('item 10: inspectAddresses', () => {
  it('off: an alias of the inspected origin is matched by name only (the forged PE passes, as the rules say)', async () => {
    const r = await proxyRequest(named.port, origin.url('/flame.exe', 'localhost'));
    expect(r.status).toBe(200);
    expect(r.body.includes(flameMark)).toBe(true);
  });

  it('on: the same alias is inspected and the forged PE is blocked', async () => {
    const r = await proxyRequest(byAddress.port, origin.url('/flame.exe', 'localhost'));
    expect(r.status).toBe(403);
    expect(r.headers['x-patchgate-verdict']).toBe('block');
    expect(r.body.includes(flameMark)).toBe(false);
    const rec = (await byAddress.waitRecords((x) => x.id === String(r.headers['x-patchgate-audit-id'])))[0];
    expect(rec).toMatchObject({ host: 'localhost', inspected: true, verdict: 'block' });
  });

  it('on: a CONNECT to the alias is not tunnelled blind (the CA covers only the inspected names: refused)', async () => {
    const off = await connectThrough(named.port, `localhost:${origin.port}`);
    expect(off.status).toBe(200); // off: a blind tunnel, as for any passed host
    off.socket?.destroy();
    const on = await connectThrough(byAddress.port, `localhost:${origin.port}`);
    expect(on.status).toBe(403);
  });
});
