import { createReadStream, createWriteStream, mkdirSync, rmSync, unlink as unlinkFile, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

/**
 * Where a held payload waits for its verdict: in memory while small, then in a temp file (mode
 * 0600) so that memory stays bounded whatever the payload size. Writers respect backpressure
 * through write()'s return value and the `onDrain` callback, as a stream does.
 */
export class Spool {
  private memory: Buffer[] = [];
  private file: WriteStream | undefined;
  private path: string | undefined;
  private bytes = 0;
  private released = false;
  private ended = false;

  constructor(private readonly dir: string, private readonly memoryLimit: number) {}

  get size(): number { return this.bytes; }
  /** Bytes held (in memory or on disk) until release(); 0 after. */
  get heldBytes(): number { return this.released ? 0 : this.bytes; }
  get onDisk(): boolean { return this.path !== undefined; }

  /** Appends a chunk; false means "wait for onDrain before writing more". */
  write(chunk: Buffer, onDrain: () => void): boolean {
    if (this.released || this.ended) throw new Error('spool is closed');
    this.bytes += chunk.byteLength;
    if (!this.file && this.bytes <= this.memoryLimit) {
      this.memory.push(chunk);
      return true;
    }
    if (!this.file) {
      this.path = join(this.dir, `hold-${process.pid}-${randomBytes(8).toString('hex')}`);
      // A large write buffer lets socket reads and disk writes overlap (the default 16 KiB made them take turns).
      this.file = createWriteStream(this.path, { flags: 'wx', mode: 0o600, highWaterMark: 4 << 20 });
      this.file.on('error', () => { /* surfaced by end() */ });
      for (const m of this.memory) this.file.write(m);
      this.memory = [];
    }
    const ok = this.file.write(chunk);
    if (!ok) this.file.once('drain', onDrain);
    return ok;
  }

  /** Flushes to disk; resolves when every byte is readable. */
  end(): Promise<void> {
    this.ended = true;
    const f = this.file;
    if (!f) return Promise.resolve();
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
      const whole = Buffer.concat(this.memory);
      return Readable.from([whole.subarray(start, end + 1)]);
    }
    return createReadStream(this.path, { start, end, highWaterMark: 1 << 20 });
  }

  /** Deletes the file (open readers keep their descriptor until they finish). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.memory = [];
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
