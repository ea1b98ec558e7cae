/**
 * /metrics on the admin address: the exposition parses with a Prometheus text-format parser, and
 * its numbers match the traffic this test sends through a real gate (and the audit log it wrote).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { fx } from '../support/fixtures.js';
import {
  type GateHandle,
  type Origin,
  connectThrough,
  proxyRequest,
  quietConsole,
  send,
  startGate,
  startOrigin,
  syntheticBytes,
  syntheticPe,
  waitFor,
} from '../support/gateHarness.js';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';
import { startAdminServer } from '../../src/metrics/adminServer.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';

interface Sample { labels?: Record<string, string>; value?: string; buckets?: Record<string, string>; count?: string; sum?: string }
interface Family { name: string; help: string; type: string; metrics: Sample[] }

let restoreConsole: () => void;
let origin: Origin;
let g: GateHandle;
let metrics: GateMetrics;
let admin: http.Server & { port: number };

function get(path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: admin.port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
    }).on('error', reject);
  });
}

async function scrape(): Promise<Map<string, Family>> {
  const r = await get('/metrics');
  expect(r.status).toBe(200);
  expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
  const families = parsePrometheusTextFormat(r.body) as Family[];
  return new Map(families.map((f) => [f.name, f]));
}

/** The value of one series (labels matched exactly); 0 when the series is absent. */
function value(m: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const f = m.get(name);
  if (!f) throw new Error(`no metric ${name}`);
  const s = f.metrics.find((x) => JSON.stringify(x.labels ?? {}) === JSON.stringify(labels));
  return s ? Number(s.value) : 0;
}

beforeAll(async () => {
  restoreConsole = quietConsole();
  origin = await startOrigin();
  metrics = new GateMetrics({ rulesSha256: 'test' });
  g = await startGate({
    hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }, { pattern: 'localhost', mode: 'pinned' }],
    limits: { idleTimeoutMs: 500, cacheTtlMs: 60_000, memoryHoldBytes: 64 * 1024 },
    nonPayload: 'pass',
    observer: metrics,
  });
  metrics.watch(g.gate);
  g.audit.subscribe((r) => metrics.observeRecord(r));
  admin = await startAdminServer({ host: '127.0.0.1', port: 0, metrics, health: () => ({ status: 'ok', audit: g.audit.head }) });
});

afterAll(async () => {
  admin?.close();
  await g?.dispose();
  await origin?.close();
  restoreConsole?.();
});

