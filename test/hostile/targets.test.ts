/**
 * Malformed request targets against `patchgate run` as a real process (issue 13, item 1): a
 * target that is neither origin-form nor `http://` absolute-form, sent with the Host of an
 * inspected host, once made `new URL()` throw outside any guard and ended the process, with every
 * download in flight. Each shape here must get a 400 (or another clean refusal), an audit line,
 * and leave the process serving: a legitimate download completes after every one of them, and one
 * is in flight across the whole run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fx } from '../support/fixtures.js';
import { type Origin, proxyRequest, send, startOrigin, waitFor } from '../support/gateHarness.js';
import { adminGet, startRunProcess, type RunningGate } from '../support/runProcess.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';
import { parseResponses, rawClient, sha256 } from './hostileSupport.js';

let dir: string;
let origin: Origin;
let gate: RunningGate;
let audit: string;
const good = readFileSync(fx('good.exe'));
const flame = readFileSync(fx('flame.exe'));
const flameMark = flame.subarray(4700, 4800);

const records = (): AuditRecord[] => {
  try {
    return readFileSync(audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditRecord);
  } catch {
    return [];
  }
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-targets-'));
  audit = join(dir, 'audit.jsonl');
  origin = await startOrigin();
  origin.route('/x.exe', send(flame));
  origin.route('/good.exe', send(good));
  // A slow legitimate download that is in flight while the malformed targets arrive.
  origin.route('/slow-good.exe', send(good, { chunk: 4096, delayMs: 40 }));
  gate = await startRunProcess({ audit, dir });
});

afterAll(async () => {
  if (gate && gate.child.exitCode === null) await gate.stop();
  await origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function legitimate(): Promise<void> {
  const r = await proxyRequest(gate.port, origin.url('/good.exe'), { timeoutMs: 10_000 });
  expect(r.status).toBe(200);
  expect(sha256(r.body)).toBe(sha256(good));
}

describe('patchgate run: malformed request targets with the Host of an inspected host', () => {
  const O = () => `127.0.0.1:${origin.port}`;
  // [name, request line target, method]: the shapes and their relatives.
  const shapes: [string, () => string, string][] = [
    ['*@', () => '*@', 'GET'],
    ['*', () => '*', 'GET'],
    ['OPTIONS *', () => '*', 'OPTIONS'],
    ['upper-case scheme HTTP://', () => `HTTP://${O()}/x.exe`, 'GET'],
    ['mixed-case scheme hTTp://', () => `hTTp://${O()}/x.exe`, 'GET'],
    ['https:// absolute-form without CONNECT', () => `https://${O()}/x.exe`, 'GET'],
    ['ftp://', () => 'ftp://x/', 'GET'],
    ['port out of range', () => `http://127.0.0.1:99999/x.exe`, 'GET'],
  ];
  for (const [name, target, method] of shapes) {
    it(`${method} ${name}: 400, an audit line (BAD_REQUEST), the process alive and serving`, async () => {
      const t = target();
      const before = records().length;
      const r = await rawClient(gate.port, `${method} ${t} HTTP/1.1\r\nHost: ${O()}\r\nConnection: close\r\n\r\n`, 5000);
      const rs = parseResponses(r.data);
      expect(rs[0]?.status, r.data.toString('latin1').slice(0, 200)).toBe(400);
      expect(r.data.includes(flameMark)).toBe(false);
      const recs = await waitFor(() => { const x = records().slice(before).filter((x) => x.status === 400); return x.length ? x : undefined; }, 3000);
      // An http:// target reaches the gate as its path (the library rewrote it).
      const url = t.startsWith('http://') ? t.replace(/^http:\/\/[^/]+/, '') : t;
      expect(recs?.[0]).toMatchObject({ kind: 'transfer', method, url, host: '127.0.0.1', served: 'blocked', status: 400, verdict: 'block' });
      expect(recs![0]!.reasons.map((x) => x.code)).toEqual(['BAD_REQUEST']);
      expect(gate.child.exitCode).toBeNull();
      await legitimate();
    });
  }

  // Shapes Node's HTTP parser refuses itself (400, no request ever reaches the gate, so no audit
  // line), or that parse into something odd: any clean answer, never a crash or a payload byte.
  const odd: [string, () => string][] = [
    ['a bare name', () => 'x.exe'],
    ['http:/ with one slash', () => `http:/127.0.0.1:${origin.port}/x.exe`],
    ['authority-form on GET', () => `127.0.0.1:${origin.port}`],
    ['a query only', () => '?x=1'],
    ['a percent-encoded slash', () => '%2Fx.exe'],
    ['port not a number', () => `http://127.0.0.1:0x50/x.exe`],
    ['empty host', () => `http://:${origin.port}/x.exe`],
    ['unclosed IPv6 literal', () => `http://[::1/x.exe`],
    ['double slash path', () => `//127.0.0.1:${origin.port}/x.exe`],
    ['userinfo only', () => `http://@/x.exe`],
  ];
  for (const [name, target] of odd) {
    it(`GET ${name}: a clean refusal or a verdict, never a crash or flame.exe's bytes`, async () => {
      const r = await rawClient(gate.port, `GET ${target()} HTTP/1.1\r\nHost: ${O()}\r\nConnection: close\r\n\r\n`, 5000);
      const rs = parseResponses(r.data);
      expect(rs.length, r.data.toString('latin1').slice(0, 200)).toBeGreaterThanOrEqual(1);
      expect([400, 403, 404, 500, 502, 504]).toContain(rs[0]!.status);
      expect(r.data.includes(flameMark)).toBe(false);
      expect(gate.child.exitCode).toBeNull();
      await legitimate();
    });
  }

  it('all of them at once, beside a slow legitimate download: it completes byte-identical, and /metrics counts no internal error', async () => {
    const slow = proxyRequest(gate.port, origin.url('/slow-good.exe'), { timeoutMs: 30_000 });
    await Promise.all([...shapes.map(([, t, m]) => [t(), m] as const), ...odd.map(([, t]) => [t(), 'GET'] as const)].map(([t, m]) =>
      rawClient(gate.port, `${m} ${t} HTTP/1.1\r\nHost: ${O()}\r\nConnection: close\r\n\r\n`, 5000)));
    const r = await slow;
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(good));
    expect(gate.child.exitCode).toBeNull();
    const metrics = await adminGet(gate.adminPort, '/metrics');
    expect(metrics).toMatch(/^patchgate_transfers_total\{verdict="block",reason="BAD_REQUEST"\} \d+$/m);
    // The guards are the last resort: a malformed target is refused before anything can throw.
    expect(metrics).toMatch(/^patchgate_internal_errors_total\{where="request"\} 0$/m);
  });
});

describe('defence in depth: an exception while handling one request ends that request, not the gate', () => {
  it('a fault injected into the rules lookup: 500 for that request, counted in patchgate_internal_errors_total, the next download served', async () => {
    const { startGate, quietConsole } = await import('../support/gateHarness.js');
    const { GateMetrics } = await import('../../src/metrics/gateMetrics.js');
    const restore = quietConsole();
    const lines: string[] = [];
    const metrics = new GateMetrics({ log: (l) => lines.push(l) });
    const g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], observer: metrics });
    try {
      // The fault: the rules lookup throws for one path (a stand-in for any bug reachable from a request).
      const rules = (g.gate as unknown as { o: { hostRules: { decide: (h: string, p: string) => unknown } } }).o.hostRules;
      const decide = rules.decide.bind(rules);
      rules.decide = (h, p) => { if (p === '/boom.exe') throw new Error('injected fault'); return decide(h, p); };
      const r = await proxyRequest(g.port, origin.url('/boom.exe'));
      expect(r.status).toBe(500);
      expect(r.body.includes(flameMark)).toBe(false);
      const text = await metrics.text();
      expect(text).toMatch(/^patchgate_internal_errors_total\{where="request"\} 1$/m);
      expect(lines.join('\n')).toMatch(/internal error while handling a request: injected fault/);
      expect(metrics.faults.internal).toMatchObject({ count: 1, last: { where: 'request', message: 'injected fault' } });
      const ok = await proxyRequest(g.port, origin.url('/good.exe'));
      expect(ok.status).toBe(200);
      expect(sha256(ok.body)).toBe(sha256(good));
    } finally {
      await g.dispose();
      restore();
    }
  });
});

describe('defence in depth: serving a verdict', () => {
  it('a fault injected where the outcome is served (a promise callback, outside any library entry): blocked INTERNAL_ERROR, counted where="response", the gate serves on', async () => {
    const { startGate, quietConsole } = await import('../support/gateHarness.js');
    const { GateMetrics } = await import('../../src/metrics/gateMetrics.js');
    const { HeldDownload } = await import('../../src/proxy/heldDownload.js');
    const restore = quietConsole();
    const metrics = new GateMetrics({ log: () => {} });
    const g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], observer: metrics });
    const proto = HeldDownload.prototype as unknown as { inspected: (this: { key: string }, ...a: unknown[]) => void };
    const inspected = proto.inspected;
    proto.inspected = function (this: { key: string }, ...a: unknown[]) {
      if (this.key.endsWith('/good.exe?boom')) throw new Error('injected fault');
      return inspected.apply(this, a);
    };
    try {
      const r = await proxyRequest(g.port, origin.url('/good.exe?boom'));
      expect(r.status).toBe(403);
      expect(r.headers['x-patchgate-reason']).toBe('INTERNAL_ERROR');
      expect(await metrics.text()).toMatch(/^patchgate_internal_errors_total\{where="response"\} 1$/m);
      const ok = await proxyRequest(g.port, origin.url('/good.exe'));
      expect(ok.status).toBe(200);
      expect(sha256(ok.body)).toBe(sha256(good));
    } finally {
      proto.inspected = inspected;
      await g.dispose();
      restore();
    }
  });
});

describe('defence in depth: the ICAP and admin entries', () => {
  it('an exception while accepting an ICAP connection closes that connection only; counted where="icap"', async () => {
    const { startIcap, IcapClient } = await import('../support/icapHarness.js');
    const { GateMetrics } = await import('../../src/metrics/gateMetrics.js');
    const metrics = new GateMetrics({ log: () => {} });
    const icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], observer: metrics });
    try {
      const peers = (icap.service as unknown as { peers: { allows: (a?: string) => boolean } }).peers;
      const allows = peers.allows.bind(peers);
      let armed = true;
      peers.allows = (a) => { if (armed) { armed = false; throw new Error('injected fault'); } return allows(a); };
      const first = new IcapClient(icap.port);
      expect(await first.waitClosed(3000)).toBe(true);
      expect(await metrics.text()).toMatch(/^patchgate_internal_errors_total\{where="icap"\} 1$/m);
      const second = new IcapClient(icap.port);
      expect((await second.options()).status).toBe(200);
      second.close();
    } finally {
      await icap.dispose();
    }
  });

  it('an exception while answering /healthz: 500 for that request, counted where="admin"; /metrics still answers', async () => {
    const { startAdminServer } = await import('../../src/metrics/adminServer.js');
    const { GateMetrics } = await import('../../src/metrics/gateMetrics.js');
    const metrics = new GateMetrics({ log: () => {} });
    const admin = await startAdminServer({ host: '127.0.0.1', port: 0, metrics, health: () => { throw new Error('injected fault'); }, onFault: (e) => metrics.fault('admin', e) });
    try {
      const { directRequest } = await import('../support/gateHarness.js');
      const r = await directRequest(admin.port, '/healthz');
      expect(r.status).toBe(500);
      expect(await adminGet(admin.port, '/metrics')).toMatch(/^patchgate_internal_errors_total\{where="admin"\} 1$/m);
    } finally {
      admin.close();
    }
  });
});
