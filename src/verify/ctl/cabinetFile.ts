import { inflateRawSync } from 'node:zlib';
import { MalformedError } from '../malformed.js';
import { u16, u32 } from '../format/littleEndian.js';
import { CAB_SIGNATURE, FLAG_NEXT_CABINET, FLAG_PREV_CABINET, FLAG_RESERVE_PRESENT } from '../cab/cabLayout.js';

export const COMPRESS_NONE = 0;
const COMPRESS_MSZIP = 1;
/** MS-CAB 2.7: an MSZIP block holds at most 32 KiB of output and starts with "CK". */
const MSZIP_BLOCK = 32768;

export interface CabinetFile {
  name: string;
  data: Buffer;
}

function need(b: Uint8Array, end: number, what: string): void {
  if (end > b.byteLength) throw new MalformedError(`cabinet truncated in ${what}`);
}

/**
 * The one file of a single-folder, single-file cabinet (MS-CAB), stored or MSZIP-compressed: how
 * Microsoft ships authrootstl.cab / disallowedcertstl.cab (one .stl each; the cabinet carries no
 * signature of its own, the signed CTL inside is what is verified). Output bounded by `maxBytes`.
 */
export function singleCabinetFile(cab: Uint8Array, maxBytes: number): CabinetFile {
  need(cab, 36, 'CFHEADER');
  if (u32(cab, 0) !== CAB_SIGNATURE) throw new MalformedError('no MSCF signature');
  // Nothing may hide beside the one file: the cabinet is exactly as long as it says, and ends with its last block.
  if (u32(cab, 8) !== cab.byteLength) throw new MalformedError(`cabinet says it is ${u32(cab, 8)} bytes, it is ${cab.byteLength}`);
  const flags = u16(cab, 30);
  if (flags & (FLAG_PREV_CABINET | FLAG_NEXT_CABINET)) throw new MalformedError('a cabinet that is part of a set');
  const nFolders = u16(cab, 26);
  const nFiles = u16(cab, 28);
  if (nFolders !== 1 || nFiles !== 1) throw new MalformedError(`a trust-list cabinet holds one file in one folder (this one: ${nFiles} files, ${nFolders} folders)`);
  let at = 36;
  let folderReserve = 0;
  let dataReserve = 0;
  if (flags & FLAG_RESERVE_PRESENT) {
    need(cab, 40, 'CFHEADER reserve');
    at = 40 + u16(cab, 36);
    folderReserve = cab[38]!;
    dataReserve = cab[39]!;
  }
  need(cab, at + 8 + folderReserve, 'CFFOLDER');
  const coffCabStart = u32(cab, at);
  const nData = u16(cab, at + 4);
  const compression = u16(cab, at + 6) & 0x000f;
  const coffFiles = u32(cab, 16);
  need(cab, coffFiles + 16, 'CFFILE');
  const size = u32(cab, coffFiles);
  if (u32(cab, coffFiles + 4) !== 0 || u16(cab, coffFiles + 8) !== 0) throw new MalformedError('CFFILE does not start the folder');
  const nameEnd = Buffer.from(cab.buffer, cab.byteOffset, cab.byteLength).indexOf(0, coffFiles + 16);
  if (nameEnd < 0) throw new MalformedError('unterminated CFFILE name');
  const name = Buffer.from(cab.subarray(coffFiles + 16, nameEnd)).toString('latin1');
  if (size > maxBytes) throw new MalformedError(`the cabinet's file is ${size} bytes, over the ${maxBytes}-byte limit`);
  if (compression !== COMPRESS_NONE && compression !== COMPRESS_MSZIP) throw new MalformedError(`cabinet compression ${compression} is not supported (stored and MSZIP are)`);
  const parts: Buffer[] = [];
  let produced = 0;
  let window: Buffer | undefined;
  let p = coffCabStart;
  for (let i = 0; i < nData; i++) {
    need(cab, p + 8 + dataReserve, 'CFDATA');
    const cbData = u16(cab, p + 4);
    const cbUncomp = u16(cab, p + 6);
    const start = p + 8 + dataReserve;
    need(cab, start + cbData, 'CFDATA block');
    const block = Buffer.from(cab.subarray(start, start + cbData));
    let out: Buffer;
    if (compression === COMPRESS_NONE) out = block;
    else {
      if (block[0] !== 0x43 || block[1] !== 0x4b) throw new MalformedError('MSZIP block without its CK signature');
      // Each block is a deflate stream whose history is the previous block's output.
      try {
        out = inflateRawSync(block.subarray(2), { maxOutputLength: MSZIP_BLOCK, ...(window ? { dictionary: window } : {}) });
      } catch (err) {
        throw new MalformedError(`MSZIP block ${i}: ${(err as Error).message}`);
      }
      window = out;
    }
    if (out.byteLength !== cbUncomp) throw new MalformedError(`CFDATA block ${i} gives ${out.byteLength} bytes, its header says ${cbUncomp}`);
    produced += out.byteLength;
    if (produced > maxBytes) throw new MalformedError(`the cabinet's data exceeds the ${maxBytes}-byte limit`);
    parts.push(out);
    p = start + cbData;
  }
  if (p !== cab.byteLength) throw new MalformedError(`${cab.byteLength - p} bytes after the cabinet's last data block`);
  const data = Buffer.concat(parts);
  if (data.byteLength !== size) throw new MalformedError(`the cabinet's file should be ${size} bytes, its data gives ${data.byteLength}`);
  return { name, data };
}
