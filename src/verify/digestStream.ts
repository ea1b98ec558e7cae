import { createHash } from 'node:crypto';
import type { DigestName } from './algorithms.js';
import type { ApprovedCaPolicy } from './approvedCaPolicy.js';
import { RangeHasher, type ByteRange } from './rangeHasher.js';
import { parsePeLayout, peDigestRanges } from './pe/peLayout.js';
import { parseCabLayout } from './cab/cabLayout.js';
import { sniffFormat, SNIFF_BYTES } from './format/sniffFormat.js';
import type { ExternalDigests } from './incrementalVerifier.js';

/**
 * The digests of a payload without a verdict: the whole-file SHA-256 and the Authenticode digests
 * over the ranges the payload's own layout gives, found the way IncrementalVerifier finds them
 * (same sniffer, same layout parsers, same limits). It imports no ASN.1 library, so a digest
 * thread running it stays small. Its result is only ever used by an IncrementalVerifier made with
 * `digests: 'external'`, which blocks unless these ranges are exactly the ones it found itself.
 */
export class DigestStream {
  private readonly whole = createHash('sha256');
  private total = 0;
  private head: Uint8Array[] = [];
  private headBytes = 0;
  private kind: 'sniff' | 'pe' | 'cab' | 'none' = 'sniff';
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
    const f = sniffFormat(this.joinedHead());
    this.kind = f === 'pe' ? 'pe' : f === 'cab' ? 'cab' : 'none';
    if (this.kind === 'none') this.head = [];
  }

  private joinedHead(): Uint8Array {
    if (this.head.length !== 1) this.head = [Buffer.concat(this.head)];
    return this.head[0]!;
  }

  private tryLayout(): void {
    if (this.kind !== 'pe' && this.kind !== 'cab') return;
    const head = this.joinedHead();
    let span: { offset: number; size: number };
    try {
      if (this.kind === 'pe') {
        const r = parsePeLayout(head, this.limits.maxHeaderBytes);
        if (r.kind === 'need') {
          if (r.bytes > this.limits.maxHeaderBytes) this.giveUp();
          return;
        }
        this.ranges = peDigestRanges(r.layout, Number.MAX_SAFE_INTEGER);
        span = { offset: r.layout.certTableOffset, size: r.layout.certTableSize };
      } else {
        const r = parseCabLayout(head, this.limits.maxHeaderBytes);
        if (r.kind === 'need') {
          if (r.bytes > this.limits.maxHeaderBytes) this.giveUp();
          return;
        }
        this.ranges = [...r.layout.ranges];
        span = { offset: r.layout.signatureOffset, size: r.layout.signatureSize };
      }
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
