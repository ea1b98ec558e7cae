import { createHash, type Hash } from 'node:crypto';
import type { DigestName } from './algorithms.js';

/** Half-open byte range [start, end) of the payload. */
export type ByteRange = readonly [number, number];

/**
 * Hashes only the given ranges of a stream, with several algorithms at once, as chunks arrive:
 * the Authenticode digest is ready when the last byte is, and nothing is kept in memory.
 */
export class RangeHasher {
  private readonly hashes: Map<DigestName, Hash>;

  constructor(private readonly ranges: readonly ByteRange[], algorithms: readonly DigestName[]) {
    this.hashes = new Map(algorithms.map((a) => [a, createHash(a)]));
  }

  /** Feeds a chunk that starts at absolute offset `at`. */
  update(chunk: Uint8Array, at: number): void {
    const end = at + chunk.byteLength;
    for (const [s, e] of this.ranges) {
      const from = Math.max(s, at);
      const to = Math.min(e, end);
      if (from >= to) continue;
      const part = chunk.subarray(from - at, to - at);
      for (const h of this.hashes.values()) h.update(part);
    }
  }

  digests(): Map<DigestName, Buffer> {
    const out = new Map<DigestName, Buffer>();
    for (const [name, h] of this.hashes) out.set(name, h.digest());
    return out;
  }
}
