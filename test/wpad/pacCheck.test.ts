/**
 * The guard's PAC check on 127.0.0.1 (src/wpad/pacCheck.ts, src/wpad/wpadGuard.ts): the fetch is
 * bounded in size and time, the evaluation in time and memory and has no network, the answer is
 * judged entry by entry, and network strings are escaped before they reach stderr.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { evaluatePacFor, fetchPac, parsePacRoutes, sendsOnlyToGate, PAC_MAX_BYTES } from '../../src/wpad/pacCheck.js';
import { escapeForTerminal, readResolvConf, updateUrlsFor } from '../../src/wpad/wpadGuard.js';
import { pacFile } from '../../src/proxy/pacFile.js';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const URLS = ['http://download.windowsupdate.com/', 'http://www.example.org/'];

describe('PAC evaluation', () => {
  it('patchgate\'s own PAC sends the update hosts to the gate and only there', async () => {
    const pac = pacFile({ proxyHostPort: '10.0.0.2:8080', gatedPatterns: ['*.windowsupdate.com'] });
    const [update, other] = await evaluatePacFor(pac, URLS, '10.0.0.1');
    expect(update).toBe('PROXY 10.0.0.2:8080');
    expect(other).toBe('DIRECT');
    const isGate = (h: string, p: number | undefined) => h === '10.0.0.2' && p === 8080;
    expect(sendsOnlyToGate(update!, isGate)).toBe(true);
    expect(sendsOnlyToGate(other!, isGate)).toBe(false);
  });

  it('an endless PAC is interrupted (per URL), a throwing one is an error, both within bounds', async () => {
    const t0 = Date.now();
    const loop = await evaluatePacFor('function FindProxyForURL(u, h) { for (;;) {} }', URLS, '10.0.0.1');
    expect(loop.every((r) => r.startsWith('error:'))).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5000);
    const top = await evaluatePacFor('for (;;) {}\nfunction FindProxyForURL(u, h) { return "DIRECT"; }', URLS, '10.0.0.1');
    expect(top.every((r) => r.startsWith('error:'))).toBe(true);
    expect(await evaluatePacFor('function FindProxyForURL(u, h) { throw new Error("x"); }', URLS.slice(0, 1), '10.0.0.1')).toEqual(['error: x']);
    expect((await evaluatePacFor('not javascript (', URLS.slice(0, 1), '10.0.0.1'))[0]).toMatch(/^error:/);
  });

  it('a memory-hungry PAC fails inside its limit', async () => {
    const pac = 'function FindProxyForURL(u, h) { var a = []; for (var i = 0; i < 1e8; i++) a.push("xxxxxxxxxxxxxxxx" + i); return "DIRECT"; }';
    const [r] = await evaluatePacFor(pac, URLS.slice(0, 1), '10.0.0.1');
    expect(r).toMatch(/^error:/);
  });

  it('gives the PAC no network: dnsResolve is null, isResolvable false, myIpAddress the interface', async () => {
    const pac = 'function FindProxyForURL(u, h) { var a = dnsResolve("localhost"); var b = isResolvable("localhost"); var c = myIpAddress(); return a + "," + b + "," + c; }';
    expect(await evaluatePacFor(pac, URLS.slice(0, 1), '10.9.8.7')).toEqual(['null,false,10.9.8.7']);
  });

  it('judges every entry: a DIRECT fallback or a second proxy is a way around the gate', () => {
    const isGate = (h: string, p: number | undefined) => h === 'gate.corp' && p === 8080;
    expect(parsePacRoutes('PROXY gate.corp:8080; DIRECT')).toEqual([{ kind: 'PROXY', host: 'gate.corp', port: 8080 }, { kind: 'DIRECT' }]);
    expect(sendsOnlyToGate('PROXY GATE.corp:8080', isGate)).toBe(true);
    expect(sendsOnlyToGate('PROXY gate.corp:8080; PROXY gate.corp:8080', isGate)).toBe(true);
    for (const bad of ['PROXY gate.corp:8080; DIRECT', 'PROXY evil:8080; PROXY gate.corp:8080', 'PROXY gate.corp:3128', 'SOCKS gate.corp:8080', 'DIRECT', '', 'error: x', 'PROXY gate.corp']) {
      expect(sendsOnlyToGate(bad, isGate), bad).toBe(false);
    }
  });
});

describe('PAC fetch bounds', () => {
  let server: http.Server;
  let port: number;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.headers.host === 'big') { res.writeHead(200); res.end(Buffer.alloc(PAC_MAX_BYTES + 1, 0x20)); return; }
      if (req.headers.host === 'slow') { res.writeHead(200); res.write('function'); return; } // never ends
      if (req.headers.host === 'redirect') { res.writeHead(302, { location: 'http://127.0.0.1/elsewhere' }); res.end(); return; }
      res.writeHead(200).end('function FindProxyForURL(u, h) { return "DIRECT"; }');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => { server.closeAllConnections(); server.close(); });

  it('reads a PAC, refuses one too large, gives up on a slow one, follows no redirect', async () => {
    expect(await fetchPac({ host: '127.0.0.1', port, hostHeader: 'wpad' })).toMatchObject({ ok: true });
    expect(await fetchPac({ host: '127.0.0.1', port, hostHeader: 'big' })).toEqual({ ok: false, why: `larger than ${PAC_MAX_BYTES} bytes` });
    const t0 = Date.now();
    expect(await fetchPac({ host: '127.0.0.1', port, hostHeader: 'slow', timeoutMs: 300 })).toEqual({ ok: false, why: 'no complete answer within 300 ms' });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await fetchPac({ host: '127.0.0.1', port, hostHeader: 'redirect' })).toEqual({ ok: false, why: 'HTTP 302' });
    expect((await fetchPac({ host: '127.0.0.1', port: 1, hostHeader: 'wpad' })).ok).toBe(false);
  });
});

describe('guard helpers', () => {
  it('escapes control characters, bidi overrides and line separators from the network, and cuts long text', () => {
    expect(escapeForTerminal('PROXY a:1\x1b[2J\r\nFINDING\u2028\u202e\x7f\x9b')).toBe('PROXY a:1\\x1b[2J\\x0d\\x0aFINDING\\u2028\\u202e\\x7f\\x9b');
    expect(escapeForTerminal('x'.repeat(500))).toHaveLength(201);
    expect(escapeForTerminal('x'.repeat(500), 800)).toHaveLength(500);
  });

  it('reads name servers and the search list from resolv.conf', () => {
    const d = mkdtempSync(join(tmpdir(), 'pg-resolv-'));
    try {
      writeFileSync(join(d, 'r'), '# comment\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver bogus\nsearch corp.example lab.example\noptions ndots:1\n');
      expect(readResolvConf(join(d, 'r'))).toEqual({ servers: ['10.0.0.53', 'fd00::53'], searchDomains: ['corp.example', 'lab.example'] });
      expect(readResolvConf(join(d, 'missing'))).toEqual({ servers: [], searchDomains: [] });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('turns the rules\' host patterns into update URLs', () => {
    expect(updateUrlsFor(['*.windowsupdate.com', 'download.microsoft.com', '*.WindowsUpdate.com', '10.0.0.5'])).toEqual([
      'http://download.windowsupdate.com/', 'http://download.microsoft.com/', 'http://10.0.0.5/',
    ]);
  });
});
