/**
 * Digest threads: the two SHA-256 passes of a held payload run in a worker. The thread's digests
 * must be exactly the inline ones (ring wrap-around included); a verdict needs digests over the
 * same Authenticode ranges the proxy thread found; a thread that dies fails its holds closed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { DigestStream } from '../../src/verify/digestStream.js';
import { IncrementalVerifier, verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { DigestPool, RING_BYTES } from '../../src/inspect/digestPool.js';
import { AT, codes, fx, labPolicy } from '../support/fixtures.js';
import {
  type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin, syntheticBytes, syntheticPe,
} from '../support/gateHarness.js';

const MiB = 1024 * 1024;
let pool: DigestPool;
beforeAll(() => { pool = new DigestPool(1); });
afterAll(async () => { await pool?.close(); });

/** Feeds `bytes` in uneven chunks to both the external verifier and the job, honouring backpressure. */
async function feed(bytes: Buffer, v: IncrementalVerifier, job: ReturnType<DigestPool['job']>): Promise<void> {
  const sizes = [65536, 1, 300_000, 4097, RING_BYTES - 3];
  for (let at = 0, k = 0; at < bytes.length; k++) {
    const c = bytes.subarray(at, at + sizes[k % sizes.length]!);
    at += c.length;
    v.update(c);
    let drained: (() => void) | undefined;
    if (!job.update(c, () => drained?.())) await new Promise<void>((r) => { drained = r; });
  }
}

describe('DigestPool', () => {
  it('computes the inline digests exactly (several ring wrap-arounds), and the verdict matches the inline one', async () => {
    const policy = labPolicy();
    const bytes = syntheticBytes(syntheticPe(5 * MiB + 777, 21));
    const inline = verifyBytes(bytes, policy, { now: AT });
    expect(inline.verdict).toBe('allow');
    const v = new IncrementalVerifier(policy, { now: AT, digests: 'external' });
    const job = pool.job(policy);
    await feed(bytes, v, job);
    const d = await job.end();
    expect(d.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const verdict = v.finishWith(d);
    expect(verdict).toEqual(inline);
    expect(pool.activeJobs).toBe(0);
  });

  it('blocks when the digests do not match the bytes, or cover other ranges, or never came', async () => {
    const policy = labPolicy();
    const bytes = syntheticBytes(syntheticPe(2 * MiB, 22));
    const run = async (tamper: (d: Awaited<ReturnType<ReturnType<DigestPool['job']>['end']>>) => void) => {
      const v = new IncrementalVerifier(policy, { now: AT, digests: 'external' });
      const job = pool.job(policy);
      await feed(bytes, v, job);
      const d = await job.end();
      tamper(d);
      return v.finishWith(d);
    };
    expect((await run(() => {})).verdict).toBe('allow');
    const wrongDigest = await run((d) => { d.fileDigests.get('sha256')![0] ^= 1; });
    expect(codes(wrongDigest)).toContain('DIGEST_MISMATCH');
    const wrongRanges = await run((d) => { d.ranges![0] = [d.ranges![0]![0], d.ranges![0]![1] - 1]; });
    expect(wrongRanges.verdict).toBe('block');
    expect(codes(wrongRanges)).toEqual(['INTERNAL_ERROR']);
    const v = new IncrementalVerifier(policy, { now: AT, digests: 'external' });
    v.update(bytes);
    const none = v.finish();
    expect(none.verdict).toBe('block');
    expect(codes(none)).toEqual(['INTERNAL_ERROR']);
  });

  it('a digest thread that dies fails its jobs (end() rejects) and is replaced', async () => {
    const policy = labPolicy();
    const job = pool.job(policy);
    job.update(Buffer.alloc(1000, 1), () => {});
    await pool.workers[0]!.terminate();
    await expect(job.end()).rejects.toThrow(/digest thread/);
    const again = pool.job(policy);
    again.update(Buffer.from('abc'), () => {});
    expect((await again.end()).sha256).toBe(createHash('sha256').update('abc').digest('hex'));
  });
});

describe('the gate with a digest thread', () => {
  let origin: Origin;
  let g: GateHandle;
  let restore: () => void;
  beforeAll(async () => {
    restore = quietConsole();
    origin = await startOrigin();
    g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 256 * 1024 } });
  });
  afterAll(async () => { await g?.dispose(); await origin?.close(); restore?.(); });

  it('serves a big payload hashed by the thread; one changed byte is DIGEST_MISMATCH; a thread dying mid-body blocks the download', async () => {
    const good = syntheticBytes(syntheticPe(6 * MiB, 23));
    const bad = Buffer.from(good);
    bad[3 * MiB] ^= 0x40;
    origin.route('/dp/good.exe', send(good, { chunk: 256 * 1024 }));
    origin.route('/dp/bad.exe', send(bad, { chunk: 256 * 1024 }));
    origin.route('/dp/slow.exe', send(good, { chunk: 256 * 1024, delayMs: 20 }));
    const ok = await proxyRequest(g.port, origin.url('/dp/good.exe'));
    expect(ok.status).toBe(200);
    expect(createHash('sha256').update(ok.body).digest('hex')).toBe(createHash('sha256').update(good).digest('hex'));
    const no = await proxyRequest(g.port, origin.url('/dp/bad.exe'));
    expect(no.status).toBe(403);
    expect(String(no.headers['x-patchgate-reason'])).toContain('DIGEST_MISMATCH');
    const pool = (g.gate as unknown as { digests: DigestPool }).digests;
    expect(pool).toBeInstanceOf(DigestPool);
    const pending = proxyRequest(g.port, origin.url('/dp/slow.exe'));
    await new Promise((r) => setTimeout(r, 150));
    expect(pool.activeJobs).toBe(1); // the slow download is being hashed by the thread
    for (const w of pool.workers) await w.terminate();
    const r = await pending;
    expect(r.status).toBe(403);
    expect(String(r.headers['x-patchgate-reason'])).toBe('INTERNAL_ERROR');
    expect(r.body.length).toBeLessThan(4096); // the block page, no payload byte
    // The replacement thread serves the next download.
    const after = await proxyRequest(g.port, origin.url('/dp/good.exe') + '?again');
    expect(after.status).toBe(200);
  });
});

