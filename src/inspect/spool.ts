import { close, mkdirSync, openSync, read as readFd, rmSync, statfsSync, unlink as unlinkFile, write as writeFd } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';

/** Size of one spool buffer (512 KiB): what a file write or read moves at once; a hold keeps at most one partly filled. */
export const SLAB_BYTES = 512 << 10;
/** Buffers that may be queued for the disk per spool (2 MiB) before write() asks its caller to wait. */
const WRITE_SLABS_IN_FLIGHT = 4;
/** Free buffers kept for reuse across spools (process-wide): 16 MiB at most. */
const POOL_MAX = 64;

/**
 * Process-wide pool of spool buffers. A held payload passes through a few long-lived buffers
 * instead of one new buffer per socket read (which a 4 MiB write queue kept alive long enough to
 * reach the old generation: about a hundred full garbage collections per GiB).
 */
const pool: Buffer[] = [];
/** A SLAB_BYTES buffer from the pool (or a new one). Also what a tail hold releases from (src/inspect/tailHold.ts). */
export function takeSlab(): Buffer { return pool.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES); }
/** Gives a buffer from takeSlab back, once nothing reads or writes it any more. */
export function giveSlab(b: Buffer): void { if (pool.length < POOL_MAX) pool.push(b); }
/** Free buffers in the pool (tests). */
export function spoolPoolSize(): number { return pool.length; }

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
 * The bytes that all the spools of one gate may keep on disk together (`limits.maxSpoolBytes`), and
 * each requester's share of it: the bytes of a hold are counted against the client that started
 * it. When a write does not fit, `reclaim(bytes, owner?)` drops verified copies kept for later
 * requests (least recently used first; only the owner's when its share is what is short); if that
 * is not enough the hold is refused (OVERSIZE). So no client can fill the disk for the others.
 */
export class DiskBudget {
  private used = 0;
  private readonly byOwner = new Map<string, number>();

  constructor(readonly limit: number, readonly perOwnerLimit: number, private readonly reclaim?: (bytes: number, owner?: string) => void) {}

  /**
   * The budget `limits` ask for in the spool folder `dir`: limits.maxSpoolBytes, by default
   * SPOOL_FREE_FRACTION of the folder's free space now, and each client's share (maxSpoolBytesPerClient,
   * by default SPOOL_CLIENT_FRACTION of it). One rule for the gate and the ICAP service.
   */
  static forSpool(
    dir: string, limits: { maxSpoolBytes?: number; maxSpoolBytesPerClient?: number }, reclaim?: (bytes: number, owner?: string) => void,
  ): DiskBudget {
    let limit = limits.maxSpoolBytes;
    if (limit === undefined) {
      const st = statfsSync(dir);
      limit = Math.floor(st.bavail * st.bsize * SPOOL_FREE_FRACTION);
    }
    return new DiskBudget(limit, limits.maxSpoolBytesPerClient ?? Math.floor(limit * SPOOL_CLIENT_FRACTION), reclaim);
  }

  get usedBytes(): number { return this.used; }
  ownerBytes(owner: string): number { return this.byOwner.get(owner) ?? 0; }

  /** Takes `n` bytes for `owner` if they fit (after asking reclaim for room); else says why not. */
  take(n: number, owner: string): true | string {
    const mine = () => this.ownerBytes(owner);
    if (mine() + n > this.perOwnerLimit) this.reclaim?.(mine() + n - this.perOwnerLimit, owner);
    if (mine() + n > this.perOwnerLimit) {
      return `the spool's share of client ${owner} (${this.perOwnerLimit} bytes of limits.maxSpoolBytes ${this.limit}) is full with its other downloads`;
    }
    if (this.used + n > this.limit) this.reclaim?.(this.used + n - this.limit);
    if (this.used + n > this.limit) return `the spool is full (limits.maxSpoolBytes ${this.limit} bytes in use by downloads in flight)`;
    this.used += n;
    this.byOwner.set(owner, mine() + n);
    return true;
  }

  give(n: number, owner: string): void {
    this.used = Math.max(0, this.used - n);
    const left = this.ownerBytes(owner) - n;
    if (left > 0) this.byOwner.set(owner, left);
    else this.byOwner.delete(owner);
  }
}

/** Default `limits.maxSpoolBytes`: this fraction of the spool folder's free space at start. */
export const SPOOL_FREE_FRACTION = 0.5;
/** Default share of one client: this fraction of maxSpoolBytes. */
export const SPOOL_CLIENT_FRACTION = 0.25;

/**
 * Where a held payload waits for its verdict: in memory while small (at most `memoryLimit` bytes
 * for this spool, and only what the gate's MemoryBudget grants), then in a temp file (mode 0600)
 * so that memory stays bounded whatever the payload size and the load. Writers respect backpressure
 * through write()'s return value and the `onDrain` callback, as a stream does.
 *
 * Bytes are copied into pooled 512 KiB buffers and written with positioned writes on one descriptor
 * (opened read-write), which readers share: `pipeTo` streams a byte range to a client through two
 * pooled buffers, each reused only once the destination has taken its bytes.
 */
export class Spool {
  private memory: Buffer[] = [];
  private memoryBytes = 0;
  private path: string | undefined;
  private fd: number | undefined;
  private fileError: Error | undefined;
  private bytes = 0;
  /** Bytes handed to the file (queued or written). */
  private queuedBytes = 0;
  private released = false;
  private ended = false;
  private slab: Buffer | undefined;
  private slabUsed = 0;
  /** Full buffers waiting for the descriptor, with their file offsets. */
  private pending: { buf: Buffer; len: number; at: number }[] = [];
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  private flushWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readers = 0;
  private closed = false;

  /** Bytes taken from the DiskBudget (given back on release). */
  private diskBytes = 0;
  /** Why the disk budget refused this spool's bytes: the hold must end (OVERSIZE). */
  refused: string | undefined;

  /** Told once, at the first file error (open or write): the holder ends the hold at once. */
  onError: ((err: Error) => void) | undefined;

  constructor(
    private readonly dir: string, private readonly memoryLimit: number, private readonly budget?: MemoryBudget,
    private readonly disk?: { budget: DiskBudget; owner: string },
  ) {}

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
    if (!this.path && this.bytes <= this.memoryLimit && (this.budget?.take(chunk.byteLength) ?? true)) {
      this.memory.push(chunk);
      this.memoryBytes += chunk.byteLength;
      return true;
    }
    if (this.refused) return true; // the hold is ending: nothing more is kept
    if (this.disk) {
      const n = this.path ? chunk.byteLength : this.memoryBytes + chunk.byteLength;
      const ok = this.disk.budget.take(n, this.disk.owner);
      if (ok !== true) {
        this.refused = ok;
        return true;
      }
      this.diskBytes += n;
    }
    if (!this.path) {
      this.openFile();
      for (const m of this.memory) this.copyIn(m);
      this.dropMemory();
    }
    this.copyIn(chunk);
    if (this.inFlight + this.pending.length < WRITE_SLABS_IN_FLIGHT) return true;
    this.drainWaiters.push(onDrain);
    return false;
  }

  private openFile(): void {
    this.path = join(this.dir, `hold-${process.pid}-${randomBytes(8).toString('hex')}`);
    // Opened at once (one short system call): the file exists from here on, so release() can always
    // unlink it at once (an asynchronous open let a released file appear after its unlink).
    // wx+: created here (never an existing file), readable by this process's readers too.
    try {
      this.fd = openSync(this.path, 'wx+', 0o600);
    } catch (err) {
      this.failFile(err as Error);
    }
  }

  private copyIn(chunk: Buffer): void {
    if (this.fileError || this.released) return; // nowhere to go: the holder is told (onError)
    let off = 0;
    while (off < chunk.byteLength) {
      this.slab ??= takeSlab();
      const n = Math.min(chunk.byteLength - off, SLAB_BYTES - this.slabUsed);
      chunk.copy(this.slab, this.slabUsed, off, off + n);
      this.slabUsed += n;
      off += n;
      if (this.slabUsed === SLAB_BYTES) this.queueSlab();
    }
  }

  private queueSlab(): void {
    if (!this.slab || this.slabUsed === 0) return;
    if (this.fileError) {
      giveSlab(this.slab);
      this.slab = undefined;
      this.slabUsed = 0;
      return;
    }
    this.pending.push({ buf: this.slab, len: this.slabUsed, at: this.queuedBytes });
    this.queuedBytes += this.slabUsed;
    this.slab = undefined;
    this.slabUsed = 0;
    this.pump();
  }

  private pump(): void {
    if (this.fd === undefined || this.fileError || this.released) return;
    while (this.pending.length && this.inFlight < WRITE_SLABS_IN_FLIGHT) {
      const w = this.pending.shift()!;
      this.inFlight++;
      this.writeFully(w.buf, 0, w.len, w.at, (err) => {
        this.inFlight--;
        giveSlab(w.buf);
        if (err) return this.failFile(err);
        this.pump();
        this.settleWaiters();
      });
    }
    this.settleWaiters();
  }

  private writeFully(buf: Buffer, off: number, len: number, at: number, done: (err: Error | null) => void): void {
    writeFd(this.fd!, buf, off, len, at, (err, n) => {
      if (err) return done(err);
      if (n < len) return this.writeFully(buf, off + n, len - n, at + n, done);
      done(null);
    });
  }

  private settleWaiters(): void {
    if (this.inFlight + this.pending.length < WRITE_SLABS_IN_FLIGHT && this.drainWaiters.length) {
      const w = this.drainWaiters.splice(0);
      for (const f of w) f();
    }
    if (this.ended && this.inFlight === 0 && this.pending.length === 0 && this.flushWaiters.length) {
      const f = this.flushWaiters.splice(0);
      for (const x of f) x.resolve();
    }
  }

  private failFile(err: Error): void {
    const first = !this.fileError;
    this.fileError ??= err;
    // Later slabs have nowhere to go: copyIn drops them (memory stays bounded until release).
    if (this.slab) { giveSlab(this.slab); this.slab = undefined; this.slabUsed = 0; }
    for (const p of this.pending.splice(0)) giveSlab(p.buf);
    for (const x of this.flushWaiters.splice(0)) x.reject(err);
    // A writer waiting for drain is let go: end() reports the error.
    for (const f of this.drainWaiters.splice(0)) f();
    if (first) this.onError?.(err);
  }

  /** end() was called and every byte is readable now (in memory, or written to the file): a reader need not wait. */
  get flushComplete(): boolean {
    return this.ended && !this.fileError && (this.path === undefined || (this.inFlight === 0 && this.pending.length === 0 && this.slab === undefined));
  }

  /** Flushes to disk; resolves when every byte is readable. */
  end(): Promise<void> {
    this.ended = true;
    if (!this.path) return Promise.resolve();
    this.queueSlab();
    if (this.fileError) return Promise.reject(this.fileError);
    return new Promise((resolve, reject) => {
      this.flushWaiters.push({ resolve, reject });
      this.settleWaiters();
    });
  }

  /** A stream of bytes [start, end] (inclusive), from memory or from the file. */
  read(start = 0, end = this.bytes - 1): Readable {
    if (this.released) throw new Error('spool released');
    if (end < start) return Readable.from([]);
    if (!this.path) return Readable.from(this.memorySlices(start, end));
    if (this.fd === undefined) throw new Error('spool file is not open (read before end() resolved)');
    const fd = this.fd;
    let pos = start;
    this.readers++;
    let done = false;
    const finish = () => { if (!done) { done = true; this.readerDone(); } };
    return new Readable({
      highWaterMark: SLAB_BYTES,
      read: function (this: Readable) {
        if (pos > end) return void this.push(null);
        const n = Math.min(SLAB_BYTES, end - pos + 1);
        const buf = Buffer.allocUnsafe(n); // handed to the consumer: not pooled
        readFd(fd, buf, 0, n, pos, (err, got) => {
          if (err) return this.destroy(err);
          if (got === 0) return this.destroy(new Error('spool file is shorter than its size'));
          pos += got;
          this.push(got === n ? buf : buf.subarray(0, got));
        });
      },
      destroy(err, cb) { finish(); cb(err); },
    }).once('end', finish);
  }

  /**
   * Exactly `length` bytes at `offset`, from memory or the file (after end() resolved): how a
   * random-access format (MSI) is verified from the spool. Callers keep `length` small.
   */
  readAt(offset: number, length: number): Promise<Buffer> {
    if (this.released) return Promise.reject(new Error('spool released'));
    if (offset < 0 || length < 0 || offset + length > this.bytes) return Promise.reject(new RangeError(`spool read of ${length} bytes at ${offset} past its end (${this.bytes})`));
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    if (!this.path) return Promise.resolve(Buffer.concat(this.memorySlices(offset, offset + length - 1)));
    if (this.fd === undefined) return Promise.reject(new Error('spool file is not open (read before end() resolved)'));
    const fd = this.fd;
    this.readers++;
    const buf = Buffer.allocUnsafe(length);
    return new Promise((resolve, reject) => {
      this.readFully(fd, buf, length, offset, (err) => {
        this.readerDone();
        if (err) reject(err);
        else resolve(buf);
      });
    });
  }

  private dropMemory(): void {
    this.memory = [];
    this.budget?.give(this.memoryBytes);
    this.memoryBytes = 0;
  }

  private memorySlices(start: number, end: number): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    for (const m of this.memory) {
      const from = Math.max(start, at);
      const to = Math.min(end + 1, at + m.byteLength);
      if (from < to) out.push(m.subarray(from - at, to - at));
      at += m.byteLength;
      if (at > end) break;
    }
    return out;
  }

  /**
   * Streams bytes [start, end] (inclusive) into `dest` (an HTTP response) and ends it; `done(ok)`
   * once all were handed over (ok) or the destination went away or a read failed (not ok; the
   * destination is destroyed). File bytes move through two pooled buffers, each reused only after
   * `dest` has called back for it; a buffer still held by a destination that went away is left
   * to the garbage collector, never reused.
   */
  pipeTo(dest: Writable, start: number, end: number, done: (ok: boolean) => void): void {
    if (this.released) throw new Error('spool released');
    let finished = false;
    const finish = (ok: boolean) => {
      if (finished) return;
      finished = true;
      dest.off('close', onClose);
      if (!ok && !dest.destroyed) dest.destroy();
      done(ok);
    };
    const onClose = () => finish(dest.writableFinished);
    dest.on('close', onClose);
    if (end < start) {
      dest.end(() => finish(true));
      return;
    }
    if (!this.path) {
      // One system call for the head and the whole body: the parts go out corked.
      const parts = this.memorySlices(start, end);
      dest.cork();
      for (let i = 0; i < parts.length - 1; i++) dest.write(parts[i]);
      dest.end(parts[parts.length - 1], () => finish(true));
      dest.uncork();
      return;
    }
    if (this.fd === undefined) throw new Error('spool file is not open (read before end() resolved)');
    const fd = this.fd;
    this.readers++;
    let readerDone = false;
    const release = () => { if (!readerDone) { readerDone = true; this.readerDone(); } };
    let pos = start;
    let reading = 0;
    let writing = 0;
    let failed = false;
    const next = () => {
      // Two buffers: one read at a time (reads complete in order), while the other is written out.
      while (!failed && !finished && pos <= end && reading === 0 && writing < 2) {
        const n = Math.min(SLAB_BYTES, end - pos + 1);
        const at = pos;
        pos += n;
        reading++;
        const buf = takeSlab();
        this.readFully(fd, buf, n, at, (err) => {
          reading--;
          if (err || finished || dest.destroyed) {
            if (!err) giveSlab(buf);
            failed = true;
            release();
            return finish(false);
          }
          writing++;
          const last = pos > end;
          const onWritten = (werr?: Error | null) => {
            writing--;
            if (werr) return; // dest went away: 'close' settles; this buffer is not reused
            giveSlab(buf);
            if (last) return;
            next();
          };
          if (last) {
            release();
            dest.end(buf.subarray(0, n), () => { onWritten(); finish(true); });
          } else {
            dest.write(buf.subarray(0, n), onWritten);
          }
          next();
        });
      }
    };
    next();
  }

  private readFully(fd: number, buf: Buffer, len: number, at: number, done: (err: Error | null) => void, off = 0): void {
    readFd(fd, buf, off, len - off, at + off, (err, got) => {
      if (err) return done(err);
      if (got === 0) return done(new Error('spool file is shorter than its size'));
      if (off + got < len) return this.readFully(fd, buf, len, at, done, off + got);
      done(null);
    });
  }

  private readerDone(): void {
    this.readers--;
    if (this.released && this.readers === 0) this.closeFd();
  }

  private closeFd(): void {
    if (this.closed || this.fd === undefined) return;
    this.closed = true;
    close(this.fd, () => { /* nothing left to do */ });
  }

  /** Deletes the file (open readers keep the descriptor until they finish). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.dropMemory();
    if (this.disk && this.diskBytes) this.disk.budget.give(this.diskBytes, this.disk.owner);
    this.diskBytes = 0;
    if (this.slab) { giveSlab(this.slab); this.slab = undefined; }
    for (const p of this.pending.splice(0)) giveSlab(p.buf);
    for (const x of this.flushWaiters.splice(0)) x.reject(new Error('spool released'));
    const path = this.path;
    // Asynchronous: unlinking a big file with dirty pages can take tens of ms, not on the event loop.
    if (path) unlinkFile(path, () => { /* already gone is fine */ });
    if (this.readers === 0 && this.inFlight === 0) this.closeFd();
    else if (this.inFlight > 0) {
      // Writes still in flight finish on the descriptor before it closes.
      const wait = () => (this.inFlight === 0 ? this.readers === 0 && this.closeFd() : setTimeout(wait, 5).unref());
      wait();
    }
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