describe('/metrics', () => {
  it('counts what the traffic did: verdicts and reasons, bytes inspected, verify latency, holds, spool, upstream errors', async () => {
    const good = readFileSync(fx('good.exe'));
    const flame = readFileSync(fx('flame.exe'));
    const ranged = syntheticBytes(syntheticPe(512 * 1024, 7));
    const slow = syntheticBytes(syntheticPe(300 * 1024, 8));
    const cut = syntheticBytes(syntheticPe(200 * 1024, 9));
    const stall = syntheticBytes(syntheticPe(200 * 1024, 10));
    origin.route('/m/good.exe', send(good));
    origin.route('/m/flame.exe', send(flame));
    origin.route('/m/ranged.exe', send(ranged, { chunk: 64 * 1024 }));
    origin.route('/m/slow.exe', send(slow, { chunk: 32 * 1024, delayMs: 60 }));
    origin.route('/m/cut.exe', send(cut, { chunk: 16 * 1024, stopAfter: { bytes: 100_000, then: 'destroy' } }));
    origin.route('/m/stall.exe', send(stall, { chunk: 10_000, stopAfter: { bytes: 50_000, then: 'hang' } }));
    origin.route('/m/meta.xml', send(Buffer.from('<?xml version="1.0"?><updates/>\n'), { headers: { 'content-type': 'text/xml' } }));

    // Before any traffic: the series exist, at zero.
    const m0 = await scrape();
    expect(value(m0, 'patchgate_transfers_total', { verdict: 'allow', reason: 'none' })).toBe(0);
    expect(value(m0, 'patchgate_upstream_errors_total', { reason: 'TIMEOUT' })).toBe(0);
    expect(value(m0, 'patchgate_holds_in_flight')).toBe(0);
    expect(value(m0, 'patchgate_rules_info', { sha256: 'test' })).toBe(1);

    expect((await proxyRequest(g.port, origin.url('/m/good.exe'))).status).toBe(200); // allow
    const fl = await proxyRequest(g.port, origin.url('/m/flame.exe')); // block
    expect(fl.status).toBe(403);
    expect((await proxyRequest(g.port, origin.url('/m/ranged.exe'), { method: 'HEAD' })).status).toBe(200); // pass (HEAD before the download)
    for (const range of ['bytes=0-65535', 'bytes=65536-131071', 'bytes=131072-']) {
      expect((await proxyRequest(g.port, origin.url('/m/ranged.exe'), { headers: { range } })).status).toBe(206); // allow x3, one download
    }
    expect((await proxyRequest(g.port, origin.url('/m/ranged.exe'), { method: 'HEAD' })).headers['x-patchgate-verdict']).toBe('allow'); // allow (cached)
    expect((await proxyRequest(g.port, origin.url('/m/cut.exe'))).status).toBe(403); // block UPSTREAM_ERROR
    expect((await proxyRequest(g.port, origin.url('/m/stall.exe'))).status).toBe(403); // block TIMEOUT
    expect((await proxyRequest(g.port, origin.url('/m/meta.xml'))).status).toBe(200); // pass
    const tunnel = await connectThrough(g.port, `localhost:${origin.port}`); // connect, pinned: pass
    expect(tunnel.status).toBe(200);
    tunnel.socket?.destroy();

    // A slow download: while it is held, one hold is in flight and its bytes are in the spool.
    const cachedBefore = good.byteLength + ranged.byteLength;
    const slowDone = proxyRequest(g.port, origin.url('/m/slow.exe'));
    const during = await waitFor(async () => {
      const m = await scrape();
      return value(m, 'patchgate_holds_in_flight') === 1 && value(m, 'patchgate_spool_bytes') > cachedBefore + 64 * 1024 ? m : undefined;
    }, 5000);
    expect(during, 'a scrape saw the slow hold in flight').toBeTruthy();
    expect((await slowDone).status).toBe(200); // allow

    const records = await g.waitRecords(() => true, 12);
    const m = await scrape();
    const flameReasons = [...new Set(records.find((r) => r.url.endsWith('/m/flame.exe'))!.reasons.map((r) => r.code))];
    expect(flameReasons.sort()).toEqual(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM']);

    // Responses, by verdict and first reason: what was sent above.
    expect(value(m, 'patchgate_transfers_total', { verdict: 'allow', reason: 'none' })).toBe(1 + 3 + 1 + 1);
    expect(value(m, 'patchgate_transfers_total', { verdict: 'pass', reason: 'none' })).toBe(2);
    expect(value(m, 'patchgate_transfers_total', { verdict: 'block', reason: fl.headers['x-patchgate-reason'] ? String(fl.headers['x-patchgate-reason']).split(',')[0]! : '?' })).toBe(1);
    expect(value(m, 'patchgate_transfers_total', { verdict: 'block', reason: 'UPSTREAM_ERROR' })).toBe(1);
    expect(value(m, 'patchgate_transfers_total', { verdict: 'block', reason: 'TIMEOUT' })).toBe(1);
    for (const code of flameReasons) expect(value(m, 'patchgate_block_reasons_total', { reason: code }), code).toBe(1);
    expect(value(m, 'patchgate_connects_total', { verdict: 'pass' })).toBe(1);
    // And the same, counted from the audit log.
    const transfers = records.filter((r) => r.kind === 'transfer');
    const total = m.get('patchgate_transfers_total')!.metrics.reduce((a, s) => a + Number(s.value), 0);
    expect(total).toBe(transfers.length);
    for (const verdict of ['allow', 'block', 'pass'] as const) {
      const fromMetrics = m.get('patchgate_transfers_total')!.metrics.filter((s) => s.labels?.verdict === verdict).reduce((a, s) => a + Number(s.value), 0);
      expect(fromMetrics, verdict).toBe(transfers.filter((r: AuditRecord) => r.verdict === verdict).length);
    }
    expect(value(m, 'patchgate_served_bytes_total')).toBe(transfers.reduce((a, r) => a + (r.bytesToClient ?? 0), 0));

    // Verifications: once per download (good, flame, ranged, slow), not per response.
    expect(value(m, 'patchgate_verifications_total', { verdict: 'allow' })).toBe(3);
    expect(value(m, 'patchgate_verifications_total', { verdict: 'block' })).toBe(1);
    const hist = m.get('patchgate_verify_duration_seconds')!;
    expect(hist.type).toBe('HISTOGRAM');
    expect(Number(hist.metrics[0]!.count)).toBe(4);
    expect(Number(hist.metrics[0]!.buckets!['+Inf'])).toBe(4);
    expect(Number(hist.metrics[0]!.sum)).toBeGreaterThan(0);

    // Bytes through the verifier: the four whole payloads, and what arrived of the cut and stalled ones.
    expect(value(m, 'patchgate_inspected_bytes_total')).toBe(good.byteLength + flame.byteLength + ranged.byteLength + slow.byteLength + 100_000 + 50_000);
    expect(value(m, 'patchgate_upstream_errors_total', { reason: 'UPSTREAM_ERROR' })).toBe(1);
    expect(value(m, 'patchgate_upstream_errors_total', { reason: 'TIMEOUT' })).toBe(1);

    // Nothing in flight; the spool holds the verified copies still cached (good, ranged, slow).
    expect(value(m, 'patchgate_holds_in_flight')).toBe(0);
    expect(value(m, 'patchgate_spool_bytes')).toBe(good.byteLength + ranged.byteLength + slow.byteLength);

    // HELP and TYPE for every family; counters are counters.
    for (const name of ['patchgate_transfers_total', 'patchgate_inspected_bytes_total', 'patchgate_upstream_errors_total']) expect(m.get(name)!.type).toBe('COUNTER');
    for (const name of ['patchgate_holds_in_flight', 'patchgate_spool_bytes']) expect(m.get(name)!.type).toBe('GAUGE');
    for (const f of m.values()) expect(f.help.length, f.name).toBeGreaterThan(0);
  });

  it('each gate has its own registry: a second GateMetrics starts at zero', async () => {
    const other = new GateMetrics();
    const text = await other.text();
    const fam = new Map((parsePrometheusTextFormat(text) as Family[]).map((f) => [f.name, f]));
    expect(value(fam, 'patchgate_transfers_total', { verdict: 'allow', reason: 'none' })).toBe(0);
    expect(value(fam, 'patchgate_inspected_bytes_total')).toBe(0);
  });

  it('/healthz beside it; anything else is 404', async () => {
    const h = await get('/healthz');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toMatchObject({ status: 'ok', audit: { hash: g.audit.head.hash } });
    expect((await get('/nope')).status).toBe(404);
  });
});
