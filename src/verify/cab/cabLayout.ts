import { MalformedError } from '../malformed.js';
import type { ByteRange } from '../rangeHasher.js';
import { u16, u32 } from '../format/littleEndian.js';

/** "MSCF", CFHEADER's first dword (little-endian). */
export const CAB_SIGNATURE = 0x4643534d;
export const FLAG_PREV_CABINET = 0x0001;
export const FLAG_NEXT_CABINET = 0x0002;
export const FLAG_RESERVE_PRESENT = 0x0004;
/** A signed cabinet reserves exactly this many header bytes for the signature locator. */
export const SIGNED_HEADER_RESERVE = 20;
/** The first dword of the signature locator in the reserve, the only value osslsigncode writes and this accepts. */
export const SIGNATURE_LOCATOR_MAGIC = 0x00100000;

export interface CabLayout {
  signed: boolean;
  signatureOffset: number;
  signatureSize: number;
  /** Ranges covered by the Authenticode CAB digest. */
  ranges: ByteRange[];
}

export type CabLayoutResult = { kind: 'layout'; layout: CabLayout } | { kind: 'need'; bytes: number };

/**
 * Reads a cabinet header (MS-CAB CFHEADER and the CFFOLDER table) and locates the Authenticode
 * signature in the reserved header area. The digest ranges follow osslsigncode's: the header
 * without reserved1, iCabinet and the signature locator, then everything up to the signature.
 */
export function parseCabLayout(head: Uint8Array, maxHeaderBytes: number): CabLayoutResult {
  if (head.byteLength < 36) return { kind: 'need', bytes: 36 };
  if (u32(head, 0) !== CAB_SIGNATURE) throw new MalformedError('no MSCF signature');
  const flags = u16(head, 30);
  const nFolders = u16(head, 26);
  const coffFiles = u32(head, 16);
  const unsigned: CabLayoutResult = { kind: 'layout', layout: { signed: false, signatureOffset: 0, signatureSize: 0, ranges: [] } };
  if (!(flags & FLAG_RESERVE_PRESENT)) return unsigned;
  if (head.byteLength < 40) return { kind: 'need', bytes: 40 };
  const cbCFHeader = u16(head, 36);
  if (cbCFHeader !== SIGNED_HEADER_RESERVE) return unsigned;
  if (head.byteLength < 60) return { kind: 'need', bytes: 60 };
  const signatureOffset = u32(head, 44);
  const signatureSize = u32(head, 48);
  if (signatureOffset === 0 || signatureSize === 0) return unsigned;
  // Per-folder and per-block reserves are not covered by the digest layout: refuse them when signed.
  if (head[38] !== 0 || head[39] !== 0) throw new MalformedError('signed cabinet with per-folder or per-data reserved areas');
  // Header bytes outside the digest must hold their only valid values, so they carry nothing.
  if (u32(head, 4) !== 0) throw new MalformedError('CFHEADER reserved1 is not zero');
  // iCabinet (not in the digest) is 0 for a cabinet that is not part of a set.
  if (!(flags & (FLAG_PREV_CABINET | FLAG_NEXT_CABINET)) && u16(head, 34) !== 0) throw new MalformedError('iCabinet is not zero in a single cabinet');
  if (u32(head, 40) !== SIGNATURE_LOCATOR_MAGIC || u32(head, 52) !== 0) throw new MalformedError('signature locator in the CAB reserve area is not in its canonical form');
  if (coffFiles > maxHeaderBytes) throw new MalformedError('CAB file table offset past the header limit');
  if (head.byteLength < coffFiles) return { kind: 'need', bytes: coffFiles };
  let idx = 60;
  const skipString = () => {
    const end = head.indexOf(0, idx);
    if (end < 0 || end >= coffFiles) throw new MalformedError('unterminated cabinet name');
    idx = end + 1;
  };
  if (flags & FLAG_PREV_CABINET) { skipString(); skipString(); }
  if (flags & FLAG_NEXT_CABINET) { skipString(); skipString(); }
  idx += 8 * nFolders;
  if (idx !== coffFiles) throw new MalformedError(`CFFOLDER table ends at ${idx}, coffFiles says ${coffFiles}`);
  if (signatureOffset < coffFiles) throw new MalformedError('CAB signature offset inside the header');
  return { kind: 'layout', layout: { signed: true, signatureOffset, signatureSize, ranges: [[0, 4], [8, 34], [56, signatureOffset]] } };
}
