import * as asn1js from 'asn1js';
import { MalformedError } from '../malformed.js';
import { readDerHeader } from '../derHeader.js';

/** Nesting deeper than this is refused before any recursion can hurt (ASN.1 "bombs"). */
export const MAX_DER_DEPTH = 64;

function minimalLengthOctets(length: number): number {
  if (length < 0x80) return 1;
  let n = 0;
  for (let l = length; l > 0; l = Math.floor(l / 256)) n++;
  return 1 + n;
}

function walk(el: asn1js.AsnType, depth: number, what: string): void {
  if (depth > MAX_DER_DEPTH) throw new MalformedError(`${what}: nested deeper than ${MAX_DER_DEPTH}`);
  const len = el.lenBlock;
  if (len.isIndefiniteForm) throw new MalformedError(`${what}: indefinite length (BER, not DER)`);
  if (len.blockLength !== minimalLengthOctets(len.length)) throw new MalformedError(`${what}: non-minimal length encoding (not DER)`);
  if (el.idBlock.isConstructed) {
    const children = (el as asn1js.Constructed).valueBlock.value;
    if (Array.isArray(children)) for (const c of children) walk(c as asn1js.AsnType, depth + 1, what);
  }
}

/** Universal types that DER always encodes primitive (only SEQUENCE and SET are constructed). */
const CONSTRUCTED_UNIVERSAL = new Set([16, 17]);

/**
 * One iterative pass over the raw TLV headers, before asn1js sees the bytes: bounded depth,
 * definite and minimal lengths, children that end exactly where their parent ends, no
 * constructed encoding of a primitive universal type. That is DER's structure, checked without
 * recursion (so a nesting bomb costs nothing) and without re-encoding.
 */
function scanDer(bytes: Uint8Array, what: string): void {
  const ends: number[] = [];
  let i = 0;
  let top = 0;
  while (i < bytes.byteLength) {
    while (ends.length && i === ends[ends.length - 1]) ends.pop();
    if (ends.length === 0 && top++ > 0) throw new MalformedError(`${what}: bytes after the ASN.1 element`);
    const h = readDerHeader(bytes, i);
    if (!h.ok) {
      switch (h.problem) {
        case 'tag-too-long': throw new MalformedError(`${what}: tag number too long`);
        case 'truncated-header': throw new MalformedError(`${what}: truncated ASN.1 header`);
        case 'indefinite': throw new MalformedError(`${what}: indefinite length (BER, not DER)`);
        case 'length-too-long': throw new MalformedError(`${what}: ASN.1 length field of ${h.lengthOctets} bytes`);
        case 'truncated-length': throw new MalformedError(`${what}: truncated ASN.1 length`);
      }
    }
    if (!h.minimal) throw new MalformedError(`${what}: non-minimal length encoding (not DER)`);
    const { tag, end } = h;
    i = h.valueStart;
    if ((tag & 0xe0) === 0 && CONSTRUCTED_UNIVERSAL.has(tag & 0x1f)) throw new MalformedError(`${what}: primitive encoding of SEQUENCE or SET`);
    const limit = ends.length ? ends[ends.length - 1]! : bytes.byteLength;
    if (end > limit) throw new MalformedError(`${what}: ASN.1 element overruns its container`);
    if (tag & 0x20) {
      if ((tag & 0xc0) === 0 && !CONSTRUCTED_UNIVERSAL.has(tag & 0x1f)) throw new MalformedError(`${what}: constructed encoding of a primitive type (BER, not DER)`);
      ends.push(end);
      if (ends.length > MAX_DER_DEPTH + 1) throw new MalformedError(`${what}: nested deeper than ${MAX_DER_DEPTH}`);
    } else {
      i = end;
    }
  }
  while (ends.length && i === ends[ends.length - 1]) ends.pop();
  if (ends.length) throw new MalformedError(`${what}: truncated ASN.1 element`);
}

/** The raw DER structure check alone (see scanDer), for callers that parse parts of the element themselves. */
export function scanDerStructure(bytes: Uint8Array, what: string): void {
  scanDer(bytes, what);
}

/**
 * Parses bytes that must be exactly one DER element: definite, minimal lengths, children that fill
 * their parent exactly, bounded depth (scanDer). With `reencode`, asn1js must also re-encode the
 * parse to the same bytes (content rules too): used for certificates, whose fingerprint matters.
 */
export function parseStrictDer(bytes: Uint8Array, what: string, opts: { reencode?: boolean } = {}): asn1js.AsnType {
  scanDer(bytes, what);
  const parsed = asn1js.fromBER(bytes);
  if (parsed.offset === -1) throw new MalformedError(`${what}: ${parsed.result.error || 'bad ASN.1'}`);
  if (parsed.offset !== bytes.byteLength) throw new MalformedError(`${what}: ${bytes.byteLength - parsed.offset} bytes after the ASN.1 element`);
  if (!opts.reencode) return parsed.result;
  // Certificates also get a full re-encoding check: one certificate, one encoding, one fingerprint.
  walk(parsed.result, 0, what);
  const again = new Uint8Array(parsed.result.toBER(false));
  if (!Buffer.from(again).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
    throw new MalformedError(`${what}: not DER (re-encoding differs: a length disagrees with its contents)`);
  }
  return parsed.result;
}
