import { MalformedError } from '../malformed.js';
import type { ByteRange } from '../rangeHasher.js';
import { u16, u32 } from '../format/littleEndian.js';

/** Where the Authenticode-relevant fields of a PE file are. Offsets are file offsets. */
export interface PeLayout {
  is64: boolean;
  /** OptionalHeader.CheckSum: excluded from the digest. */
  checksumOffset: number;
  /** The Certificate Table data-directory entry (8 bytes): excluded from the digest. */
  certDirOffset: number | undefined;
  /** Certificate table position and size from that entry (its "RVA" is a file offset). 0/0 when unsigned. */
  certTableOffset: number;
  certTableSize: number;
}

export type PeLayoutResult = { kind: 'layout'; layout: PeLayout } | { kind: 'need'; bytes: number };

/**
 * Reads the PE headers from the first bytes of a file. Returns how many bytes it needs when `head`
 * is too short, so a stream can be parsed as soon as the headers have arrived.
 */
export function parsePeLayout(head: Uint8Array, maxHeaderBytes: number): PeLayoutResult {
  if (head.byteLength < 0x40) return { kind: 'need', bytes: 0x40 };
  if (head[0] !== 0x4d || head[1] !== 0x5a) throw new MalformedError('no MZ signature');
  const peOffset = u32(head, 0x3c);
  const coff = peOffset + 4;
  const opt = coff + 20;
  if (opt + 2 > maxHeaderBytes) throw new MalformedError(`e_lfanew 0x${peOffset.toString(16)} points past the header limit`);
  if (head.byteLength < opt + 2) return { kind: 'need', bytes: opt + 2 };
  if (u32(head, peOffset) !== 0x00004550) throw new MalformedError('no PE\\0\\0 signature at e_lfanew');
  const sizeOfOptional = u16(head, coff + 16);
  const magic = u16(head, opt);
  if (magic !== 0x10b && magic !== 0x20b) throw new MalformedError(`unknown optional header magic 0x${magic.toString(16)}`);
  const is64 = magic === 0x20b;
  const numberOfRvaOffset = opt + (is64 ? 108 : 92);
  const dataDirs = opt + (is64 ? 112 : 96);
  const optEnd = opt + sizeOfOptional;
  if (optEnd > maxHeaderBytes) throw new MalformedError('optional header extends past the header limit');
  if (sizeOfOptional < dataDirs - opt) throw new MalformedError('optional header too small');
  if (head.byteLength < optEnd) return { kind: 'need', bytes: optEnd };
  const checksumOffset = opt + 64;
  const numberOfRva = u32(head, numberOfRvaOffset);
  const certDirOffset = dataDirs + 4 * 8;
  if (numberOfRva < 5 || certDirOffset + 8 > optEnd) {
    return { kind: 'layout', layout: { is64, checksumOffset, certDirOffset: undefined, certTableOffset: 0, certTableSize: 0 } };
  }
  const certTableOffset = u32(head, certDirOffset);
  const certTableSize = u32(head, certDirOffset + 4);
  if (certTableSize !== 0 && certTableOffset < certDirOffset + 8) {
    throw new MalformedError(`certificate table at 0x${certTableOffset.toString(16)} overlaps the headers`);
  }
  return { kind: 'layout', layout: { is64, checksumOffset, certDirOffset, certTableOffset, certTableSize } };
}

/**
 * The byte ranges the Authenticode PE digest covers: the whole file up to the certificate table,
 * minus CheckSum and the Certificate Table entry (as osslsigncode and signtool hash it). Bytes
 * after the table are not hashed: their mere presence blocks (TRAILING_DATA).
 */
export function peDigestRanges(layout: PeLayout, fileEnd: number): ByteRange[] {
  const end = layout.certTableSize ? layout.certTableOffset : fileEnd;
  const cs = layout.checksumOffset;
  if (layout.certDirOffset === undefined) return [[0, cs], [cs + 4, end]];
  const cd = layout.certDirOffset;
  return [[0, cs], [cs + 4, cd], [cd + 8, end]];
}
