import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Transform } from 'node:stream';
import type { IncrementalVerifier } from '../verify/incrementalVerifier.js';
import { sniffFormat, SNIFF_BYTES } from '../verify/format/sniffFormat.js';
import { sniffMetadata, type MetadataCheck } from '../verify/format/sniffMetadata.js';
import { pathMatches } from '../policy/hostRules.js';
import type { UnverifiableRule } from '../policy/rulesFile.js';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from './gateReason.js';
import type { Verifier } from '../verify/verifier.js';
import { reportFault, type GateObserver } from '../metrics/gateObserver.js';
import { Spool, type DiskBudget, type MemoryBudget } from './spool.js';
import type { DigestJob, DigestPool } from './digestPool.js';
import type { TrustChannel } from '../policy/trustChannels.js';
import { TailRelease, giveSlabs } from './tailHold.js';

export interface InspectionSettings {
  /** The verifier built once from the rules' trust (without channels, or for requests no channel names). */
  verifier: Verifier;
  /** Per-channel trust (rules `channels`): when set, it decides the verifier for each request's host and path. */
  trustFor?: (host: string, path: string) => TrustChannel;
  spoolDir: string;
  memoryHoldBytes: number;
  /** What all bodies in flight may keep in memory together; past it a spool goes to disk. */
  memory?: MemoryBudget;
  /** What all spools may keep on disk together, and each requester's share (limits.maxSpoolBytes). */
  disk?: DiskBudget;
  /** Largest decoded body accepted (0 = no limit). */
  maxPayloadBytes: number;
  nonPayload: 'pass' | 'block';
  unsignedDeltas: 'pass' | 'block';
  /** Known kinds the verifier cannot check, by path: each passes or blocks as its rule says. */
  unverifiable?: UnverifiableRule[];
  now?: () => Date;
  observer?: GateObserver;
  /** Worker threads for the two SHA-256 passes; bodies known to be at most `inlineDigestBytes` (1 MiB) are hashed here. */
  digests?: DigestPool;
  inlineDigestBytes?: number;
}

/** What became of a body: verified (allow or block, with the verifier's Verdict), blocked before a verdict, or passed as non-payload content. */
export type InspectionResult =
  | {
    kind: 'verdict'; verdict: Verdict; spool: Spool | undefined; verifyMs: number;
    /**
     * Only with `verdictBeforeFlush`: the spool's last bytes are still on their way to the disk.
     * Nothing may be read from the spool before this resolves; a rejection (a write failed) means
     * the verified copy cannot be served. Undefined when the spool is readable already.
     */
    flushed?: Promise<void>;
  }
  | { kind: 'block'; reasons: GateReason[]; verdict?: Verdict; rule?: string }
  | { kind: 'pass'; rule: string };

/** What the caller does with content that is not a payload (the rules pass it): it is streamed on, decoded, never held. */
export interface PassSink {
  /** The first decoded bytes; the decision is final. `rule`: the rule that let it pass (nonPayload, unverifiable:NAME). */
  start(head: Buffer, rule: string): void;
  /** More decoded bytes; false asks for a pause until `resume` is called. */
  data(chunk: Buffer, resume: () => void): boolean;
  end(): void;
  /** The body stopped decoding after it started to flow: the response cannot be completed. */
  error(why: GateReason): void;
}

/**
 * Where a payload held in tail mode streams (src/inspect/tailHold.ts): the decoded bytes the format
 * lets out before the verdict. Never called for a payload held whole.
 */
export interface TailSink {
  /**
   * The plan is made, before any body byte may leave: `streams` when the format lets this payload
   * stream (body bytes follow through data), false when it is held whole after all. The gate then
   * keeps its whole-mode answer (a 403 remains possible); the ICAP service starts its response
   * anyway, with no body byte before the verdict (Squid 5.7 stalls otherwise: docs/gate.md "Hold modes").
   */
  start(streams: boolean): void;
  /**
   * More bytes, in order; false asks for a pause until `resume` is called (once). The chunks are
   * views of pooled buffers: `written`, when given, is to be called once every write of them (and of
   * the batches before) completed, so that their memory is reused; a sink that cannot tell, or whose
   * write failed, does not call it (the buffers are then left to the garbage collector).
   */
  data(chunks: Buffer[], resume: () => void, written?: () => void): boolean;
}

/**
 * The decoding chain for a Content-Encoding header (applied in reverse order of listing), or the
 * one coding it cannot undo. The verifier must see the bytes the client will run, whatever the coding.
 */
