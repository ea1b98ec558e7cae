/**
 * Slow and unwelcome clients against `patchgate icap` and `patchgate run` (issue 13, items 2 and
 * 6): hundreds of connections that each send one byte of a request head and then nothing (a
 * slowloris), and ICAP peers that are not allowed. 256 one-byte connections used to take every ICAP
 * slot until they chose to leave, so that Squid got 503 for every update download. During each
 * attack here a legitimate transfer must complete; afterwards the slow connections are gone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net, { type Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fx } from '../support/fixtures.js';
import { type Origin, proxyRequest, send, sleep, startOrigin, waitFor } from '../support/gateHarness.js';
import { type IcapHandle, httpRequestHead, httpResponseHead, respmodOnce, startIcap } from '../support/icapHarness.js';
import { BIN, startRunProcess } from '../support/runProcess.js';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';
import { AllowedPeers } from '../../src/icap/allowedPeers.js';
import { sha256 } from './hostileSupport.js';

const good = readFileSync(fx('good.exe'));
const U = (path: string) => `http://127.0.0.1:8/${path}`;
const okHead = (body: Buffer) => httpResponseHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });

/** Opens `n` connections that each send `first` and then nothing; resolves once all are connected. */
async function slowClients(port: number, n: number, first: string, localAddress?: string): Promise<{ sockets: Socket[]; closed: () => number; received: () => Buffer[] }> {
  const sockets: Socket[] = [];
  const got: Buffer[] = [];
  let closed = 0;
  await Promise.all(Array.from({ length: n }, () => new Promise<void>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
    s.on('error', () => {});
    s.on('data', (d: Buffer) => got.push(d));
    s.once('close', () => { closed++; resolve(); });
    s.once('connect', () => { s.write(first); resolve(); });
    sockets.push(s);
  })));
  return { sockets, closed: () => closed, received: () => got };
}

async function legitimateRespmod(port: number, tag: string): Promise<void> {
  const a = await respmodOnce(port, { reqHead: httpRequestHead(U(`${tag}.exe`)), resHead: okHead(good), body: good, preview: 4096, allow204: true }, 10_000);
  // Allowed: 204 (Squid keeps its own copy) or the verified bytes echoed back.
  expect([200, 204], `legitimate RESPMOD during "${tag}": ICAP ${a.status}`).toContain(a.status);
  if (a.status === 200) expect(sha256(a.body!)).toBe(sha256(good));
}

describe('patchgate icap: slowloris', () => {
  let icap: IcapHandle;
  const metrics = new GateMetrics();
  beforeAll(async () => {
    // Default Max-Connections (256); a short head timeout so the test sees it act.
    icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { requestHeadTimeoutMs: 1500 }, observer: metrics });
  });
  afterAll(async () => {
    await icap?.dispose();
  });

  it('300 connections each send one byte: a legitimate RESPMOD still completes; the slow heads get 408 and are closed after the head timeout', async () => {
    const t0 = Date.now();
    const slow = await slowClients(icap.port, 300, 'R');
    await sleep(100);
    expect(icap.service.connectionCount).toBeLessThanOrEqual(icap.service.maxConnections);
    // The attack holds every slot: the legitimate transaction gets one (a slow head's) all the same.
    await legitimateRespmod(icap.port, 'during-slowloris');
    const [rec] = await icap.waitRecords((r) => r.url === U('during-slowloris.exe'));
    expect(rec).toMatchObject({ verdict: 'allow' });
    // All 300 are gone by the head timeout (1.5 s) plus a margin: reclaimed for newcomers, or timed out with a 408.
    expect(await waitFor(() => slow.closed() === 300, 5000)).toBe(true);
    const ms = Date.now() - t0;
    expect(ms).toBeLessThan(4000);
    expect(Buffer.concat(slow.received()).toString('latin1')).toMatch(/^ICAP\/1\.0 408 /m);
    expect(icap.service.closedConnections['head-timeout']).toBeGreaterThan(0);
    expect(icap.service.closedConnections.reclaimed).toBeGreaterThanOrEqual(300 - 256);
    expect(await metrics.text()).toMatch(/^patchgate_icap_connections_closed_total\{reason="head-timeout"\} [1-9]\d*$/m);
    for (const s of slow.sockets) s.destroy();
    await waitFor(() => icap.service.connectionCount === 0);
    expect(icap.service.connectionCount).toBe(0);
  });

  it('a head trickled one byte every 200 ms is cut at the head timeout, however steady the trickle', async () => {
    const s = net.connect({ host: '127.0.0.1', port: icap.port });
    s.on('error', () => {});
    let closedAt = 0;
    s.once('close', () => (closedAt = Date.now()));
    await new Promise<void>((r) => s.once('connect', () => r()));
    const t0 = Date.now();
    const head = `RESPMOD icap://127.0.0.1:${icap.port}/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\n`;
    for (let i = 0; i < head.length && !closedAt; i++) {
      s.write(head[i]!);
      await sleep(200);
    }
    expect(closedAt, 'the trickling connection was closed').toBeGreaterThan(0);
    expect(closedAt - t0).toBeGreaterThanOrEqual(1400);
    expect(closedAt - t0).toBeLessThan(3000);
    s.destroy();
  });
});

