/**
 * Verified entities kept in memory for further requests share one budget with held payloads (memoryTotalBytes):
 * past it the oldest are let go before their TTL, so memory no longer grows with the request rate.
 * A request for an entity let go is fetched and verified again; the newest are still served from
 * the verified copy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin, syntheticBytes, syntheticPe } from '../support/gateHarness.js';
import type { HeldDownload } from '../../src/proxy/heldDownload.js';

const KiB = 1024;
let origin: Origin;
let g: GateHandle;
let restore: () => void;
beforeAll(async () => {
  restore = quietConsole();
  origin = await startOrigin();
  g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 256 * KiB, cacheTtlMs: 60_000, memoryTotalBytes: 350 * KiB } });
});
afterAll(async () => { await g?.dispose(); await origin?.close(); restore?.(); });

describe('lingering verified entities in memory', () => {
  it('stay within memoryTotalBytes: the oldest are let go and fetched again, the newest are served from the verified copy', async () => {
    const files = Array.from({ length: 6 }, (_, i) => syntheticBytes(syntheticPe(100 * KiB, 40 + i)));
    files.forEach((b, i) => origin.route(`/lg/${i}.exe`, send(b)));
    for (let i = 0; i < files.length; i++) {
      const r = await proxyRequest(g.port, origin.url(`/lg/${i}.exe`));
      expect(r.status).toBe(200);
      expect(createHash('sha256').update(r.body).digest('hex')).toBe(createHash('sha256').update(files[i]!).digest('hex'));
    }
    const downloads = (g.gate as unknown as { cache: { downloads: Map<string, HeldDownload> } }).cache.downloads;
    const inMemory = [...downloads.values()].reduce((n, d) => n + d.inMemoryBytes, 0);
    expect(g.gate.spoolMemoryBytes).toBeLessThanOrEqual(350 * KiB);
    expect(inMemory).toBeGreaterThan(0);
    expect(inMemory).toBeLessThanOrEqual(350 * KiB);
    // The newest is still cached: no second upstream fetch.
    expect((await proxyRequest(g.port, origin.url('/lg/5.exe'))).status).toBe(200);
    expect(origin.hits('/lg/5.exe')).toBe(1);
    // The oldest was let go: fetched (and verified) again, same bytes.
    const again = await proxyRequest(g.port, origin.url('/lg/0.exe'));
    expect(again.status).toBe(200);
    expect(again.body.equals(files[0]!)).toBe(true);
    expect(origin.hits('/lg/0.exe')).toBe(2);
  });
});