export function contentDecoders(contentEncoding: string | string[] | undefined): { decoders: Transform[] } | { unsupported: string } {
  const codings = String(contentEncoding ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s && s !== 'identity');
  const decoders: Transform[] = [];
  for (const enc of codings.reverse()) {
    const dec = enc === 'gzip' || enc === 'x-gzip' ? createGunzip() : enc === 'deflate' ? createInflate() : enc === 'br' ? createBrotliDecompress() : undefined;
    if (!dec) {
      for (const d of decoders) d.destroy();
      return { unsupported: enc };
    }
    decoders.push(dec);
  }
  return { decoders };
}

/**
 * Random-access verifications (MSI) of this process run at most this many at once: each keeps its
 * container's tables (a FAT of 1/128 of the file, at most 16 MiB; a directory of at most 2 MiB)
 * and one read of at most 1 MiB in memory, so together they stay bounded whatever the number of
 * packages held. The others wait their turn (their bytes are in the spool).
 */
const RANDOM_ACCESS_CONCURRENCY = 4;
let randomAccessRunning = 0;
const randomAccessQueue: (() => void)[] = [];

async function withRandomAccessSlot<T>(f: () => Promise<T>): Promise<T> {
  if (randomAccessRunning < RANDOM_ACCESS_CONCURRENCY) randomAccessRunning++;
  else await new Promise<void>((resolve) => randomAccessQueue.push(resolve)); // a finishing one hands its slot over
  try {
    return await f();
  } finally {
    const next = randomAccessQueue.shift();
    if (next) next();
    else randomAccessRunning--;
  }
}

/**
 * One response body on its way through the gate, pushed in as it arrives (raw, as on the wire):
 * decoded, sniffed from its bytes (names and Content-Types are never trusted), then either held
 * (hashed by the incremental verifier while it is spooled, memory bounded) until the core's
 * verdict, or handed to a PassSink when it is not a payload and the rules pass such content.
 * Limits and early blocks (malformed headers, an oversize body) end it before the last byte.
 * It never decides a verdict: the core does; this only carries bytes to it and reports.
 */
export class PayloadInspection {
  /** Resolves once: with the verdict, a block, or `pass` (the sink then carries the rest). */
  readonly result: Promise<InspectionResult>;
  private resolveResult!: (r: InspectionResult) => void;
  private done = false;
  private mode: 'sniff' | 'hold' | 'pass' = 'sniff';
  private head: Buffer[] = [];
  private headBytes = 0;
  private decodedBytes = 0;
  private rawEnded = false;
  private spool: Spool | undefined;
  private readonly verifier: IncrementalVerifier;
  private readonly decoders: Transform[] = [];
  private readonly entry: Transform | undefined;
  private drainWaiters: (() => void)[] = [];
  /** Sinks (spool, digest thread, pass sink) that asked for a pause and have not resumed yet. */
  private waits = 0;
  private readonly job: DigestJob | undefined;
  /** Tail mode: what may leave before the verdict (undefined: held whole). */
  private tail: TailRelease | undefined;
  private tailStarted = false;
  /** The first decoder's input is full: waiting for its 'drain'. */
  private entryFull = false;

  /** The trust channel that judged this body (rules `channels`), when channels are in use. */
  readonly channel: string | undefined;