describe('patchgate icap: who may connect (--allow-peer)', () => {
  let icap: IcapHandle;
  const metrics = new GateMetrics();
  beforeAll(async () => {
    icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], allowedPeers: new AllowedPeers(['127.0.0.1/32']), observer: metrics });
  });
  afterAll(async () => {
    await icap?.dispose();
  });

  it('a peer outside the allowed blocks (127.0.0.2 with only 127.0.0.1/32 allowed) is closed unanswered; no audit record under its X-Client-IP', async () => {
    const s = net.connect({ host: '127.0.0.1', port: icap.port, localAddress: '127.0.0.2' });
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.once('connect', () => {
      const req = httpRequestHead(U('oracle.exe'));
      const res = okHead(good);
      s.write(`RESPMOD icap://127.0.0.1:${icap.port}/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nX-Client-IP: 10.9.9.9\r\nEncapsulated: req-hdr=0, res-hdr=${req.length}, res-body=${req.length + res.length}\r\n\r\n${req}${res}${good.length.toString(16)}\r\n`);
      s.write(good);
      s.write('\r\n0\r\n\r\n');
    });
    await Promise.race([closed, sleep(3000)]);
    s.destroy();
    expect(Buffer.concat(got).length, 'bytes answered to a refused peer').toBe(0);
    expect(icap.service.closedConnections['refused-peer']).toBe(1);
    expect(await metrics.text()).toMatch(/^patchgate_icap_connections_closed_total\{reason="refused-peer"\} 1$/m);
    await sleep(200);
    expect(icap.records().filter((r) => r.url === U('oracle.exe') || r.client === '10.9.9.9')).toEqual([]);
  });

  it('an allowed peer is served, and its X-Client-IP names the client in the audit record', async () => {
    const a = await respmodOnce(icap.port, { reqHead: httpRequestHead(U('allowed.exe')), resHead: okHead(good), body: good, allow204: true, headers: { 'X-Client-IP': '10.1.2.3' } });
    expect([200, 204]).toContain(a.status);
    const [rec] = await icap.waitRecords((r) => r.url === U('allowed.exe'));
    expect(rec).toMatchObject({ client: '10.1.2.3', icapClient: '127.0.0.1', verdict: 'allow' });
  });

  it('blocks given as a comma-separated list (the systemd unit\'s ALLOW_PEER) are each allowed', () => {
    const p = new AllowedPeers(['127.0.0.0/8,::1', '10.0.0.7/32']);
    expect(p.blocks).toEqual(['127.0.0.0/8', '::1', '10.0.0.7/32']);
    expect(['127.0.0.2', '::1', '::ffff:127.0.0.1', '10.0.0.7'].map((a) => p.allows(a))).toEqual([true, true, true, true]);
    expect(['10.0.0.8', '192.168.1.1', '::2', undefined].map((a) => p.allows(a))).toEqual([false, false, false, false]);
  });

  it('the CLI refuses a block that is not a CIDR (usage error, exit 2)', () => {
    const r = spawnSync(process.execPath, [BIN, 'icap', '--allow-peer', '10.0.0.0/33', '--listen', '127.0.0.1:0'], { encoding: 'utf8', timeout: 15_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--allow-peer: "10\.0\.0\.0\/33" is not an address range \(CIDR\)/);
  });
});

describe('patchgate run: slowloris', () => {
  let dir: string;
  let origin: Origin;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'patchgate-slowloris-'));
    origin = await startOrigin();
    origin.route('/good.exe', send(good));
  });
  afterAll(async () => {
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('500 connections each send one byte: a legitimate download through the gate completes byte-identical, and the process lives', async () => {
    const gate = await startRunProcess({ audit: join(dir, 'audit.jsonl'), dir });
    try {
      const slow = await slowClients(gate.port, 500, 'G');
      const r = await proxyRequest(gate.port, origin.url('/good.exe'), { timeoutMs: 10_000 });
      expect(r.status).toBe(200);
      expect(r.headers['x-patchgate-verdict']).toBe('allow');
      expect(sha256(r.body)).toBe(sha256(good));
      expect(gate.child.exitCode).toBeNull();
      for (const s of slow.sockets) s.destroy();
    } finally {
      await gate.stop();
    }
  });
});
