import type { Verifier } from '../verifier.js';
import { reason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import { parseCabLayout } from '../cab/cabLayout.js';
import { singleCabinetFile } from './cabinetFile.js';
import { trustListVerdict, type TrustListPartial } from './trustListVerification.js';

/** The shape of the incremental verifier's per-format streams. */
export interface TrustListFormatStream {
  update(chunk: Uint8Array, at: number): void;
  finish(total: number): TrustListPartial;
}

/** Keeps the first `limit` bytes of a payload; past that, remembers only that it overflowed. */
class BoundedBuffer {
  private parts: Uint8Array[] = [];
  size = 0;
  overflow = false;
  constructor(private readonly limit: number) {}
  add(chunk: Uint8Array): void {
    if (this.overflow) return;
    if (this.size + chunk.byteLength > this.limit) {
      this.overflow = true;
      this.parts = [];
      return;
    }
    this.parts.push(new Uint8Array(chunk)); // a copy: callers may reuse their buffer
    this.size += chunk.byteLength;
  }
  bytes(): Buffer { return Buffer.concat(this.parts); }
}

/**
 * A bare CMS SignedData payload: a certificate trust list (.stl) or a catalog (.cat). The whole
 * object is the signature, so it is bounded by the signature limit.
 */
export class TrustListStream implements TrustListFormatStream {
  private readonly buffer: BoundedBuffer;
  constructor(private readonly verifier: Verifier, private readonly now: Date) {
    this.buffer = new BoundedBuffer(verifier.policy.limits.maxSignatureBytes);
  }
  update(chunk: Uint8Array): void { this.buffer.add(chunk); }
  finish(): TrustListPartial {
    if (this.buffer.overflow) return { verdict: 'block', reasons: [reason('OVERSIZE', `a CMS object over the ${this.verifier.policy.limits.maxSignatureBytes}-byte signature limit`)] };
    return trustListVerdict(this.buffer.bytes(), this.verifier, this.now, 'ctl').verdict;
  }
}

/**
 * Wraps the cabinet stream: a cabinet with no Authenticode signature of its own that holds exactly
 * one `.stl` (authrootstl.cab, disallowedcertstl.cab) is judged by the signed CTL inside it. Only
 * unsigned cabinets are buffered, and only up to the signature limit; every other cabinet gets the
 * wrapped stream's verdict unchanged.
 */
export class TrustListCabinetStream implements TrustListFormatStream {
  private readonly buffer: BoundedBuffer;
  private signed: boolean | undefined;
  constructor(readonly inner: TrustListFormatStream, private readonly verifier: Verifier, private readonly now: Date) {
    this.buffer = new BoundedBuffer(verifier.policy.limits.maxSignatureBytes);
  }
  update(chunk: Uint8Array, at: number): void {
    this.inner.update(chunk, at);
    if (this.signed) return;
    this.buffer.add(chunk);
    if (this.signed === undefined && !this.buffer.overflow) {
      try {
        const r = parseCabLayout(this.buffer.bytes(), this.verifier.policy.limits.maxHeaderBytes);
        if (r.kind === 'layout') this.signed = r.layout.signed;
      } catch {
        this.signed = true; // not a cabinet layout the wrapped stream accepts: its verdict stands
      }
      if (this.signed) this.buffer.overflow = true;
    }
  }
  finish(total: number): TrustListPartial {
    const own = this.inner.finish(total);
    if (this.signed !== false || this.buffer.overflow || !own.reasons.some((r) => r.code === 'NOT_SIGNED')) return own;
    let file;
    try {
      file = singleCabinetFile(this.buffer.bytes(), this.verifier.policy.limits.maxSignatureBytes);
    } catch (err) {
      if (err instanceof MalformedError && /holds one file/.test(err.message)) return own;
      return { verdict: 'block', reasons: [reason('MALFORMED', `trust-list cabinet: ${(err as Error).message}`)] };
    }
    if (!/\.stl$/i.test(file.name)) return own;
    return trustListVerdict(file.data, this.verifier, this.now, 'ctl-cab').verdict;
  }
}
