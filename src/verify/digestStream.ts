import { createHash } from 'node:crypto';
import type { DigestName } from './algorithms.js';
import type { ApprovedCaPolicy } from './approvedCaPolicy.js';
import { RangeHasher, type ByteRange } from './rangeHasher.js';
import { SNIFF_BYTES } from './format/sniffFormat.js';
import { formatFor } from './format/formats.js';
import type { StreamingFormat } from './format/signedFileFormat.js';
import type { ExternalDigests } from './incrementalVerifier.js';

/**
 * The digests of a payload without a verdict: the whole-file SHA-256 and the Authenticode digests
 * over the plan (byte ranges) the payload's streaming format hands out, found the way
 * IncrementalVerifier finds them (same format registry, same layout parsers, same limits).
 * Random-access formats (MSI) get the whole-file SHA-256 only: their digest is read after the
 * last byte. It imports no ASN.1 library, so a digest thread running it stays small. Its result is only ever used by an IncrementalVerifier made with
 * `digests: 'external'`, which blocks unless these ranges are exactly the ones it found itself.
 */
export class DigestStream {
  private readonly whole = createHash('sha256');
  private total = 0;
  private head: Uint8Array[] = [];
  private headBytes = 0;
  private kind: 'sniff' | 'layout' | 'none' = 'sniff';
  private format: StreamingFormat<unknown> | undefined;
  private ranges: ByteRange[] | undefined;
  private hasher: RangeHasher | undefined;

  constructor(private readonly algorithms: readonly DigestName[], private readonly limits: Pick<ApprovedCaPolicy['limits'], 'maxHeaderBytes' | 'maxSignatureBytes'>) {}

  update(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    const at = this.total;
    this.total += chunk.byteLength;
    this.whole.update(chunk);
    if (this.hasher) return this.hasher.update(chunk, at);
    if (this.kind === 'none' || this.ranges) return;
    this.head.push(new Uint8Array(chunk)); // a copy: the caller reuses its buffer
    this.headBytes += chunk.byteLength;
    if (this.kind === 'sniff') {
      if (this.total < SNIFF_BYTES) return;
      this.sniff();
    }
    this.tryLayout();
  }

  private sniff(): void {
    const f = formatFor(this.joinedHead());
    this.format = f?.mode === 'streaming' ? f : undefined;
    this.kind = this.format ? 'layout' : 'none';
    if (this.kind === 'none') this.head = [];
  }

  private joinedHead(): Uint8Array {
    if (this.head.length !== 1) this.head = [Buffer.concat(this.head)];
    return this.head[0]!;
  }

  private tryLayout(): void {
    if (this.kind !== 'layout' || !this.format) return;
    const head = this.joinedHead();
    let span: { offset: number; size: number };
    try {
      const r = this.format.layout(head, this.limits.maxHeaderBytes);
      if ('need' in r) {
        if (r.need > this.limits.maxHeaderBytes) this.giveUp();
        return;
      }
      this.ranges = this.format.digestRanges(r.layout).map(([a, b]) => [a, b] as const);
      span = this.format.signatureSpan(r.layout);
    } catch {
      return this.giveUp(); // malformed headers: the verifier blocks them (MALFORMED); the whole-file digest goes on
    }
    this.head = [];
    // A signature over the limit is blocked (OVERSIZE) by the verifier: no Authenticode digest is needed.
    if (span.size > this.limits.maxSignatureBytes) return;
    this.hasher = new RangeHasher(this.ranges, this.algorithms);
    this.hasher.update(head, 0);
  }

  private giveUp(): void {
    this.kind = 'none';
    this.head = [];
  }

  /** Ends the stream: the digests over every byte fed, and the Authenticode ranges (null without a layout). */
  finish(): ExternalDigests {
    if (this.kind === 'sniff' && this.total > 0) {
      this.sniff();
      this.tryLayout();
    } else if (!this.ranges && this.kind !== 'none' && this.headBytes > 0) {
      this.tryLayout();
    }
    return {
      sha256: this.whole.digest('hex'),
      fileDigests: this.hasher?.digests() ?? new Map(),
      ranges: this.ranges ? this.ranges.map(([a, b]) => [a, b] as const) : null,
    };
  }
}
