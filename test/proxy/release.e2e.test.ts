/**
 * Whole hold, the release after the last byte (issue #18: the verdict ≤ 5 ms after the last byte).
 * The verdict is the decision, the spool's flush only I/O: the client's head must not wait for the
 * spool's last write to reach the disk. To see the order without any timing, the spool's write of a
 * payload's final bytes is held here (node:fs `write` wrapped for that one position) until the test
 * lets it go: the head must arrive while it is held, the record and the body only after. Everything
 * else is real: 127.0.0.1 sockets, the in-process gate, its digest thread, signed synthetic PEs.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { IncomingMessage } from 'node:http';
import { type GateHandle, type Origin, proxyRequest, send, startGate, startOrigin, syntheticBytes, syntheticPe, waitFor } from '../support/gateHarness.js';
import { GateMetrics } from '../../src/metrics/gateMetrics.js';

/** Spool writes that end exactly at `size` (the payload's last slab) are held until `release`; `fail` makes them fail. */
const held = vi.hoisted(() => ({ size: -1, writes: [] as (() => void)[], fail: undefined as NodeJS.ErrnoException | undefined, firstReads: false, reads: [] as (() => void)[] }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const write = function (this: unknown, ...a: unknown[]) {
    const [fd, buf, off, len, pos, cb] = a as [number, Buffer, number, number, number, (e: Error | null, n: number, b: Buffer) => void];
    if (typeof pos === 'number' && typeof cb === 'function' && pos + len === held.size) {
      held.writes.push(() => (held.fail ? cb(held.fail, 0, buf) : fs.write(fd, buf, off, len, pos, cb)));
      return;
    }
    return (fs.write as (...x: unknown[]) => void)(...a);
  } as typeof fs.write;
  // With firstReads: spool reads at offset 0 (the first buffer served to a client) are held too.
  const read = function (this: unknown, ...a: unknown[]) {
    const [fd, buf, off, len, pos, cb] = a as [number, Buffer, number, number, number, (e: Error | null, n: number, b: Buffer) => void];
    if (held.firstReads && pos === 0 && typeof cb === 'function') {
      held.reads.push(() => fs.read(fd, buf, off, len, pos, cb));
      return;
    }
    return (fs.read as (...x: unknown[]) => void)(...a);
  } as typeof fs.read;
  return { ...fs, write, read, default: { ...fs, write, read } };
});

const MiB = 1024 * 1024;
let origin: Origin;
let g: GateHandle;
let tailGate: GateHandle;
const metrics = new GateMetrics();
const tailMetrics = new GateMetrics();
const payload = syntheticBytes(syntheticPe(3 * MiB, 41));
const other = syntheticBytes(syntheticPe(3 * MiB, 42));
const streamed = syntheticBytes(syntheticPe(3 * MiB, 43));

beforeAll(async () => {
  origin = await startOrigin();
  origin.route('/held-flush.exe', send(payload, { chunk: 64 * 1024 }));
  origin.route('/failed-flush.exe', send(other, { chunk: 64 * 1024 }));
  origin.route('/tail-flush.exe', send(streamed, { chunk: 64 * 1024 }));
  // memoryHoldBytes 256 KiB (the harness's): a 3 MiB payload is spooled to disk.
  g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], observer: metrics, limits: { cacheTtlMs: 30_000 } });
  tailGate = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }], observer: tailMetrics });
});

afterAll(async () => {
  held.size = -1;
  held.firstReads = false;
  for (const w of [...held.writes.splice(0), ...held.reads.splice(0)]) w();
  await g?.dispose();
  await tailGate?.dispose();
  await origin?.close();
});

/** Starts a request; `head` resolves when the response head arrives, with what was known at that instant. */
function request(url: string) {
  let onHead!: (h: { res: IncomingMessage; heldWrites: number; records: number; bodyBytes: number }) => void;
  const head = new Promise<{ res: IncomingMessage; heldWrites: number; records: number; bodyBytes: number }>((r) => (onHead = r));
  let bodyBytes = 0;
  const done = proxyRequest(g.port, url, {
    timeoutMs: 30_000,
    onRequest: (req) => req.on('response', (res: IncomingMessage) => {
      onHead({ res, heldWrites: held.writes.length, records: g.records().filter((r) => r.url === url).length, bodyBytes });
      res.on('data', (d: Buffer) => { bodyBytes += d.byteLength; });
    }),
  });
  return { head, done, bodyBytes: () => bodyBytes };
}