describe('DigestStream (what the digest thread runs) against the inline verifier', () => {
  const files = readdirSync(fx('.')).filter((f) => /\.(exe|cab|bin)$/.test(f));
  const cuts = [1, 63, 64, 500, 4096, 1 << 20];

  it.each(files)('%s: every chunking gives the inline verdict, byte for byte', (name) => {
    const policy = labPolicy();
    const bytes = readFileSync(fx(name));
    const inline = verifyBytes(bytes, policy, { now: AT });
    for (const cut of cuts) {
      const v = new IncrementalVerifier(policy, { now: AT, digests: 'external' });
      const d = new DigestStream(policy.fileDigests, policy.limits);
      for (let at = 0; at < bytes.length; at += cut) {
        v.update(bytes.subarray(at, at + cut));
        d.update(bytes.subarray(at, at + cut));
      }
      expect(v.finishWith(d.finish()), `${name}, chunks of ${cut}`).toEqual(inline);
    }
  });

  it('short and empty payloads too', () => {
    const policy = labPolicy();
    for (const bytes of [Buffer.alloc(0), Buffer.from('MZ'), readFileSync(fx('good.exe')).subarray(0, 63), readFileSync(fx('good.cab')).subarray(0, 70)]) {
      const v = new IncrementalVerifier(policy, { now: AT, digests: 'external' });
      const d = new DigestStream(policy.fileDigests, policy.limits);
      v.update(bytes);
      d.update(bytes);
      expect(v.finishWith(d.finish())).toEqual(verifyBytes(bytes, policy, { now: AT }));
    }
  });
});
