// No ASN.1 library here: the container parsers (and the digest threads that load them) read
// DER lengths with this alone.

/** A TLV header read from `bytes` at some offset: its tag byte, where its value starts and ends. */
export interface DerHeader {
  ok: true;
  tag: number;
  /** Offset of the first value octet. */
  valueStart: number;
  length: number;
  /** Offset just after the element (valueStart + length; may lie past the bytes given). */
  end: number;
  /** Octets the length took (1 for the short form). */
  lengthOctets: number;
  /** Whether the length is in DER's minimal form (a long form only for 128 and up, no leading zero). */
  minimal: boolean;
}

/** Why no header could be read: the bytes end inside it, or its form is one this verifier refuses. */
export interface DerHeaderProblem {
  ok: false;
  problem: 'truncated-header' | 'truncated-length' | 'indefinite' | 'length-too-long' | 'tag-too-long';
  /** For length-too-long: how many length octets it announced. */
  lengthOctets?: number;
}

/**
 * The one reader of a DER/BER TLV header (tag, definite length of at most 4 octets): every length
 * the core decodes by hand goes through it. It never throws; each caller says what a problem means.
 */
export function readDerHeader(bytes: Uint8Array, at: number): DerHeader | DerHeaderProblem {
  let i = at;
  if (i >= bytes.byteLength) return { ok: false, problem: 'truncated-header' };
  const tag = bytes[i++]!;
  if ((tag & 0x1f) === 0x1f) {
    let n = 0;
    while (i < bytes.byteLength && bytes[i]! & 0x80) { i++; if (++n > 4) return { ok: false, problem: 'tag-too-long' }; }
    i++;
  }
  if (i >= bytes.byteLength) return { ok: false, problem: 'truncated-header' };
  const first = bytes[i++]!;
  if (first === 0x80) return { ok: false, problem: 'indefinite' };
  if (!(first & 0x80)) return { ok: true, tag, valueStart: i, length: first, end: i + first, lengthOctets: 1, minimal: true };
  const n = first & 0x7f;
  if (n > 4) return { ok: false, problem: 'length-too-long', lengthOctets: n };
  if (i + n > bytes.byteLength) return { ok: false, problem: 'truncated-length' };
  let length = 0;
  for (let k = 0; k < n; k++) length = length * 256 + bytes[i + k]!;
  const minimal = length >= 0x80 && bytes[i] !== 0;
  return { ok: true, tag, valueStart: i + n, length, end: i + n + length, lengthOctets: 1 + n, minimal };
}
