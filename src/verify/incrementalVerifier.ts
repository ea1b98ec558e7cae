import { createHash, type Hash } from 'node:crypto';
import type { DigestName } from './algorithms.js';
import type { ApprovedCaPolicy } from './approvedCaPolicy.js';
import { Verifier } from './verifier.js';
import { reason, type PayloadFormat, type Verdict, type VerdictReason } from './verdict.js';
import { MalformedError } from './malformed.js';
import { RangeHasher } from './rangeHasher.js';
import { sniffFormat, SNIFF_BYTES } from './format/sniffFormat.js';
import { formatFor } from './format/formats.js';
import { signedContentVerdict, verifyRandomAccess } from './format/signedContentVerdict.js';
import { DetachedCmsCheck } from './detachedCmsVerification.js';
import { TrustListCabinetStream, TrustListStream } from './ctl/trustListStreams.js';
import { type RandomAccessFormat, type RandomAccessSource, type StreamingFormat } from './format/signedFileFormat.js';

/** A format stream's verdict; `format` refines the sniffed one (a cabinet that holds a trust list). */
type Partial = Omit<Verdict, 'format' | 'sha256' | 'size'> & { format?: PayloadFormat };

/** One container format's streaming state: fed bytes at absolute offsets, then asked for a verdict. */
interface FormatStream {
  update(chunk: Uint8Array, at: number): void;
  finish(total: number): Partial;
}

const block = (...reasons: VerdictReason[]): Partial => ({ verdict: 'block', reasons });

/**
 * A streaming format's state: buffers the header region until the format finds its layout, then
 * hashes the format's digest plan as bytes arrive and keeps only the signature span.
 */
class LayoutStream<L> implements FormatStream {
  private head: Uint8Array[] = [];
  private layout: L | undefined;
  private hasher: RangeHasher | undefined;
  private signature: Uint8Array | undefined;
  private signatureFilled = 0;
  private failure: VerdictReason | undefined;
  private trailing = 0;
  /** Digests computed elsewhere (another thread) over the same bytes; then this stream hashes nothing. */
  external: Map<DigestName, Buffer> | undefined;

  constructor(
    private readonly format: StreamingFormat<L>,
    private readonly verifier: Verifier,
    private readonly now: Date,
    private readonly hashing = true,
  ) {}

  private get policy(): Readonly<ApprovedCaPolicy> { return this.verifier.policy; }

  /** The byte ranges the Authenticode digest covers, once the layout is known. */
  get ranges(): readonly (readonly [number, number])[] | undefined {
    return this.layout ? this.format.digestRanges(this.layout) : undefined;
  }

  /** The file digests: computed here, or supplied by finishWith. */
  private fileDigests(): Map<DigestName, Buffer> {
    if (this.hashing) return this.hasher!.digests();
    if (!this.external) throw new Error('file digests were not supplied');
    return this.external;
  }

