/**
 * Who may use the gate and where it takes them (issue 13 item 5): a client outside `clients` gets
 * 403 and an audit line; CONNECT only to the CONNECT ports, plain HTTP only to the HTTP ports,
 * unless a host rule names others; loopback and link-local destinations only when a rule names
 * the host; the gate's own listening and admin addresses never; `passThrough: deny` refuses hosts
 * neither inspected nor pinned. Real sockets on 127.0.0.1; each refusal is checked against the
 * origin's hit counter (nothing reached it) and the audit trail.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type GateHandle, type Origin,
  acceptWebSocketAndSend, connectThrough, proxyRequest, quietConsole, send, startGate, startOrigin, webSocketThroughProxy,
} from '../support/gateHarness.js';
import { fixture } from './hostileSupport.js';

let restore: () => void;
let origin: Origin;
const good = fixture('good.exe');
const gates: GateHandle[] = [];
const gate = async (o: Parameters<typeof startGate>[0]) => { const g = await startGate(o); gates.push(g); return g; };

beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  origin.route('/hello', send(Buffer.from('hello\n'), { headers: { 'content-type': 'text/plain' } }));
  origin.route('/good.exe', send(good));
});
afterAll(async () => {
  for (const g of gates) await g.dispose();
  await origin?.close();
  restore?.();
});

const denied = (g: GateHandle, url: RegExp | string) =>
  g.waitRecords((r) => r.reasons.some((x) => x.code === 'ACCESS_DENIED') && (typeof url === 'string' ? r.url === url : url.test(r.url)));

describe('item 5: clients', () => {
  it('a client outside `clients` gets 403 and an audit line, for requests and CONNECTs alike', async () => {
    const g = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], access: { clients: ['10.0.0.0/8', 'fc00::/7'] } });
    const before = origin.hits('/good.exe');
    const r = await proxyRequest(g.port, origin.url('/good.exe'));
    expect(r.status).toBe(403);
    expect(r.body.toString()).toMatch(/client 127\.0\.0\.1 is not in the rules' clients/);
    const c = await connectThrough(g.port, `127.0.0.1:${origin.port}`);
    expect(c.status).toBe(403);
    expect(origin.hits('/good.exe')).toBe(before);
    const recs = await denied(g, /.*/);
    expect(recs.length).toBeGreaterThanOrEqual(2);
    expect(recs.map((x) => x.kind).sort()).toEqual(['connect', 'transfer']);
    expect(recs.every((x) => x.client === '127.0.0.1' && x.status === 403 && x.verdict === 'block' && x.served === 'blocked')).toBe(true);
  });

  it('the default `clients` admits loopback (and the private ranges)', async () => {
    const g = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    const r = await proxyRequest(g.port, origin.url('/good.exe'));
    expect(r.status).toBe(200);
    expect(r.headers['x-patchgate-verdict']).toBe('allow');
  });
});

