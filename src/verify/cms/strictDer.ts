import * as asn1js from 'asn1js';
import { MalformedError } from '../malformed.js';

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

/** A cheap pre-scan of nesting depth over raw bytes, so asn1js never recurses into a bomb. */
function scanDepth(bytes: Uint8Array, what: string): void {
  // Walk TLV headers iteratively: constructed elements push their end offset.
  const ends: number[] = [bytes.byteLength];
  let i = 0;
  while (i < bytes.byteLength) {
    while (ends.length && i >= ends[ends.length - 1]!) ends.pop();
    const tag = bytes[i++]!;
    if ((tag & 0x1f) === 0x1f) { while (i < bytes.byteLength && (bytes[i]! & 0x80)) i++; i++; }
    if (i >= bytes.byteLength) throw new MalformedError(`${what}: truncated ASN.1 header`);
    let length = bytes[i++]!;
    if (length === 0x80) throw new MalformedError(`${what}: indefinite length (BER, not DER)`);
    if (length & 0x80) {
      const n = length & 0x7f;
      if (n > 4) throw new MalformedError(`${what}: ASN.1 length field of ${n} bytes`);
      length = 0;
      for (let k = 0; k < n; k++) length = length * 256 + (bytes[i++] ?? 0);
    }
    const end = i + length;
    if (end > (ends[ends.length - 1] ?? bytes.byteLength)) throw new MalformedError(`${what}: ASN.1 element overruns its container`);
    if (tag & 0x20) {
      ends.push(end);
      if (ends.length > MAX_DER_DEPTH + 1) throw new MalformedError(`${what}: nested deeper than ${MAX_DER_DEPTH}`);
    } else {
      i = end;
    }
  }
}

/**
 * Parses bytes that must be exactly one DER element: definite, minimal lengths, children that fill
 * their parent exactly (checked by re-encoding), bounded depth. Certificates and signatures are
 * held to this so that one certificate has one encoding, and one fingerprint.
 */
export function parseStrictDer(bytes: Uint8Array, what: string): asn1js.AsnType {
  scanDepth(bytes, what);
  const parsed = asn1js.fromBER(bytes);
  if (parsed.offset === -1) throw new MalformedError(`${what}: ${parsed.result.error || 'bad ASN.1'}`);
  if (parsed.offset !== bytes.byteLength) throw new MalformedError(`${what}: ${bytes.byteLength - parsed.offset} bytes after the ASN.1 element`);
  walk(parsed.result, 0, what);
  const again = new Uint8Array(parsed.result.toBER(false));
  if (!Buffer.from(again).equals(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
    throw new MalformedError(`${what}: not DER (re-encoding differs: a length disagrees with its contents)`);
  }
  return parsed.result;
}