/** The head, or a failure naming what it waited for (the flush is held: without the change it never comes). */
function headWithin<T>(head: Promise<T>, ms: number): Promise<T> {
  return Promise.race([head, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no response head in ${ms} ms while the spool's last write is held: the head waits for the flush`)), ms).unref())]);
}

async function releaseCount(m0 = metrics): Promise<number> {
  const m = /^patchgate_release_duration_seconds_count (\d+)$/m.exec(await m0.text());
  return Number(m?.[1] ?? 0);
}

describe('whole hold: the verdict does not wait for the spool flush', { timeout: 40_000 }, () => {
  it('the head (allow) arrives while the spool\'s last write is held; the record and the body only once it is on disk; releaseMs recorded', async () => {
    held.size = payload.byteLength;
    held.fail = undefined;
    const url = origin.url('/held-flush.exe');
    const r = request(url);
    // The last slab's write is issued once the whole body is in: wait for it to be held.
    expect(await waitFor(() => held.writes.length === 1, 15_000), 'the spool\'s last write reached the disk layer').toBe(true);
    const h = await headWithin(r.head, 8000); // a head that waits for the flush never comes while it is held
    expect(h.res.statusCode).toBe(200);
    expect(h.res.headers['x-patchgate-verdict']).toBe('allow');
    expect(Number(h.res.headers['content-length'])).toBe(payload.byteLength);
    expect(h.heldWrites, 'the flush is still held when the head arrives').toBe(1);
    expect(h.records, 'no record before the spool is readable (it precedes the first body byte)').toBe(0);
    expect(r.bodyBytes(), 'no body byte before the flush').toBe(0);
    expect(held.writes.length).toBe(1);

    held.size = -1;
    for (const w of held.writes.splice(0)) w();
    const res = await r.done;
    expect(res.complete).toBe(true);
    expect(res.body.equals(payload)).toBe(true);
    const [rec] = await g.waitRecords((x) => x.url === url);
    expect(rec).toMatchObject({ served: 'full', verdict: 'allow', status: 200, bytesToClient: payload.byteLength, hold: 'whole' });
    expect(typeof rec!.durations.releaseMs).toBe('number');
    expect(rec!.durations.releaseMs).toBeGreaterThanOrEqual(0);
    expect(await releaseCount()).toBe(1);

    // A later client served from the verified copy waited for no upstream byte: no releaseMs, no observation.
    const again = await proxyRequest(g.port, url);
    expect(again.status).toBe(200);
    expect(again.body.equals(payload)).toBe(true);
    const recs = await g.waitRecords((x) => x.url === url, 2);
    expect(recs[1]).toMatchObject({ served: 'full', verdict: 'allow', shared: true });
    expect(recs[1]!.durations.releaseMs).toBeUndefined();
    expect(await releaseCount()).toBe(1);
  });

  it('a verified copy on disk: the head goes out before the first read of the spool, not corked behind it', async () => {
    const url = origin.url('/held-flush.exe'); // verified and kept by the first test (cacheTtlMs 30 s)
    held.firstReads = true;
    const r = request(url);
    expect(await waitFor(() => held.reads.length === 1, 15_000), 'the first read of the spool was issued').toBe(true);
    const h = await headWithin(r.head, 8000);
    expect(h.res.statusCode).toBe(200);
    expect(held.reads.length, 'the first read is still held when the head arrives').toBe(1);
    expect(r.bodyBytes()).toBe(0);
    held.firstReads = false;
    for (const x of held.reads.splice(0)) x();
    const res = await r.done;
    expect(res.complete).toBe(true);
    expect(res.body.equals(payload)).toBe(true);
  });

  it('a flush that fails after the head cuts the response short of its length, records a block, and the next client fetches again', async () => {
    held.size = other.byteLength;
    const eio = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
    held.fail = eio;
    const url = origin.url('/failed-flush.exe');
    const r = request(url);
    expect(await waitFor(() => held.writes.length === 1, 15_000)).toBe(true);
    const h = await headWithin(r.head, 8000);
    expect(h.res.statusCode).toBe(200);
    expect(h.heldWrites).toBe(1);
    for (const w of held.writes.splice(0)) w(); // fails with EIO
    held.size = -1;
    held.fail = undefined;
    const res = await r.done;
    expect(res.complete, 'the client cannot take the cut response for complete').toBe(false);
    expect(res.body.byteLength).toBeLessThan(other.byteLength);
    const [rec] = await g.waitRecords((x) => x.url === url);
    expect(rec).toMatchObject({ served: 'blocked', verdict: 'block', bytesToClient: 0 });
    expect(rec!.reasons[0]!.code).toBe('INTERNAL_ERROR');
    expect(rec!.reasons[0]!.message).toMatch(/spool: EIO/);

    // The copy whose flush failed is not served again: a new request fetches and verifies anew.
    const fetchesBefore = origin.hits('/failed-flush.exe');
    const next = await proxyRequest(g.port, url);
    expect(next.status).toBe(200);
    expect(next.body.equals(other)).toBe(true);
    expect(origin.hits('/failed-flush.exe')).toBe(fetchesBefore + 1);
  });

  it('tail hold: the withheld end waits for the spool\'s last write (never read before it is on disk), then completes the payload', async () => {
    held.size = streamed.byteLength;
    held.fail = undefined;
    const url = origin.url('/tail-flush.exe');
    let ended = false;
    let got = 0;
    const done = proxyRequest(tailGate.port, url, {
      timeoutMs: 30_000,
      onRequest: (req) => req.on('response', (res: IncomingMessage) => {
        res.on('data', (d: Buffer) => { got += d.byteLength; });
        res.on('end', () => { ended = true; });
      }),
    });
    expect(await waitFor(() => held.writes.length === 1, 15_000)).toBe(true);
    // The verdict is out (its release is counted as it is decided) while the last write is still held.
    expect(await waitFor(async () => (await releaseCount(tailMetrics)) === 1, 15_000), 'the verdict came').toBe(true);
    expect(held.writes.length).toBe(1);
    expect(ended).toBe(false);
    expect(got, 'the withheld end has not left').toBeLessThan(streamed.byteLength);
    expect(tailGate.records().filter((r) => r.url === url)).toHaveLength(0);
    held.size = -1;
    for (const w of held.writes.splice(0)) w();
    const res = await done;
    expect(res.complete).toBe(true);
    expect(res.body.equals(streamed)).toBe(true);
    const [rec] = await tailGate.waitRecords((x) => x.url === url);
    expect(rec).toMatchObject({ served: 'full', verdict: 'allow', hold: 'tail', bytesToClient: streamed.byteLength });
    expect(typeof rec!.durations.releaseMs).toBe('number');
  });
});
