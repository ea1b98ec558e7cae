import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import type { DigestName } from '../verify/algorithms.js';
import type { ExternalDigests } from '../verify/incrementalVerifier.js';
import type { FromWorker, ToWorker } from './digestWorker.js';

/** Bytes of one job's shared ring: how far the digest thread may lag behind the socket. */
export const RING_BYTES = 1 << 20;
/** Bytes gathered before they are handed to the digest thread (fewer messages; the lag at the end stays small). */
const BATCH_BYTES = 256 << 10;
const RING_POOL_MAX = 64;

/** The compiled worker script (under vitest this module is loaded from src/: the build's copy runs). */
function workerUrl(): URL {
  const here = new URL('./digestWorker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  return new URL('../../dist/inspect/digestWorker.js', import.meta.url);
}

interface Slot { worker: Worker; jobs: Map<number, DigestJob>; dead: Error | undefined; ready: Promise<void> }

/**
 * Worker threads that hash held payloads, so that the proxy's event loop only moves bytes (socket,
 * spool) while both SHA-256 passes (whole file, Authenticode ranges) run on another core. One
 * worker per spare core (at least one). A worker that fails fails every job it had: their holds
 * are blocked (INTERNAL_ERROR), never allowed, and a new worker takes its place.
 */
export class DigestPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private readonly rings: SharedArrayBuffer[] = [];
  private closed = false;

  constructor(readonly size = Math.max(1, Math.min(4, availableParallelism() - 1))) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    // The thread keeps no more than a job's headers and its hash states: a small young generation
    // (V8's default grows to 16 MiB per semi-space) keeps its isolate out of the gate's peak RSS.
    const worker = new Worker(workerUrl(), { resourceLimits: { maxYoungGenerationSizeMb: 2 } });
    let onPong!: () => void;
    const slot: Slot = { worker, jobs: new Map(), dead: undefined, ready: new Promise<void>((r) => { onPong = r; }) };
    worker.unref();
    worker.on('message', (m: FromWorker) => (m.op === 'pong' ? onPong() : slot.jobs.get(m.id)?.onMessage(m)));
    worker.postMessage({ op: 'ping', id: 0 } satisfies ToWorker);
    const die = (err: Error) => {
      if (slot.dead) return;
      slot.dead = err;
      onPong(); // nobody waits for a dead thread
      for (const j of [...slot.jobs.values()]) j.onWorkerFailure(err);
      slot.jobs.clear();
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    worker.on('error', die);
    worker.on('exit', (code) => die(new Error(`digest thread exited (${code})`)));
    return slot;
  }

  /** Starts hashing one payload with the policy's digests and limits. */
  job(policy: Pick<ApprovedCaPolicy, 'fileDigests' | 'limits'>): DigestJob {
    if (this.closed) throw new Error('digest pool is closed');
    const slot = this.slots.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
    const id = this.nextId++;
    const ring = this.rings.pop() ?? new SharedArrayBuffer(RING_BYTES);
    const job = new DigestJob(id, slot, ring, (r) => { slot.jobs.delete(id); if (r && this.rings.length < RING_POOL_MAX) this.rings.push(r); });
    slot.jobs.set(id, job);
    slot.worker.postMessage({ op: 'start', id, ring, algorithms: [...policy.fileDigests], limits: { ...policy.limits } } satisfies ToWorker);
    return job;
  }

  /** Resolves once every thread has loaded the core and answered (its memory is in use from then on). */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.ready));
  }

  /** Jobs in flight (tests, metrics). */
  get activeJobs(): number { return this.slots.reduce((n, s) => n + s.jobs.size, 0); }

  /** Test hook: the worker threads. */
  get workers(): readonly Worker[] { return this.slots.map((s) => s.worker); }

  async close(): Promise<void> {
    this.closed = true;
    const err = new Error('digest pool closed');
    for (const s of this.slots) for (const j of [...s.jobs.values()]) j.onWorkerFailure(err);
    await Promise.all(this.slots.map((s) => s.worker.terminate().catch(() => 0)));
  }
}

/**
 * One payload's bytes on their way to the digest thread: copied into a shared ring (the caller's
 * buffers are free at once), handed over in batches, acknowledged once hashed. update() returns
 * false when the ring is full: the caller pauses its source until `onDrain`.
 */