  update(chunk: Uint8Array, at: number): void {
    if (this.failure) return;
    try {
      if (!this.layout) {
        // The first chunk is tried as it is (usually the whole header is in it); only bytes kept for
        // a later try are copied (the caller may reuse its buffer).
        const first = this.head.length === 0;
        const head = first ? chunk : Buffer.concat([...this.head, chunk]);
        const r = this.format.layout(head, this.policy.limits.maxHeaderBytes);
        if ('need' in r) {
          if (r.need > this.policy.limits.maxHeaderBytes) throw new MalformedError('headers exceed the header limit');
          this.head = [first ? new Uint8Array(head) : head];
          return;
        }
        this.layout = r.layout;
        const span = this.format.signatureSpan(r.layout);
        if (span.size > this.policy.limits.maxSignatureBytes) {
          this.failure = reason('OVERSIZE', `signature of ${span.size} bytes exceeds the ${this.policy.limits.maxSignatureBytes}-byte limit`);
          return;
        }
        if (span.size) this.signature = new Uint8Array(span.size);
        this.hasher = new RangeHasher(this.format.digestRanges(r.layout), this.policy.fileDigests);
        this.head = [];
        this.consume(head, 0);
        return;
      }
      this.consume(chunk, at);
    } catch (err) {
      this.failure = reason(err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR', (err as Error).message);
    }
  }

  private consume(chunk: Uint8Array, at: number): void {
    if (this.hashing) this.hasher!.update(chunk, at);
    const span = this.format.signatureSpan(this.layout!);
    if (!span.size) return;
    const end = at + chunk.byteLength;
    const from = Math.max(at, span.offset);
    const to = Math.min(end, span.offset + span.size);
    if (from < to) {
      this.signature!.set(chunk.subarray(from - at, to - at), from - span.offset);
      this.signatureFilled += to - from;
    }
    if (end > span.offset + span.size) this.trailing += end - Math.max(at, span.offset + span.size);
  }

  finish(total: number): Partial {
    if (this.failure) return block(this.failure);
    if (!this.layout) return block(reason('MALFORMED', `payload ends (${total} bytes) before its headers are complete`));
    const span = this.format.signatureSpan(this.layout);
    if (!span.size) return block(reason('NOT_SIGNED', 'the file carries no Authenticode signature'));
    if (total < span.offset + span.size || this.signatureFilled !== span.size) {
      return block(reason('MALFORMED', `payload is truncated: ${total} bytes, the signature ends at ${span.offset + span.size}`));
    }
    const partial = signedContentVerdict(this.format.signatures(this.layout, this.signature!, this.fileDigests()), this.verifier, this.now);
    if (this.trailing > 0) {
      const t = reason('TRAILING_DATA', `${this.trailing} bytes after the signature, outside what the signature covers`);
      return { ...partial, verdict: 'block', reasons: [t, ...partial.reasons] };
    }
    return partial;
  }
}

/** Formats the core recognises but does not verify: hashed for the record, then blocked. */
class UnsupportedStream implements FormatStream {
  constructor(private readonly why: VerdictReason) {}
  update(): void {}
  finish(): Partial { return block(this.why); }
}

/**
 * A random-access format (MSI): nothing to do while bytes stream past (the whole-file digest is the
 * verifier's); the verdict needs the finished payload, through IncrementalVerifier.finishFrom().
 */
class RandomAccessPending implements FormatStream {
  constructor(readonly format: RandomAccessFormat) {}
  update(): void {}
  finish(): Partial {
    return block(reason('INTERNAL_ERROR', `${this.format.name.toUpperCase()} is verified from the finished payload (random access), and none was given`));
  }
}

class DetachedStream implements FormatStream {
  private readonly hashes: Map<DigestName, Hash>;
  constructor(private readonly check: DetachedCmsCheck) {
    this.hashes = new Map(check.contentDigests().map((d) => [d, createHash(d)]));
  }
  update(chunk: Uint8Array): void { for (const h of this.hashes.values()) h.update(chunk); }
  finish(): Partial {
    const digests = new Map<DigestName, Buffer>();
    for (const [d, h] of this.hashes) digests.set(d, h.digest());
    return this.check.verdict(digests);
  }
}

export interface IncrementalVerifierOptions {
  /** The instant to judge validity at when no timestamp proves one (default: now). */
  now?: Date;
  /** A detached CMS signature over the whole payload (`verify --detached`). */
  detachedSignature?: Uint8Array;
  /**
   * 'external': this verifier hashes nothing; the caller computes the same digests over the same
   * bytes elsewhere (a worker thread running a DigestStream) and passes them to finishWith().
   */
  digests?: 'inline' | 'external';
}

/** What a DigestStream computed: the whole-file SHA-256, the Authenticode digests and their ranges. */
export interface ExternalDigests {
  sha256: string;
  fileDigests: Map<DigestName, Buffer>;
  /** The ranges the Authenticode digests cover (null if no layout was found): must be the verifier's own. */
  ranges: (readonly [number, number])[] | null;
}

/**
 * The streaming verifier: feed chunks as they arrive, then `finish()` returns the Verdict. Memory is
 * bounded by the header and signature limits whatever the payload size. It never throws: anything
 * unexpected becomes a block (MALFORMED or INTERNAL_ERROR), never an allow.
 */
export class IncrementalVerifier {
  private readonly whole = createHash('sha256');
  private readonly now: Date;
  private total = 0;
  private sniffBuffer: Uint8Array[] = [];
  private stream: FormatStream | undefined;
  private format: PayloadFormat = 'unknown';
  private early: VerdictReason | undefined;
  private finished: Verdict | undefined;
  private readonly hashing: boolean;
  private external: ExternalDigests | undefined;

