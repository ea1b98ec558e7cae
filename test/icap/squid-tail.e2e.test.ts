/**
 * Tail hold behind a real Squid 5.7 (issue #18): `patchgate icap` with `hold: tail` answers RESPMOD
 * with the adapted response under way before the verdict (after the 100 Continue), its body flowing
 * back as the virgin body arrives and its end withheld until the verdict. Squid runs what
 * `--print-squid-config` prints for a host held whole, i.e. with the delay pool against bug 5352 for
 * every response from the request on (what a tail-mode host printed without it needs when it serves
 * payloads without a Content-Length, which are held whole with no adapted head before their verdict:
 * docs/icap-squid.md; the printed tail-mode configuration is test/icap/squid-stall.e2e.test.ts's),
 * with a memory cache. What the client sees: an allowed payload
 * byte-identical; a forged one as a transfer cut short of its Content-Length; Squid keeps no copy
 * of the cut object, and does not suspend the ICAP service for it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fx } from '../support/fixtures.js';
import { type Origin, proxyRequest, send, startOrigin, syntheticBytes, syntheticPe } from '../support/gateHarness.js';
import { startIcap, type IcapHandle } from '../support/icapHarness.js';
import { startSquid, type SquidHandle } from '../support/squidHarness.js';
import { TAIL_HOLD_BYTES } from '../../src/inspect/tailHold.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let origin: Origin;
let icap: IcapHandle;
let squid: SquidHandle;
const pe = syntheticPe(6 * MiB, 31);
const good = syntheticBytes(pe);
const bad = syntheticBytes(syntheticPe(6 * MiB, 31, pe.textOffset + 4321));
const LIMIT = pe.certTableOffset - TAIL_HOLD_BYTES;

beforeAll(async () => {
  origin = await startOrigin();
  // Cacheable for a day: only the cut, not the headers, can keep Squid from storing the forged one.
  const headers = { 'cache-control': 'public, max-age=86400' };
  origin.route('/good.exe', send(good, { headers }));
  origin.route('/bad.exe', send(bad, { headers }));
  origin.route('/bad-chunked.exe', send(bad, { headers, contentLength: null }));
  for (const name of ['good-big.msi', 'tampered-big.msi', 'flame.appx']) origin.route(`/${name}`, send(readFileSync(fx(name)), { headers }));
  icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }], limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 10_000 } });
  squid = await startSquid({ icapPorts: [icap.port], updateHosts: ['127.0.0.1'], cache: true });
}, 60_000);

afterAll(async () => {
  await squid?.stop();
  await icap?.dispose();
  await origin?.close();
});

describe('Squid 5.7 + patchgate icap, hold: tail', () => {
  it('delivers an allowed PE byte-identical, streamed (X-Patchgate-Hold: tail)', async () => {
    const r = await proxyRequest(squid.port, origin.url('/good.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.headers['x-patchgate-hold']).toBe('tail');
    expect(sha256(r.body)).toBe(sha256(good));
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/good.exe') && x.verdict === 'allow');
    expect(rec).toMatchObject({ hold: 'tail', served: 'full', icapStatus: 200 });
  });

  it('a forged PE: the client\'s transfer is cut short of its Content-Length, without the withheld end', async () => {
    const r = await proxyRequest(squid.port, origin.url('/bad.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(Number(r.headers['content-length'])).toBe(bad.byteLength);
    expect(r.body.byteLength).toBeLessThanOrEqual(LIMIT);
    expect(r.body.equals(bad.subarray(0, r.body.byteLength))).toBe(true);
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/bad.exe') && x.verdict === 'block');
    expect(rec).toMatchObject({ hold: 'tail', served: 'blocked', bytesToClient: LIMIT });
  });

  it('a 3 MiB MSI (its format cannot stream): the response starts before the verdict, its whole body after', async () => {
    const msi = readFileSync(fx('good-big.msi'));
    const r = await proxyRequest(squid.port, origin.url('/good-big.msi'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(sha256(r.body)).toBe(sha256(msi));
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/good-big.msi') && x.verdict === 'allow');
    expect(rec).toMatchObject({ hold: 'tail', served: 'full', format: 'msi' });
  });

  it.each(['tampered-big.msi', 'flame.appx'])('a forged %s: a cut transfer with no body byte at all', async (name) => {
    const r = await proxyRequest(squid.port, origin.url(`/${name}`), { timeoutMs: 30_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.body.byteLength).toBe(0);
    const [rec] = await icap.waitRecords((x) => x.url === origin.url(`/${name}`) && x.verdict === 'block');
    expect(rec).toMatchObject({ hold: 'tail', served: 'blocked', bytesToClient: 0 });
  });

  it('a body without a length is held whole (a short adapted body would look complete in chunked framing): the 403 page', async () => {
    const r = await proxyRequest(squid.port, origin.url('/bad-chunked.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(403);
    expect(r.headers['x-patchgate-hold']).toBeUndefined();
    const [rec] = await icap.waitRecords((x) => x.url === origin.url('/bad-chunked.exe'));
    expect(rec).toMatchObject({ served: 'blocked', hold: 'whole' });
    expect(rec!.reasons.map((x) => x.code)).toContain('DIGEST_MISMATCH');
  });

  it('after those blocks the ICAP service is not suspended, and Squid kept no copy of a cut object (but does of the allowed one)', async () => {
    const goodHits = origin.hits('/good.exe');
    const again = await proxyRequest(squid.port, origin.url('/good.exe'), { timeoutMs: 30_000 });
    expect(again.status).toBe(200);
    expect(sha256(again.body)).toBe(sha256(good));
    expect(origin.hits('/good.exe')).toBe(goodHits); // from Squid's cache
    const hits = origin.hits('/bad.exe');
    const before = icap.records().filter((x) => x.url === origin.url('/bad.exe')).length;
    const r = await proxyRequest(squid.port, origin.url('/bad.exe'), { timeoutMs: 30_000 });
    expect(r.status).toBe(200); // not Squid's 500 of a suspended service
    expect(r.complete).toBe(false);
    expect(origin.hits('/bad.exe')).toBe(hits + 1);
    await icap.waitRecords((x) => x.url === origin.url('/bad.exe'), before + 1);
    const fresh = await proxyRequest(squid.port, origin.url('/good.exe') + '?fresh', { timeoutMs: 30_000 });
    expect(sha256(fresh.body)).toBe(sha256(good));
  });
});
