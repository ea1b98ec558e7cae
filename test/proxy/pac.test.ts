/**
 * The PAC file the gate serves (/wpad.dat, /proxy.pac), evaluated by a real PAC engine
 * (pac-resolver on QuickJS), and requests addressed to the gate itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server, Socket } from 'node:net';
import { QuickJS } from 'quickjs-wasi';
import { createPacResolver } from 'pac-resolver';
import { type GateHandle, directRequest, proxyRequest, quietConsole, sleep, startGate } from '../support/gateHarness.js';

let restoreConsole: () => void;
let qjs: QuickJS;
let g: GateHandle;
let chained: GateHandle;

beforeAll(async () => {
  restoreConsole = quietConsole();
  qjs = await QuickJS.create();
  const hosts = [
    { pattern: '*.windowsupdate.com', mode: 'inspect' as const },
    { pattern: 'download.microsoft.com', mode: 'inspect' as const },
    { pattern: '*.update.microsoft.com', mode: 'pinned' as const },
    { pattern: 'www.microsoft.com', mode: 'pass' as const },
  ];
  g = await startGate({ hosts });
  // With an upstream proxy (it need not exist: only the PAC file is asked for).
  chained = await startGate({ hosts, upstreamProxy: new URL('http://127.0.0.1:3128') });
});

afterAll(async () => {
  await g?.dispose();
  await chained?.dispose();
  restoreConsole?.();
});

async function pacOf(port: number, path: string, host?: string) {
  const r = await directRequest(port, path, { host });
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toBe('application/x-ns-proxy-autoconfig');
  return createPacResolver(qjs, r.body.toString('utf8'));
}

describe('PAC file', () => {
  it('12. /wpad.dat evaluates to "PROXY <gate>" for update hosts and "DIRECT" for others', async () => {
    const gate = `127.0.0.1:${g.port}`;
    for (const path of ['/wpad.dat', '/proxy.pac', '/wpad.dat?x=1']) {
      const find = await pacOf(g.port, path);
      expect(await find('http://au.download.windowsupdate.com/c/msdownload/update/software/x.cab')).toBe(`PROXY ${gate}`);
      expect(await find('http://AU.Download.WindowsUpdate.COM/x.exe')).toBe(`PROXY ${gate}`);
      expect(await find('http://download.microsoft.com/download/x.msu')).toBe(`PROXY ${gate}`);
      // Pinned hosts go through the gate too (tunnelled there, and audited).
      expect(await find('https://fe2.update.microsoft.com/v6/ClientWebService/client.asmx')).toBe(`PROXY ${gate}`);
      // Everything else, including look-alikes and hosts the rules pass, is DIRECT.
      expect(await find('http://example.com/')).toBe('DIRECT');
      expect(await find('http://windowsupdate.com/')).toBe('DIRECT');
      expect(await find('http://windowsupdate.com.evil.example/x.exe')).toBe('DIRECT');
      expect(await find('http://evildownload.microsoft.com/x.exe')).toBe('DIRECT');
      expect(await find('https://www.microsoft.com/')).toBe('DIRECT');
    }
  });

  it('the PAC file is also served to an absolute-form request for the gate itself', async () => {
    const r = await proxyRequest(g.port, `http://127.0.0.1:${g.port}/wpad.dat`);
    expect(r.status).toBe(200);
    const find = createPacResolver(qjs, r.body.toString('utf8'));
    expect(await find('http://x.windowsupdate.com/a.cab')).toBe(`PROXY 127.0.0.1:${g.port}`);
  });

  it('with an upstream proxy, other hosts go to it rather than DIRECT', async () => {
    const find = await pacOf(chained.port, '/wpad.dat');
    expect(await find('http://x.windowsupdate.com/a.cab')).toBe(`PROXY 127.0.0.1:${chained.port}`);
    expect(await find('http://example.com/')).toBe('PROXY 127.0.0.1:3128');
  });

  it('other paths on the gate itself are 404', async () => {
    const r = await directRequest(g.port, '/etc/passwd');
    expect(r.status).toBe(404);
  });

  it('an origin-form GET /wpad.dat is for the gate whatever Host says (a WPAD client sends Host: wpad)', async () => {
    // RFC 9112 3.2: clients send absolute-form to a proxy; origin-form is addressed to the gate
    // itself. A WPAD client asks http://wpad/wpad.dat (or the gate's LAN address), a Host the gate
    // cannot recognise as its own. 127.0.0.2 stands for such a name here (nothing listens there).
    const r = await directRequest(g.port, '/wpad.dat', { host: `127.0.0.2:${g.port}`, timeoutMs: 5000 });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/x-ns-proxy-autoconfig');
    expect(r.body.toString('utf8')).toContain('FindProxyForURL');
  });

  it('a request for the gate itself is never proxied back to the gate (no loop), whatever its headers', async () => {
    // x-patchgate-direct makes the gate forward a request addressed to itself; headers other than
    // Proxy-* are forwarded, so the next hop does the same. Count the connections the gate accepts
    // and stop a runaway loop early.
    const server = (g.gate as unknown as { server: Server }).server;
    let accepted = 0;
    const count = (_s: Socket) => void accepted++;
    server.on('connection', count);
    try {
      const pending = proxyRequest(g.port, `http://127.0.0.1:${g.port}/wpad.dat`, { headers: { 'x-patchgate-direct': '1' }, timeoutMs: 3000 });
      const deadline = Date.now() + 1500;
      let settled = false;
      void pending.then(() => (settled = true));
      while (!settled && accepted <= 20 && Date.now() < deadline) await sleep(5);
      const loops = accepted;
      if (!settled) await g.stop(0); // break a loop; later tests in this file do not need g
      const r = await pending;
      expect(loops, `the gate accepted ${loops} connections for one request`).toBeLessThanOrEqual(2);
      expect([200, 400, 403, 404]).toContain(r.status);
    } finally {
      server.off('connection', count);
    }
  });
});