  private readonly verifier: Verifier;

  /** Built by Verifier.stream(); a policy makes a one-off Verifier (tests, scripts). */
  constructor(source: Verifier | ApprovedCaPolicy, private readonly options: IncrementalVerifierOptions = {}) {
    this.verifier = Verifier.of(source);
    this.now = options.now ?? new Date();
    this.hashing = (options.digests ?? 'inline') !== 'external';
    if (!this.hashing && options.detachedSignature) throw new Error('external digests are not supported with a detached signature');
    if (options.detachedSignature) {
      this.format = 'cms-detached';
      try {
        this.stream = new DetachedStream(new DetachedCmsCheck(options.detachedSignature, this.verifier, this.now));
      } catch (err) {
        this.stream = new UnsupportedStream(reason(err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR', `detached signature: ${(err as Error).message}`));
      }
    }
  }

  get bytesSeen(): number { return this.total; }

  /** A reason to block that is already certain (e.g. OVERSIZE), so a caller may stop early. */
  get earlyBlock(): VerdictReason | undefined { return this.early; }

  update(chunk: Uint8Array): void {
    if (this.finished) throw new Error('update() after finish()');
    if (chunk.byteLength === 0) return;
    const at = this.total;
    this.total += chunk.byteLength;
    if (this.hashing) this.whole.update(chunk);
    const max = this.verifier.policy.limits.maxPayloadBytes;
    if (max > 0 && this.total > max && !this.early) {
      this.early = reason('OVERSIZE', `payload exceeds the ${max}-byte limit`);
    }
    if (this.early) return;
    try {
      if (!this.stream) {
        // A first chunk long enough to sniff goes to the format stream as it is (which copies what it keeps).
        if (this.sniffBuffer.length === 0 && chunk.byteLength >= SNIFF_BYTES) return this.startStream(chunk);
        this.sniffBuffer.push(new Uint8Array(chunk)); // a copy (memcpy): callers may reuse their buffer
        if (this.total < SNIFF_BYTES) return;
        this.startStream(Buffer.concat(this.sniffBuffer));
        return;
      }
      this.stream.update(chunk, at);
    } catch (err) {
      this.early = reason('INTERNAL_ERROR', (err as Error).message);
    }
  }

  private startStream(head: Uint8Array): void {
    this.sniffBuffer = [];
    const format = formatFor(head);
    if (format) {
      this.format = format.name;
      if (format.mode === 'streaming') {
        const layout = new LayoutStream(format, this.verifier, this.now, this.hashing);
        // An unsigned cabinet holding one .stl (authrootstl.cab) is judged by the signed CTL inside it.
        this.stream = format.name === 'cab' ? new TrustListCabinetStream(layout, this.verifier, this.now) : layout;
      } else this.stream = new RandomAccessPending(format);
    } else if (sniffFormat(head) === 'cms') {
      // A bare SignedData: a certificate trust list (.stl) or a catalog (.cat); anything else is refused there.
      this.format = 'unknown';
      this.stream = new TrustListStream(this.verifier, this.now);
    } else {
      this.format = 'unknown';
      this.stream = new UnsupportedStream(reason('UNSUPPORTED_FORMAT', 'not a PE, CAB, MSI or MSIX file, nor a trust list or catalog (format sniffed from the bytes)'));
    }
    this.stream.update(head, 0);
  }

  /**
   * The verdict, with digests computed elsewhere over the same bytes (mode 'external'). The
   * Authenticode ranges must be the ones this verifier found, else the file is blocked.
   */
  finishWith(d: ExternalDigests): Verdict {
    if (this.hashing) throw new Error('finishWith() is for verifiers made with digests: external');
    if (this.finished) return this.finished;
    this.external = d;
    return this.finish();
  }

  /**
   * True when the sniffed format is verified from the finished payload (MSI): the caller then ends
   * with finishFrom() instead of finish()/finishWith().
   */
  get needsRandomAccess(): boolean {
    if (this.early || this.finished) return false;
    if (!this.stream && this.total > 0) {
      try { this.startStream(Buffer.concat(this.sniffBuffer)); } catch { return false; }
    }
    return this.stream instanceof RandomAccessPending;
  }

  /**
   * The verdict of a random-access format, read from the finished payload through `source` (which
   * must hold exactly the bytes fed to update()). With `digests: 'external'`, `external` carries the
   * whole-file SHA-256 from the digest thread. Never rejects: failures are blocks.
   */
  async finishFrom(source: RandomAccessSource, external?: ExternalDigests): Promise<Verdict> {
    if (this.finished) return this.finished;
    if (!this.needsRandomAccess) return external ? this.finishWith(external) : this.finish();
    let sha256: string;
    if (this.hashing) sha256 = this.whole.digest('hex');
    else if (external && /^[0-9a-f]{64}$/.test(external.sha256)) sha256 = external.sha256;
    else return this.conclude(block(reason('INTERNAL_ERROR', 'the file digests were not computed')), '');
    if (source.size !== this.total) {
      return this.conclude(block(reason('INTERNAL_ERROR', `the finished payload holds ${source.size} bytes, ${this.total} were verified`)), sha256);
    }
    const pending = this.stream as RandomAccessPending;
    return this.conclude(await verifyRandomAccess(pending.format, source, this.verifier, this.now), sha256);
  }

  /** The one rule every path obeys: allow only with no reason to block. */
  private conclude(partial: Partial, sha256: string): Verdict {
    if (this.finished) return this.finished;
    const verdict = partial.reasons.length === 0 && partial.verdict === 'allow' ? 'allow' : 'block';
    if (verdict === 'block' && partial.reasons.length === 0) partial.reasons.push(reason('INTERNAL_ERROR', 'blocked without a recorded reason'));
    this.finished = { ...partial, verdict, format: partial.format ?? this.format, sha256, size: this.total };
    return this.finished;
  }

  finish(): Verdict {
    if (this.finished) return this.finished;
    let sha256: string;
    let partial: Partial;
    if (this.hashing) sha256 = this.whole.digest('hex');
    else if (this.external && /^[0-9a-f]{64}$/.test(this.external.sha256)) sha256 = this.external.sha256;
    else {
      // No digests: never an allow.
      this.finished = { verdict: 'block', reasons: [reason('INTERNAL_ERROR', 'the file digests were not computed')], format: this.format, sha256: '', size: this.total };
      return this.finished;
    }
    try {
      if (!this.hashing && !this.early) {
        if (!this.stream) this.startStream(Buffer.concat(this.sniffBuffer));
        const layoutStream = this.stream instanceof TrustListCabinetStream ? this.stream.inner : this.stream;
        if (layoutStream instanceof LayoutStream) {
          const mine = layoutStream.ranges;
          const theirs = this.external!.ranges;
          if (mine && JSON.stringify(mine) !== JSON.stringify(theirs)) throw new Error('the digest thread hashed other ranges than the layout gives');
          layoutStream.external = this.external!.fileDigests;
        }
      }
      if (this.early) partial = block(this.early);
      else {
        if (!this.stream) this.startStream(Buffer.concat(this.sniffBuffer));
        partial = this.total === 0 ? block(reason('NOT_SIGNED', 'empty payload')) : this.stream!.finish(this.total);
      }
    } catch (err) {
      partial = block(reason(err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR', (err as Error).message));
    }
    return this.conclude(partial, sha256);
  }
}

/** Whole-buffer convenience over the verifier, for every format (random-access ones read the buffer itself). */
export async function verifyBuffer(bytes: Uint8Array, verifier: Verifier | ApprovedCaPolicy, options: IncrementalVerifierOptions = {}): Promise<Verdict> {
  return Verifier.of(verifier).verify(bytes, options);
}

/** Whole-buffer convenience over the streaming verifier (streaming formats only: an MSI needs verifyBuffer). */
export function verifyBytes(bytes: Uint8Array, verifier: Verifier | ApprovedCaPolicy, options: IncrementalVerifierOptions = {}): Verdict {
  const v = new IncrementalVerifier(verifier, options);
  v.update(bytes);
  return v.finish();
}
