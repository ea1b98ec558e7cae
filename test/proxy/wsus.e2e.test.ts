/**
 * A WSUS server's own upstream synchronisation, gated: WSUS's proxy setting points at patchgate,
 * and WSUS downloads update files the way BITS does (HEAD for the size, then sequential Range
 * GETs). Everything on 127.0.0.1: an origin standing in for Microsoft's content hosts, the gate
 * in-process, and a client that speaks to the gate as a proxy (absolute-form requests).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, fx } from '../support/fixtures.js';
import {
  type GateHandle,
  type Origin,
  type ProxyResponse,
  proxyRequest,
  quietConsole,
  send,
  startGate,
  startOrigin,
  syntheticBytes,
  syntheticPe,
} from '../support/gateHarness.js';

const RANGE = 64 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** What BITS sends when WSUS downloads content (BITS 7.8 on Windows Server). */
const BITS_HEADERS = { 'user-agent': 'Microsoft BITS/7.8', accept: '*/*' };

let restoreConsole: () => void;
let origin: Origin;
let g: GateHandle;

beforeAll(async () => {
  restoreConsole = quietConsole();
  origin = await startOrigin();
  g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { cacheTtlMs: 30_000, memoryHoldBytes: 256 * 1024 } });
});

afterAll(async () => {
  await g?.dispose();
  await origin?.close();
  restoreConsole?.();
});

/** BITS-style download through the gate: HEAD, then 64 KiB ranges in order until the size HEAD gave. */
async function bitsDownload(url: string): Promise<{ head: ProxyResponse; ranges: ProxyResponse[]; body: Buffer }> {
  const head = await proxyRequest(g.port, url, { method: 'HEAD', headers: BITS_HEADERS });
  expect(head.status, `HEAD ${url}`).toBe(200);
  const size = Number(head.headers['content-length']);
  expect(size).toBeGreaterThan(0);
  const ranges: ProxyResponse[] = [];
  for (let start = 0; start < size; start += RANGE) {
    const end = Math.min(size, start + RANGE) - 1;
    const r = await proxyRequest(g.port, url, { headers: { ...BITS_HEADERS, range: `bytes=${start}-${end}` } });
    expect(r.status, `${url} bytes=${start}-${end}: ${r.body.toString().slice(0, 200)}`).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes ${start}-${end}/${size}`);
    expect(r.body.byteLength).toBe(end - start + 1);
    ranges.push(r);
  }
  return { head, ranges, body: Buffer.concat(ranges.map((r) => r.body)) };
}

describe('WSUS upstream synchronisation through the gate', () => {
  const catalog: { path: string; bytes: () => Buffer }[] = [
    // A signed fixture smaller than one range, and a 1.2 MiB signed PE that spools to disk (19 ranges).
    { path: '/c/msdownload/update/software/defu/2026/06/am_delta_patch_1.431.exe', bytes: () => readFileSync(fx('good.exe')) },
    { path: '/d/msdownload/update/software/secu/2026/06/windows10.0-kb5099999-x64_0123456789abcdef.exe', bytes: () => syntheticBytes(syntheticPe(1_200_000, 42)) },
  ];

  it('HEAD then sequential 64 KiB ranges: byte-identical, every range allowed, one upstream fetch, one audit record per response', async () => {
    for (const item of catalog) {
      const bytes = item.bytes();
      origin.route(item.path, send(bytes, { chunk: 16 * 1024 }));
      const url = origin.url(item.path);
      const { head, ranges, body } = await bitsDownload(url);

      expect(sha256(body)).toBe(sha256(bytes));
      expect(body.equals(bytes)).toBe(true);
      expect(Number(head.headers['content-length'])).toBe(bytes.byteLength);
      for (const r of ranges) {
        expect(r.headers['x-patchgate-verdict']).toBe('allow');
        expect(r.headers['x-patchgate-audit-id']).toMatch(/^[0-9a-f-]{36}$/);
      }
      // The HEAD came first, before any download: relayed from upstream with an audit id, verdict "pass" (no payload yet).
      expect(head.headers['x-patchgate-audit-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(head.headers['x-patchgate-verdict']).toBe('pass');
      expect(ranges.length).toBe(Math.ceil(bytes.byteLength / RANGE));

      // The origin sent the entity once, whole (never a range), whatever the number of ranges.
      expect(origin.hits(item.path, 'GET')).toBe(1);
      expect(origin.hits(item.path, 'HEAD')).toBe(1);
      for (const l of origin.log.filter((x) => x.path === item.path)) expect(l.headers.range).toBeUndefined();

      // One audit record per response, by id; the ranges say allow, with the payload's digest.
      const responses = [head, ...ranges];
      const records = await g.waitRecords((r) => r.url === url, responses.length);
      expect(records).toHaveLength(responses.length);
      expect(records.map((r) => r.id).sort()).toEqual(responses.map((r) => String(r.headers['x-patchgate-audit-id'])).sort());
      const byId = new Map(records.map((r) => [r.id, r]));
      expect(byId.get(String(head.headers['x-patchgate-audit-id']))).toMatchObject({ method: 'HEAD', served: 'head', verdict: 'pass', inspected: false, status: 200 });
      for (const [i, r] of ranges.entries()) {
        const rec = byId.get(String(r.headers['x-patchgate-audit-id']))!;
        expect(rec).toMatchObject({ method: 'GET', served: 'range', verdict: 'allow', inspected: true, status: 206, sha256: sha256(bytes), bytes: bytes.byteLength, bytesToClient: r.body.byteLength, format: 'pe' });
        expect(rec.range).toBe(`bytes=${i * RANGE}-${Math.min(bytes.byteLength, (i + 1) * RANGE) - 1}`);
        // The first range started the (only) download; the others were served from the verified copy.
        expect(rec.shared, `range ${i}`).toBe(i === 0 ? undefined : true);
      }
    }

    // A second WSUS pass over the same file (a retry, another content server) while the copy is cached: no new fetch.
    const again = await bitsDownload(origin.url(catalog[1]!.path));
    expect(again.head.headers['x-patchgate-verdict']).toBe('allow');
    expect(origin.hits(catalog[1]!.path, 'GET')).toBe(1);

    // The audit log the sync produced verifies with `patchgate audit verify`.
    g.audit.flush();
    const v = spawnSync(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'audit', 'verify', g.auditFile], { encoding: 'utf8', timeout: 60_000 });
    expect(v.status, v.stdout + v.stderr).toBe(0);
    const lines = readFileSync(g.auditFile, 'utf8').trim().split('\n').length;
    expect(v.stdout).toContain(`intact: ${lines} lines in 1 file, head ${g.audit.head.hash}`);
  });
});
