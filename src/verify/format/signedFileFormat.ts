import type { DigestName } from '../algorithms.js';
import type { ApprovedCaPolicy } from '../approvedCaPolicy.js';
import type { PayloadFormat, VerdictReason } from '../verdict.js';
import type { FileEvidence } from '../authenticodeVerification.js';
import type { ByteRange } from '../rangeHasher.js';

/**
 * The bytes of a finished payload, read where they lie (a spool in memory or on disk, a file):
 * for formats whose digest is not a set of file-order ranges. `readAt` returns exactly `length`
 * bytes or rejects; callers keep each read small, so memory stays bounded whatever the size.
 */
export interface RandomAccessSource {
  readonly size: number;
  readAt(offset: number, length: number): Promise<Uint8Array>;
}

/** What binds a signature to the content: today Authenticode indirect data of one SPC type. */
export interface AuthenticodeBinding {
  kind: 'authenticode';
  /** The SpcIndirectDataContent data type the signature must name. */
  dataType: FileEvidence['dataType'];
  /** For SpcSipInfo: the SIP GUID the signature must name (MSI's differs from APPX's). */
  sipGuid?: Uint8Array;
  /** The file digests the format computed, one per algorithm the rules hash with. */
  fileDigests: Map<DigestName, Buffer>;
}

/** What a format found in a payload: its signatures (primary first) and how they bind to the content. */
export type SignedContent =
  | {
    kind: 'signed'; signatures: Uint8Array[]; binding: AuthenticodeBinding; problems: VerdictReason[];
    /** Packages inside this one (an APPX bundle's), each verified on its own: any that blocks blocks the whole. */
    inner?: { name: string; content: SignedContent }[];
  }
  /** Not signed, or refused before any signature was looked at (OVERSIZE, a structural TRAILING_DATA...). */
  | { kind: 'blocked'; reasons: VerdictReason[] };

export type FormatLimits = Pick<ApprovedCaPolicy['limits'], 'maxSignatureBytes' | 'maxHeaderBytes'>;

/**
 * One signed file format, recognised from its first bytes. Adding a format is one folder under
 * src/verify/ implementing one of the two modes, plus its line in format/formats.ts.
 */
export type SignedFileFormat = StreamingFormat<unknown> | RandomAccessFormat;

/**
 * Streaming mode (PE, CAB): the layout comes from a bounded prefix; it hands the digest threads a
 * plan (byte ranges in file order) and names one signature span, so the file digest and the
 * signature are ready at the last byte and nothing but the headers and the signature is kept.
 */
export interface StreamingFormat<L> {
  readonly name: PayloadFormat;
  readonly mode: 'streaming';
  sniff(head: Uint8Array): boolean;
  /** The layout once `head` holds the headers, else how many bytes it needs. MalformedError for bad headers. */
  layout(head: Uint8Array, maxHeaderBytes: number): { layout: L } | { need: number };
  /** The digest plan: the half-open byte ranges the file digest covers, in file order. */
  digestRanges(layout: L): readonly ByteRange[];
  /** Where the signature blob lies; size 0 when the file is unsigned. */
  signatureSpan(layout: L): { offset: number; size: number };
  /** The signatures found in the (complete) signature span, and how they bind to the file digests. */
  signatures(layout: L, span: Uint8Array, fileDigests: Map<DigestName, Buffer>): SignedContent;
}

/**
 * Random-access mode (MSI): the digest covers parts scattered over the file in an order of its
 * own, so the format reads the finished payload through `readAt` after the last byte.
 */
export interface RandomAccessFormat {
  readonly name: PayloadFormat;
  readonly mode: 'random-access';
  sniff(head: Uint8Array): boolean;
  /** Parses the container (bounded), finds the signatures and computes the digests they sign. */
  read(source: RandomAccessSource, limits: FormatLimits, algorithms: readonly DigestName[]): Promise<SignedContent>;
}

/** A RandomAccessSource over bytes already in memory. */
export function bytesSource(bytes: Uint8Array): RandomAccessSource {
  return {
    size: bytes.byteLength,
    readAt: async (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > bytes.byteLength) throw new RangeError(`read of ${length} bytes at ${offset} past the end (${bytes.byteLength})`);
      return bytes.subarray(offset, offset + length);
    },
  };
}
