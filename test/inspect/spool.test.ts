import { describe, expect, it, afterAll } from 'vitest';
import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { Spool, SLAB_BYTES, makeSpoolDir, removeSpoolDir, spoolPoolSize } from '../../src/inspect/spool.js';

const base = mkdtempSync(join(tmpdir(), 'patchgate-spool-test-'));
const dir = makeSpoolDir(base);
afterAll(() => { removeSpoolDir(dir); removeSpoolDir(base); });

/** Deterministic bytes that differ per seed and per offset (a reused buffer would show). */
function payload(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < size; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

/** Writes `data` in uneven chunks, honouring backpressure, then end(). */
async function fill(spool: Spool, data: Buffer): Promise<void> {
  const sizes = [1, 65536, 7, 300_000, 65536 * 3 + 5];
  let at = 0;
  let k = 0;
  while (at < data.length) {
    const n = Math.min(sizes[k++ % sizes.length]!, data.length - at);
    let drained: (() => void) | undefined;
    const ok = spool.write(data.subarray(at, at + n), () => drained?.());
    at += n;
    if (!ok) await new Promise<void>((r) => { drained = r; });
  }
  await spool.end();
}

/** A destination that collects bytes, calling back for each write only after `delayMs`. */
function collector(delayMs = 0) {
  const parts: Buffer[] = [];
  const w = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      // Keep the buffer itself (not a copy) until the callback: reuse before it would corrupt it.
      parts.push(chunk);
      setTimeout(() => { parts[parts.length - 1] = Buffer.from(chunk); cb(); }, delayMs);
    },
  });
  return { w, bytes: () => Buffer.concat(parts) };
}

const pipe = (spool: Spool, dest: Writable, start: number, end: number) =>
  new Promise<boolean>((resolve) => spool.pipeTo(dest, start, end, resolve));

describe('Spool (pooled buffers, one descriptor)', () => {
  it('keeps small payloads in memory and serves any range of them', async () => {
    const data = payload(100_000, 1);
    const s = new Spool(dir, 2 << 20);
    await fill(s, data);
    expect(s.onDisk).toBe(false);
    const c = collector();
    expect(await pipe(s, c.w, 10, 99_998)).toBe(true);
    expect(c.bytes().equals(data.subarray(10, 99_999))).toBe(true);
    s.release();
  });

  it('spools a multi-buffer payload to a 0600 file and serves full and ranged reads exactly', async () => {
    const size = 5 * SLAB_BYTES + 12345;
    const data = payload(size, 2);
    const s = new Spool(dir, 1 << 20);
    await fill(s, data);
    expect(s.onDisk).toBe(true);
    const file = readdirSync(dir).find((f) => f.startsWith('hold-'))!;
    expect(statSync(join(dir, file)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, file)).size).toBe(size);
    for (const [a, b] of [[0, size - 1], [SLAB_BYTES - 1, 2 * SLAB_BYTES], [size - 1, size - 1], [123, 124]] as const) {
      const c = collector();
      expect(await pipe(s, c.w, a, b)).toBe(true);
      expect(createHash('sha256').update(c.bytes()).digest('hex')).toBe(createHash('sha256').update(data.subarray(a, b + 1)).digest('hex'));
    }
    // The compatibility stream gives the same bytes.
    const chunks: Buffer[] = [];
    for await (const x of s.read(5, size - 2)) chunks.push(x as Buffer);
    expect(Buffer.concat(chunks).equals(data.subarray(5, size - 1))).toBe(true);
    s.release();
  });

  it('never refills a buffer a slow destination still holds, while other spools write and read', async () => {
    const size = 4 * SLAB_BYTES + 99;
    const a = payload(size, 3);
    const b = payload(size, 4);
    const sa = new Spool(dir, 0);
    const sb = new Spool(dir, 0);
    await fill(sa, a);
    const slow = collector(15);
    const slowDone = pipe(sa, slow.w, 0, size - 1);
    // Meanwhile another payload goes through the same pool, in and out, fast.
    await fill(sb, b);
    const fast = collector();
    expect(await pipe(sb, fast.w, 0, size - 1)).toBe(true);
    expect(await slowDone).toBe(true);
    expect(slow.bytes().equals(a)).toBe(true);
    expect(fast.bytes().equals(b)).toBe(true);
    expect(spoolPoolSize()).toBeGreaterThan(0); // buffers came back for reuse
    sa.release();
    sb.release();
  });

  it('a destination that goes away ends the transfer as not ok; a release during a read keeps the reader going', async () => {
    const size = 3 * SLAB_BYTES;
    const data = payload(size, 5);
    const s = new Spool(dir, 0);
    await fill(s, data);
    const c = collector(5);
    const p = pipe(s, c.w, 0, size - 1);
    setTimeout(() => c.w.destroy(), 2);
    expect(await p).toBe(false);
    const c2 = collector(2);
    const p2 = pipe(s, c2.w, 0, size - 1);
    s.release(); // unlinked now; the open descriptor serves the reader to its end
    expect(await p2).toBe(true);
    expect(c2.bytes().equals(data)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith('hold-'))).toEqual([]);
    expect(() => s.write(Buffer.alloc(1), () => {})).toThrow();
  });
});