  constructor(
    private s: InspectionSettings,
    private readonly o: {
      contentEncoding?: string | string[]; host?: string; pathname: string; pass?: PassSink; tail?: TailSink; declaredLength?: number; owner?: string;
      /**
       * Resolve a verdict as soon as it is known, without waiting for the spool's flush (which can
       * take tens of ms for a big payload while the kernel writes back): the caller answers the
       * client's head at once and waits for `flushed` before the body. Otherwise the result waits for both.
       */
      verdictBeforeFlush?: boolean;
    },
  ) {
    const channel = s.trustFor && o.host !== undefined ? s.trustFor(o.host, o.pathname) : undefined;
    if (channel) this.s = { ...s, verifier: channel.verifier, nonPayload: channel.nonPayload ?? s.nonPayload };
    this.channel = channel?.name;
    this.result = new Promise((r) => (this.resolveResult = r));
    const chain = contentDecoders(o.contentEncoding);
    // Big or unknown-length bodies are hashed by a digest thread; small ones here (a round trip costs
    // more). A decoded body's length is unknown.
    const declared = 'decoders' in chain && chain.decoders.length === 0 ? Number(o.declaredLength ?? NaN) : NaN;
    const offload = 'decoders' in chain && !!s.digests && !(Number.isFinite(declared) && declared <= (s.inlineDigestBytes ?? 1 << 20));
    this.verifier = this.s.verifier.stream({ now: s.now?.(), digests: offload ? 'external' : 'inline' });
    if (offload) this.job = s.digests!.job(this.s.verifier.policy);
    if ('unsupported' in chain) {
      this.fail(gateReason('UNSUPPORTED_FORMAT', `unsupported Content-Encoding "${chain.unsupported}"`));
      return;
    }
    this.decoders = chain.decoders;
    if (this.decoders.length) {
      for (let i = 0; i + 1 < this.decoders.length; i++) this.decoders[i]!.pipe(this.decoders[i + 1]!);
      for (const d of this.decoders) {
        d.on('error', (e: Error) => {
          const why = gateReason('UPSTREAM_ERROR', `body does not decode (${e.message})`);
          if (this.mode === 'pass') this.o.pass!.error(why);
          else this.fail(why);
        });
      }
      const last = this.decoders[this.decoders.length - 1]!;
      last.on('data', (c: Buffer) => this.accept(c));
      last.on('end', () => this.decodedEnd());
      this.entry = this.decoders[0];
    }
  }

  /** Bytes this body holds in its spool until the spool is released, and of which in memory. */
  get spoolBytes(): number { return this.spool?.heldBytes ?? 0; }
  get spoolInMemoryBytes(): number { return this.spool?.inMemoryBytes ?? 0; }
  /** Tail mode: decoded bytes handed to the tail sink so far. */
  get releasedBytes(): number { return this.tail?.releasedBytes ?? 0; }
  /** Tail mode: why this payload is held whole after all (its format), once known. */
  get heldWholeBecause(): string | undefined { return this.tail?.whole; }

  /** Raw body bytes; false: wait for `onDrain` before pushing more. */
  push(raw: Buffer): boolean {
    if (this.done && this.mode !== 'pass') return true; // decided: the rest is discarded
    if (this.entry) {
      const ok = this.entry.write(raw);
      // One drain listener at a time: a caller resumed early (a sink drained first) may write again before it.
      if (!ok && !this.entryFull) {
        this.entryFull = true;
        this.entry.once('drain', () => { this.entryFull = false; this.drained(); });
      }
      return ok && this.waits === 0;
    }
    this.accept(raw);
    return this.waits === 0;
  }

  /** Called once when a `false` from push() is over. */
  onDrain(fn: () => void): void {
    this.drainWaiters.push(fn);
  }

  /** The raw body is complete. */
  end(): void {
    if (this.rawEnded) return;
    this.rawEnded = true;
    if (this.entry) this.entry.end();
    else this.decodedEnd();
  }

  /** Stops the decoders (a pass or block ended early): nothing more is read. A verified spool stays the caller's. */
  dispose(): void {
    for (const d of this.decoders) d.destroy();
    if (!this.done) this.finish({ kind: 'block', reasons: [gateReason('INTERNAL_ERROR', 'inspection abandoned')] });
  }

  /** Ends it from outside (upstream error, timeout, shutdown): a block unless already decided. */
  fail(why: GateReason, rule?: string): void {
    if (this.done) return;
    if (why.code === 'UPSTREAM_ERROR' || why.code === 'TIMEOUT') this.s.observer?.upstreamError(why.code);
    this.finish({ kind: 'block', reasons: [why], ...(rule ? { rule } : {}) });
  }

  /** The first `unverifiable` rule whose paths match (case-insensitive), then `unsignedDeltas` for `*.psf`. */
  private unverifiableRule(): UnverifiableRule | undefined {
    const path = this.o.pathname.toLowerCase();
    const rules: UnverifiableRule[] = [...(this.s.unverifiable ?? []), { name: 'unsignedDeltas', paths: ['*.psf'], action: this.s.unsignedDeltas }];
    return rules.find((r) => r.paths.some((p) => pathMatches(p.toLowerCase(), path)));
  }

  private drained(): void {
    if (this.waits > 0 || this.entryFull) return;
    const w = this.drainWaiters.splice(0);
    for (const fn of w) fn();
  }

