import { createReadStream, createWriteStream, mkdirSync, rmSync, unlink as unlinkFile, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

/** Default total in-memory spool: 32 holds of memoryHoldBytes (64 MiB with the default 2 MiB). */
export const MEMORY_TOTAL_FACTOR = 32;

/**
 * The bytes that all the spools of one gate may keep in memory together. A spool takes from it
 * for every chunk it keeps in memory and gives back when it spills to disk or is released; when a
 * chunk does not fit, `reclaim` is asked to free memory (the gate drops its least recently used
 * cached entities) and, if that is not enough, the spool goes to disk. So memory stays bounded
 * whatever the number of holds in flight and of verified copies cached.
 */
export class MemoryBudget {
  private used = 0;
  /** `reclaim(bytes)` may release spools (synchronously) to free at least `bytes`; it is best effort. */
  constructor(readonly limit: number, private readonly reclaim?: (bytes: number) => void) {}

  get usedBytes(): number { return this.used; }

  /** Takes `n` bytes if they fit (after asking reclaim for room); false: they do not. */
  take(n: number): boolean {
    if (this.used + n > this.limit && this.reclaim && n <= this.limit) this.reclaim(this.used + n - this.limit);
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/**
 * Where a held payload waits for its verdict: in memory while small (at most `memoryLimit` bytes
 * for this spool, and only what the gate's MemoryBudget grants), then in a temp file (mode 0600)
 * so that memory stays bounded whatever the payload size and the load. Writers respect
 * backpressure through write()'s return value and the `onDrain` callback, as a stream does.
 */
export class Spool {
  private memory: Buffer[] = [];
  private memoryBytes = 0;
  private file: WriteStream | undefined;
  private path: string | undefined;
  private bytes = 0;
  private released = false;
  private ended = false;

  constructor(private readonly dir: string, private readonly memoryLimit: number, private readonly budget?: MemoryBudget) {}

  get size(): number { return this.bytes; }
  /** Bytes held (in memory or on disk) until release(); 0 after. */
  get heldBytes(): number { return this.released ? 0 : this.bytes; }
  /** Bytes held in memory (0 once on disk or released). */
  get inMemoryBytes(): number { return this.memoryBytes; }
  get onDisk(): boolean { return this.path !== undefined; }

  /** Appends a chunk; false means "wait for onDrain before writing more". */
  write(chunk: Buffer, onDrain: () => void): boolean {
    if (this.released || this.ended) throw new Error('spool is closed');
    this.bytes += chunk.byteLength;
    if (!this.file && this.bytes <= this.memoryLimit && (this.budget?.take(chunk.byteLength) ?? true)) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.byteLength;
      return true;
    }
    if (!this.file) {
      this.path = join(this.dir, `hold-${process.pid}-${randomBytes(8).toString('hex')}`);
      // A large write buffer lets socket reads and disk writes overlap (the default 16 KiB made them take turns).
      this.file = createWriteStream(this.path, { flags: 'wx', mode: 0o600, highWaterMark: 4 << 20 });
      this.file.on('error', () => { /* surfaced by end() */ });
      for (const m of this.memory) this.file.write(m);
      this.dropMemory();
    }
    const ok = this.file.write(chunk);
    if (!ok) this.file.once('drain', onDrain);
    return ok;
  }

  /** Flushes to disk; resolves when every byte is readable. */
  end(): Promise<void> {
    this.ended = true;
    const f = this.file;
    if (!f) {
      // One buffer that every reader slices (no copy per client of a cached entity).
      if (this.memory.length > 1) this.memory = [Buffer.concat(this.memory, this.memoryBytes)];
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      f.once('error', reject);
      f.end(() => resolve());
    });
  }

  /** A stream of bytes [start, end] (inclusive), from memory or from the file. */
  read(start = 0, end = this.bytes - 1): Readable {
    if (this.released) throw new Error('spool released');
    if (end < start) return Readable.from([]);
    if (!this.path) {
      const whole = this.memory.length === 1 ? this.memory[0]! : Buffer.concat(this.memory, this.memoryBytes);
      return Readable.from([whole.subarray(start, end + 1)]);
    }
    return createReadStream(this.path, { start, end, highWaterMark: 1 << 20 });
  }

  private dropMemory(): void {
    this.memory = [];
    this.budget?.give(this.memoryBytes);
    this.memoryBytes = 0;
  }

  /** Deletes the file (open readers keep their descriptor until they finish). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.dropMemory();
    const path = this.path;
    // Asynchronous: unlinking a big file with dirty pages can take tens of ms, not on the event loop.
    const unlink = () => { if (path) unlinkFile(path, () => { /* already gone is fine */ }); };
    // The file may still be opening: delete it again once its stream has closed, so it cannot reappear.
    if (this.file && !this.file.closed) {
      this.file.once('close', unlink);
      this.file.destroy();
    }
    unlink();
  }
}

/** The spool folder of one proxy process: made private, removed whole at shutdown. */
export function makeSpoolDir(base: string): string {
  const dir = join(base, `patchgate-spool-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

export function removeSpoolDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