export class DigestJob {
  private readonly ring: Uint8Array;
  private head = 0; // next write position in the ring
  private unacked = 0; // bytes written to the ring and not yet acknowledged
  private spans: number[] = [];
  private batched = 0;
  private overflow: Buffer[] = [];
  private drains: (() => void)[] = [];
  private result: { resolve: (d: ExternalDigests) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private ended = false;
  private done = false;
  /** Bytes taken by update(). */
  bytes = 0;

  constructor(private readonly id: number, private readonly slot: Slot, private sab: SharedArrayBuffer | undefined, private readonly release: (ring: SharedArrayBuffer | undefined) => void) {
    this.ring = new Uint8Array(sab!);
  }

  /** Takes a chunk (copied now); false: wait for `onDrain` before the next. */
  update(chunk: Uint8Array, onDrain: () => void): boolean {
    if (this.ended || this.done) throw new Error('digest job is closed');
    this.bytes += chunk.byteLength;
    if (this.overflow.length || !this.copyIn(chunk)) {
      this.overflow.push(Buffer.from(chunk)); // rare: the source pauses on false
      this.flush();
      this.drains.push(onDrain);
      return false;
    }
    if (this.batched >= BATCH_BYTES) this.flush();
    if (this.unacked > RING_BYTES - (RING_BYTES >> 2)) {
      this.flush();
      this.drains.push(onDrain);
      return false;
    }
    return true;
  }

  /** Copies a chunk into the ring's free space, whole or not at all. */
  private copyIn(chunk: Uint8Array): boolean {
    if (chunk.byteLength > RING_BYTES - this.unacked) return false;
    let off = 0;
    while (off < chunk.byteLength) {
      const n = Math.min(chunk.byteLength - off, RING_BYTES - this.head);
      this.ring.set(chunk.subarray(off, off + n), this.head);
      const last = this.spans.length - 2;
      if (last >= 0 && this.spans[last]! + this.spans[last + 1]! === this.head) this.spans[last + 1]! += n;
      else this.spans.push(this.head, n);
      this.head = (this.head + n) % RING_BYTES;
      off += n;
    }
    this.unacked += chunk.byteLength;
    this.batched += chunk.byteLength;
    return true;
  }

  private flush(): void {
    if (!this.spans.length || this.done) return;
    this.slot.worker.postMessage({ op: 'data', id: this.id, spans: this.spans } satisfies ToWorker);
    this.spans = [];
    this.batched = 0;
  }

  /** All bytes given: resolves with the digests over all of them (rejects if the thread failed). */
  end(): Promise<ExternalDigests> {
    if (this.failure) return Promise.reject(this.failure);
    this.ended = true;
    return new Promise((resolve, reject) => {
      this.result = { resolve, reject };
      this.pumpOverflow();
    });
  }

  private pumpOverflow(): void {
    while (this.overflow.length && this.copyIn(this.overflow[0]!)) this.overflow.shift();
    this.flush();
    if (this.ended && !this.overflow.length && !this.done) {
      this.done = true;
      this.slot.worker.postMessage({ op: 'end', id: this.id } satisfies ToWorker);
    }
  }

  /** Stops the job (the hold was abandoned); the ring is not reused while the thread may read it. */
  abort(): void {
    if (this.done && !this.result) return;
    this.done = true;
    this.overflow = [];
    this.slot.worker.postMessage({ op: 'abort', id: this.id } satisfies ToWorker);
    this.finishJob(undefined);
  }

  private finishJob(ring: SharedArrayBuffer | undefined): void {
    this.release(ring);
    this.sab = undefined;
  }

  onMessage(m: FromWorker): void {
    if (m.op === 'ack') {
      this.unacked -= m.bytes;
      this.pumpOverflow();
      if (this.drains.length && !this.overflow.length && this.unacked <= RING_BYTES >> 1) {
        for (const d of this.drains.splice(0)) d();
      }
    } else if (m.op === 'digests') {
      const r = this.result;
      this.result = undefined;
      this.finishJob(this.sab); // the thread is done with the ring: reusable
      r?.resolve({ sha256: m.sha256, fileDigests: new Map(m.fileDigests.map(([k, v]) => [k, Buffer.from(v)])), ranges: m.ranges });
    } else if (m.op === 'error') {
      this.onWorkerFailure(new Error(`digest thread: ${m.message}`));
    }
  }

  onWorkerFailure(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.done = true;
    const r = this.result;
    this.result = undefined;
    this.finishJob(undefined);
    r?.reject(err);
    // A writer waiting for room is let go: end() reports the failure.
    for (const d of this.drains.splice(0)) d();
  }

  /** Set once the digest thread failed for this job. */
  get failed(): Error | undefined { return this.failure; }
}