  private accept(chunk: Buffer): void {
    if (this.done && this.mode !== 'pass') return;
    this.decodedBytes += chunk.byteLength;
    const max = this.s.maxPayloadBytes;
    if (max > 0 && this.decodedBytes > max) return this.fail(gateReason('OVERSIZE', `decoded body exceeds the ${max}-byte limit`));
    if (this.mode === 'hold') return this.hold(chunk);
    if (this.mode === 'pass') return this.passOn(chunk);
    this.head.push(chunk);
    this.headBytes += chunk.byteLength;
    if (this.headBytes >= SNIFF_BYTES) this.decide();
  }

  /** First bytes known: a payload is held; other content passes or blocks as the rules say. */
  private decide(): void {
    // Usually one socket read holds the whole sniff: no copy of it (the spool keeps chunks as they are).
    const head = this.head.length === 1 ? this.head[0]! : Buffer.concat(this.head);
    this.head = [];
    const format = sniffFormat(head);
    if (format !== 'unknown') {
      this.mode = 'hold';
      if (this.o.tail) this.tail = new TailRelease(format, this.s.verifier.policy.limits.maxHeaderBytes);
      this.spool = new Spool(this.s.spoolDir, this.s.memoryHoldBytes, this.s.memory, this.s.disk ? { budget: this.s.disk, owner: this.o.owner ?? '?' } : undefined);
      // A full or read-only spool ends the hold at once, with the reason (not an idle timeout later).
      this.spool.onError = (e) => {
        reportFault(this.s.observer, 'spool', e);
        this.fail(gateReason('INTERNAL_ERROR', `spool: ${e.message}`));
      };
      this.hold(head);
      return;
    }
    // Not a format the verifier checks: a kind the rules name by path, else metadata, else blocked.
    const named = this.unverifiableRule();
    const meta = named ? undefined : sniffMetadata(head);
    const rule = named ? (named.name === 'unsignedDeltas' ? 'unsignedDeltas' : `unverifiable:${named.name}`) : meta ? 'nonPayload' : 'unrecognised';
    const action = named ? named.action : meta ? this.s.nonPayload : 'block';
    if (action === 'block' || !this.o.pass) {
      const why = named?.name === 'unsignedDeltas' ? 'an unsigned Express delta (.psf): the rules block them (rule unsignedDeltas)'
        : named ? `a kind the verifier cannot check: the rules block it (rule unverifiable "${named.name}")`
          : meta ? `${meta.kind === 'empty' ? 'an empty body' : `${meta.kind} metadata`}, and the rules block other content on update hosts (rule nonPayload)`
            : 'neither a format the verifier checks (PE, CAB, MSI, MSIX, trust list, catalog) nor recognisable metadata (XML, JSON, text without #!, one DER certificate): blocked (rule unrecognised)';
      return this.fail(gateReason('UNSUPPORTED_FORMAT', why), rule);
    }
    this.textCheck = meta?.check;
    this.mode = 'pass';
    this.finish({ kind: 'pass', rule });
    this.o.pass.start(head, rule);
  }

  /** Metadata passed unverified stays text to its last byte; binary data after a text start cuts the pass. */
  private textCheck: MetadataCheck | undefined;

  private hold(chunk: Buffer): void {
    this.verifier.update(chunk);
    this.s.observer?.inspected(chunk.byteLength);
    if (this.verifier.earlyBlock) return this.fail(this.verifier.earlyBlock);
    const job = this.job;
    if (job) {
      if (job.failed) return this.fail(gateReason('INTERNAL_ERROR', `digest thread: ${job.failed.message}`));
      if (!job.update(chunk, this.uncongest)) this.congest();
    }
    if (!this.spool!.write(chunk, this.uncongest)) this.congest();
    if (this.spool!.refused) return this.fail(gateReason('OVERSIZE', `spool: ${this.spool!.refused}; try again later`));
    if (this.tail) {
      // Spooled first: what leaves early is always a prefix of what the spool holds.
      const out = this.tail.offer(chunk);
      // The head goes out as soon as the plan is to stream (a proxy waiting for an answer, as Squid's
      // ICAP client does, sees one at once), the body bytes as the lag lets them.
      if (!this.tailStarted && this.tail.planned) {
        this.tailStarted = true;
        this.o.tail!.start(this.tail.streaming);
      }
      if (out.length) {
        const finished = this.tail.takeFinished();
        if (!this.o.tail!.data(out, this.uncongest, finished.length ? () => giveSlabs(finished) : undefined)) this.congest();
      }
    }
  }

