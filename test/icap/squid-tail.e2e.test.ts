/**
 * Tail hold behind a real Squid 5.7 (issue #18): `patchgate icap` with `hold: tail` answers RESPMOD
 * with the adapted body flowing back as the virgin body arrives, its end withheld until the verdict.
 * Squid runs WITHOUT the delay pool that works around Squid bug 5352 (RESPMOD stalls when its
 * 64 KiB virgin-body pipe fills before the adapted body flows). What the client sees: an allowed
 * payload byte-identical, a forged one as a transfer cut short of its Content-Length (Squid aborts
 * it when the ICAP response stops before its last chunk), and Squid keeps no copy of the cut object.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { type Origin, proxyRequest, send, startOrigin, syntheticBytes, syntheticPe } from '../support/gateHarness.js';
import { startIcap, type IcapHandle } from '../support/icapHarness.js';
import { startSquid, type SquidHandle } from '../support/squidHarness.js';
import { TAIL_HOLD_BYTES } from '../../src/inspect/tailHold.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let origin: Origin;
let icap: IcapHandle;
let squid: SquidHandle;
const pe = syntheticPe(24 * MiB, 31);
const good = syntheticBytes(pe);
const bad = syntheticBytes(syntheticPe(24 * MiB, 31, pe.textOffset + 4321));
const LIMIT = pe.certTableOffset - TAIL_HOLD_BYTES;

beforeAll(async () => {
  origin = await startOrigin();
  // Cacheable for a day: only the cut, not the headers, can keep Squid from storing the forged one.
  const headers = { 'cache-control': 'public, max-age=86400' };
  origin.route('/good.exe', send(good, { headers }));
  origin.route('/bad.exe', send(bad, { headers }));
  icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }], limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 10_000 } });
  squid = await startSquid({ icapPorts: [icap.port], updateHosts: ['127.0.0.1'], squid5Workaround: false, cache: true });
}, 60_000);

afterAll(async () => {
  await squid?.stop();
  await icap?.dispose();
  await origin?.close();
});

describe('Squid 5.7 + patchgate icap, tail hold, no delay pool', () => {
  it('delivers a 24 MiB allowed payload byte-identical, without the bug 5352 stall', async () => {
    expect(squid.config).not.toMatch(/delay_pools/);
    const t0 = Date.now();
    const r = await proxyRequest(squid.port, origin.url('/good.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.headers['x-patchgate-hold']).toBe('tail');
    expect(sha256(r.body)).toBe(sha256(good));
    expect(Date.now() - t0).toBeLessThan(10_000);
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/good.exe') && x.verdict === 'allow');
    expect(rec).toMatchObject({ hold: 'tail', served: 'full', icapStatus: 200 });
  });

  it('a forged payload: the client\'s transfer is cut short of its Content-Length, without the withheld end', async () => {
    const r = await proxyRequest(squid.port, origin.url('/bad.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(Number(r.headers['content-length'])).toBe(bad.byteLength);
    expect(r.body.byteLength).toBeLessThanOrEqual(LIMIT);
    expect(r.body.equals(bad.subarray(0, r.body.byteLength))).toBe(true);
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/bad.exe') && x.verdict === 'block');
    expect(rec).toMatchObject({ hold: 'tail', served: 'blocked', bytesToClient: LIMIT });
  });

  it('Squid keeps no copy of the cut object: the next request goes to the origin and patchgate again', async () => {
    // The cache works: the allowed payload, complete, is served again from Squid's copy.
    const goodHits = origin.hits('/good.exe');
    const again = await proxyRequest(squid.port, origin.url('/good.exe'), { timeoutMs: 30_000 });
    expect(sha256(again.body)).toBe(sha256(good));
    expect(origin.hits('/good.exe')).toBe(goodHits);
    const hits = origin.hits('/bad.exe');
    const before = icap.records().filter((x) => x.url === origin.url('/bad.exe')).length;
    const r = await proxyRequest(squid.port, origin.url('/bad.exe'), { timeoutMs: 30_000 });
    expect(r.complete).toBe(false);
    expect(origin.hits('/bad.exe')).toBe(hits + 1);
    await icap.waitRecords((x) => x.url === origin.url('/bad.exe'), before + 1);
  });
});