describe('item 5: destinations', () => {
  it('CONNECT only to 443 and plain HTTP only to 80/8080 unless the rules name the port', async () => {
    // localhost is named (so loopback is allowed), without ports: only the rules' port lists apply.
    const g = await gate({ hosts: [{ pattern: 'localhost', mode: 'pass', ports: [] }] });
    const before = origin.hits('/hello');
    const c = await connectThrough(g.port, `localhost:${origin.port}`);
    expect(c.status).toBe(403);
    const r = await proxyRequest(g.port, origin.url('/hello', 'localhost'));
    expect(r.status).toBe(403);
    expect(r.body.toString()).toMatch(new RegExp(`port ${origin.port} is not allowed for plain HTTP`));
    expect(origin.hits('/hello')).toBe(before);
    await denied(g, `localhost:${origin.port}`);
    // The same port named in the rules' port lists: proxied.
    const g2 = await gate({ hosts: [{ pattern: 'localhost', mode: 'pass', ports: [] }], access: { connectPorts: [443, origin.port], httpPorts: [80, origin.port] } });
    const ok = await proxyRequest(g2.port, origin.url('/hello', 'localhost'));
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toBe('hello\n');
    const c2 = await connectThrough(g2.port, `localhost:${origin.port}`);
    expect(c2.status).toBe(200);
    c2.socket?.destroy();
    // Or named on the host rule itself.
    const g3 = await gate({ hosts: [{ pattern: 'localhost', mode: 'pass', ports: [origin.port] }] });
    expect((await proxyRequest(g3.port, origin.url('/hello', 'localhost'))).status).toBe(200);
  });

  it('loopback and unspecified destinations are refused unless a rule names the host: localhost, [::1], 0.0.0.0, 127.0.0.2', async () => {
    // Ports allowed, so that only the address rule can refuse.
    const g = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], access: { connectPorts: [origin.port], httpPorts: [origin.port] } });
    const before = origin.hits('/good.exe');
    for (const host of ['localhost', '[::1]', '0.0.0.0', '127.0.0.2']) {
      const r = await proxyRequest(g.port, origin.url('/good.exe', host));
      // An IPv6 literal in a plain HTTP target is read like any host: the address rule refuses it.
      expect(r.status, host).toBe(403);
      expect(r.body.toString(), host).toMatch(/a loopback or link-local address that no rule names/);
      const c = await connectThrough(g.port, `${host}:${origin.port}`);
      expect(c.status, `CONNECT ${host}`).toBe(403);
    }
    expect(origin.hits('/good.exe')).toBe(before);
    // The named host itself (as --update-host 127.0.0.1 names it) stays reachable.
    expect((await proxyRequest(g.port, origin.url('/good.exe'))).status).toBe(200);
  });

  it("never to the gate's own listening or admin address, even when a rule names the host", async () => {
    const admin = http.createServer((_q, s) => s.end('metrics: secret\n'));
    await new Promise<void>((r) => admin.listen(0, '127.0.0.1', () => r()));
    const adminPort = (admin.address() as AddressInfo).port;
    try {
      const g = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'pass' }], ownEndpoints: [{ host: '127.0.0.1', port: adminPort }] });
      const r = await proxyRequest(g.port, `http://127.0.0.1:${adminPort}/metrics`);
      expect(r.status).toBe(403);
      expect(r.body.toString()).toMatch(/the gate's own listening or admin address/);
      expect(r.body.toString()).not.toMatch(/secret/);
      const c = await connectThrough(g.port, `127.0.0.1:${adminPort}`);
      expect(c.status).toBe(403);
      const self = await connectThrough(g.port, `127.0.0.1:${g.port}`);
      expect(self.status).toBe(403);
      await denied(g, `127.0.0.1:${g.port}`);
    } finally {
      admin.close();
    }
  });

  it('passThrough: deny refuses hosts neither inspected nor pinned; forward proxies them', async () => {
    const url = 'http://no-such-host.invalid/x';
    const fwd = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    const a = await proxyRequest(fwd.port, url);
    expect(a.status).toBe(502); // forwarded: it just does not resolve
    const deny = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }, { pattern: 'localhost', mode: 'pass' }], access: { passThrough: 'deny' } });
    const b = await proxyRequest(deny.port, url);
    expect(b.status).toBe(403);
    expect(b.body.toString()).toMatch(/neither inspected nor pinned, and the rules' passThrough is deny/);
    const c = await connectThrough(deny.port, 'no-such-host.invalid:443');
    expect(c.status).toBe(403);
    await denied(deny, url);
    // A host a `pass` rule names is still proxied, and inspected hosts still work.
    expect((await proxyRequest(deny.port, origin.url('/hello', 'localhost'))).status).toBe(200);
    expect((await proxyRequest(deny.port, origin.url('/good.exe'))).headers['x-patchgate-verdict']).toBe('allow');
  });

  it('WebSocket upgrades go through the same destination checks', async () => {
    const payload = Buffer.from('websocket payload from a loopback service');
    origin.onUpgrade('/ws', acceptWebSocketAndSend(payload));
    const closed = await gate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], access: { httpPorts: [origin.port] } });
    const refused = await webSocketThroughProxy(closed.port, origin.url('/ws', 'localhost').replace('http:', 'ws:'));
    expect(refused.data.includes(payload)).toBe(false);
    expect(origin.upgrades('/ws')).toBe(0);
    // Named (a pass rule): the upgrade is proxied.
    const open = await gate({ hosts: [{ pattern: 'localhost', mode: 'pass' }] });
    const ok = await webSocketThroughProxy(open.port, origin.url('/ws', 'localhost').replace('http:', 'ws:'));
    expect(ok.data.includes(payload)).toBe(true);
  });
});