  private passOn(chunk: Buffer): void {
    if (this.textCheck && !this.textCheck.update(chunk)) return this.stopPass();
    if (!this.o.pass!.data(chunk, this.uncongest)) this.congest();
  }

  private stopPass(): void {
    this.textCheck = undefined;
    this.mode = 'sniff'; // nothing more is passed on
    for (const d of this.decoders) d.destroy();
    this.o.pass!.error(gateReason('UNSUPPORTED_FORMAT', 'content passed as metadata turned out not to be text (binary data after a text start): the response was cut'));
  }

  /** A sink is full: stop the decoders too, or a small compressed input could fill memory. */
  private congest(): void {
    if (this.waits++ === 0) this.decoders[this.decoders.length - 1]?.pause();
  }

  private readonly uncongest = (): void => {
    if (this.waits === 0 || --this.waits > 0) return;
    this.decoders[this.decoders.length - 1]?.resume();
    this.drained();
  };

  private decodedEnd(): void {
    if (this.mode === 'pass') {
      if (this.textCheck && !this.textCheck.end()) return this.stopPass();
      return this.o.pass!.end();
    }
    if (this.done) return;
    if (this.mode === 'sniff') {
      this.decide(); // changes this.mode
      if (this.done) {
        if ((this.mode as string) === 'pass') {
          if (this.textCheck && !this.textCheck.end()) return this.stopPass();
          this.o.pass!.end();
        }
        return;
      }
    }
    // The spool's last bytes go to the disk while the verdict is computed.
    const spool = this.spool!;
    const flushed = spool.end().catch((e: Error) => { throw new Error(`spool: ${e.message}`); });
    flushed.catch(() => { /* handled where it is awaited; a verdict given before the flush may leave it unawaited */ });
    let verifyMs = 0;
    const judge = (f: () => Verdict): Verdict => {
      const t0 = process.hrtime.bigint();
      const v = f();
      verifyMs = Number(process.hrtime.bigint() - t0) / 1e6;
      this.s.observer?.verified(verifyMs, v.verdict);
      return v;
    };
    const job = this.job;
    const external = job?.end().catch((e: Error) => { throw new Error(`digest thread: ${e.message}`); });
    let verdictReady: Promise<Verdict>;
    if (this.verifier.needsRandomAccess) {
      // MSI: its digest covers streams scattered over the package, read from the finished spool a
      // piece at a time (memory stays bounded whatever the size); the verdict time counts the reads.
      verdictReady = Promise.all([external, flushed]).then(([d]) => withRandomAccessSlot(async () => {
        // Decided meanwhile (a timeout, a shutdown): its spool is gone, nothing to read.
        if (this.done) return this.verifier.finish();
        const t0 = process.hrtime.bigint();
        const v = await this.verifier.finishFrom({ size: spool.size, readAt: (offset, length) => spool.readAt(offset, length) }, d);
        verifyMs = Number(process.hrtime.bigint() - t0) / 1e6;
        this.s.observer?.verified(verifyMs, v.verdict);
        return v;
      }));
    } else {
      verdictReady = external
        ? external.then((d) => judge(() => this.verifier.finishWith(d)))
        : Promise.resolve().then(() => judge(() => this.verifier.finish()));
    }
    const decided = (verdict: Verdict): void => {
      if (this.done) return;
      if (verdict.verdict !== 'allow') return this.finish({ kind: 'block', reasons: verdict.reasons, verdict });
      this.finish({ kind: 'verdict', verdict, spool, verifyMs, ...(spool.flushComplete ? {} : { flushed }) });
    };
    const failed = (e: Error): void => this.fail(gateReason('INTERNAL_ERROR', e.message));
    // The verdict is the decision, the flush only I/O: with verdictBeforeFlush the caller gets the
    // verdict at once (a block needs no flush at all) and waits for `flushed` before reading.
    if (this.o.verdictBeforeFlush) verdictReady.then(decided, failed);
    else Promise.all([verdictReady, flushed]).then(([verdict]) => decided(verdict), failed);
  }

  private finish(r: InspectionResult): void {
    if (this.done) return;
    this.done = true;
    this.tail?.dispose();
    if (r.kind !== 'verdict') this.job?.abort();
    if (r.kind !== 'verdict') {
      this.spool?.release();
      if (r.kind === 'block') for (const d of this.decoders) d.destroy();
    }
    this.resolveResult(r);
  }
}
