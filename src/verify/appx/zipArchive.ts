import { createInflateRaw, crc32 } from 'node:zlib';
import { MalformedError } from '../malformed.js';
import type { RandomAccessSource } from '../format/signedFileFormat.js';

/**
 * A bounded, strict reader of the ZIP container of APPX/MSIX packages, over `readAt`. Strict
 * where two readers could see different files: the entries must tile the file from offset 0 to the
 * central directory with nothing between them, the central directory must list them in file order
 * and agree with every local header, the end record must follow the directory directly, names must
 * be unique (case-insensitive), no extra field but a ZIP64 one holding exactly the fields the
 * record marks 0xFFFFFFFF, only stored and deflated entries, no encryption. Anything else is
 * MALFORMED. ZIP64 end records are read when the end record's directory size or offset is
 * 0xFFFFFFFF (as osslsigncode decides), and must then sit directly between directory and end record.
 */

const EOCD_SIG = 0x06054b50;
const CD_SIG = 0x02014b50;
const LH_SIG = 0x04034b50;
const DD_SIG = 0x08074b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const ZIP64_EXTRA = 0x0001;
const FLAG_ENCRYPTED = 0x0001;
const FLAG_DATA_DESCRIPTOR = 0x0008;
/** Central directories above this are refused (a package lists thousands of files at most). */
const MAX_CENTRAL_DIRECTORY_BYTES = 16 << 20;
const PIECE = 1 << 20;

/** The ZIP64 end records' fields that the APPX digest re-serialises as they are. */
export interface Zip64End {
  recordSize: bigint;
  creatorVersion: number;
  viewerVersion: number;
  diskNumber: number;
  diskWithCd: number;
  extensible: Buffer;
  locatorDisk: number;
  totalDisks: number;
  /** Which 32-bit end-record fields held 0xFFFF / 0xFFFFFFFF. */
  countsMax: boolean;
  sizeMax: boolean;
  offsetMax: boolean;
}

export interface ZipEntry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  /** The central-directory record's bytes (46 bytes, name, comment). */
  cdRecord: Buffer;
  /** [localOffset, end): local header, data and data descriptor. */
  localOffset: number;
  localHeaderSize: number;
  dataOffset: number;
  end: number;
}

const u16 = (b: Buffer, o: number) => b.readUInt16LE(o);
const u32 = (b: Buffer, o: number) => b.readUInt32LE(o);

/** The 8-byte values of a ZIP64 extra field that must hold exactly the `marked` fields; any other extra data is refused. */
function zip64Values(extra: Buffer, marked: boolean[], what: string): number[] {
  const count = marked.filter(Boolean).length;
  if (extra.length === 0 && count === 0) return [];
  if (count === 0 || extra.length !== 4 + 8 * count || u16(extra, 0) !== ZIP64_EXTRA || u16(extra, 2) !== 8 * count) {
    throw new MalformedError(`ZIP: ${what} has an extra field other than the ZIP64 values it needs`);
  }
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const v = extra.readBigUInt64LE(4 + 8 * i);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MalformedError(`ZIP: ${what} has a ZIP64 value beyond the limits`);
    out.push(Number(v));
  }
  return out;
}

export class ZipArchive {
  private constructor(
    private readonly source: RandomAccessSource,
    /** Entries in file order (= central-directory order). */
    readonly entries: ZipEntry[],
    readonly cdOffset: number,
    /** The end record's comment. */
    readonly comment: Buffer,
    /** Set for a ZIP64 archive. */
    readonly zip64: Zip64End | undefined,
  ) {}

  static async open(source: RandomAccessSource): Promise<ZipArchive> {
    const read = async (offset: number, length: number, what: string): Promise<Buffer> => {
      if (offset < 0 || length < 0 || offset + length > source.size) throw new MalformedError(`ZIP: ${what} lies past the end of the file`);
      const b = await source.readAt(offset, length);
      if (b.byteLength !== length) throw new MalformedError(`ZIP: short read of ${what}`);
      return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    };
    if (source.size < 22) throw new MalformedError('ZIP: shorter than an end record');
    const tailLen = Math.min(source.size, 22 + 0xffff);
    const tail = await read(source.size - tailLen, tailLen, 'end record');
    // The end record whose comment runs exactly to the end of the file: nothing may follow it.
    let eocdAt = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (u32(tail, i) === EOCD_SIG && i + 22 + u16(tail, i + 20) === tailLen) { eocdAt = i; break; }
    }
    if (eocdAt < 0) throw new MalformedError('ZIP: no end-of-central-directory record ending the file');
    const e = tail.subarray(eocdAt, eocdAt + 22);
    const eocdOffset = source.size - tailLen + eocdAt;
    const diskEntries = u16(e, 8);
    let totalEntries = u16(e, 10);
    let cdSize = u32(e, 12);
    let cdOffset = u32(e, 16);
    const countsMax = diskEntries === 0xffff || totalEntries === 0xffff;
    const sizeMax = cdSize === 0xffffffff;
    const offsetMax = cdOffset === 0xffffffff;
    const hasLocator = eocdAt >= 20 && u32(tail, eocdAt - 20) === ZIP64_LOCATOR_SIG;
    let zip64: Zip64End | undefined;
    let directoryEnd = eocdOffset;
    if (sizeMax || offsetMax) {
      if (!hasLocator) throw new MalformedError('ZIP: ZIP64 markers without a ZIP64 locator');
      const loc = tail.subarray(eocdAt - 20, eocdAt);
      const z64At = Number(loc.readBigUInt64LE(8));
      const z64 = await read(z64At, 56, 'ZIP64 end record');
      if (u32(z64, 0) !== ZIP64_EOCD_SIG) throw new MalformedError('ZIP: no ZIP64 end record where the locator points');
      const recordSize = z64.readBigUInt64LE(4);
      if (recordSize < 44n || recordSize > 44n + 0xffffn) throw new MalformedError('ZIP: ZIP64 end record of a bad size');
      // It must end where the locator begins: nothing hides between them.
      if (z64At + 12 + Number(recordSize) !== eocdOffset - 20) throw new MalformedError('ZIP: bytes between the ZIP64 end record and its locator');
      const extensible = await read(z64At + 56, Number(recordSize) - 44, 'ZIP64 extensible data');
      const entries64 = z64.readBigUInt64LE(24);
      const cdSize64 = z64.readBigUInt64LE(40);
      const cdOffset64 = z64.readBigUInt64LE(48);
      if (u32(z64, 16) !== 0 || u32(z64, 20) !== 0 || z64.readBigUInt64LE(32) !== entries64 || u32(loc, 4) !== 0 || u32(loc, 16) > 1) throw new MalformedError('ZIP: multi-disk archive');
      if (entries64 > 0xffffn || cdSize64 > BigInt(Number.MAX_SAFE_INTEGER) || cdOffset64 > BigInt(Number.MAX_SAFE_INTEGER)) throw new MalformedError('ZIP: ZIP64 counts beyond the limits');
      if ((!countsMax && BigInt(totalEntries) !== entries64) || (!sizeMax && BigInt(cdSize) !== cdSize64) || (!offsetMax && BigInt(cdOffset) !== cdOffset64)) {
        throw new MalformedError('ZIP: the end record and the ZIP64 end record disagree');
      }
      totalEntries = Number(entries64);
      cdSize = Number(cdSize64);
      cdOffset = Number(cdOffset64);
      directoryEnd = z64At;
      zip64 = {
        recordSize, creatorVersion: u16(z64, 12), viewerVersion: u16(z64, 14), diskNumber: 0, diskWithCd: 0, extensible,
        locatorDisk: 0, totalDisks: u32(loc, 16), countsMax, sizeMax, offsetMax,
      };
    } else if (hasLocator || countsMax) {
      // Readers that look for ZIP64 records there and readers that do not would see different archives.
      throw new MalformedError('ZIP: ZIP64 records without the end record saying so');
    }
    if (u16(e, 4) !== 0 || u16(e, 6) !== 0 || diskEntries !== u16(e, 10)) throw new MalformedError('ZIP: multi-disk archive');
    if (cdOffset + cdSize !== directoryEnd) throw new MalformedError('ZIP: bytes between the central directory and its end record');
    if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) throw new MalformedError(`ZIP: central directory of ${cdSize} bytes exceeds the limit`);
    const cd = await read(cdOffset, cdSize, 'central directory');

    const entries: ZipEntry[] = [];
    const names = new Set<string>();
    let p = 0;
    for (let n = 0; n < totalEntries; n++) {
      if (p + 46 > cd.length || u32(cd, p) !== CD_SIG) throw new MalformedError(`ZIP: central directory record ${n} is malformed`);
      const nameLen = u16(cd, p + 28);
      const extraLen = u16(cd, p + 30);
      const commentLen = u16(cd, p + 32);
      const recordLen = 46 + nameLen + extraLen + commentLen;
      if (p + recordLen > cd.length) throw new MalformedError(`ZIP: central directory record ${n} runs past the directory`);
      const flags = u16(cd, p + 8);
      const method = u16(cd, p + 10);
      if (u16(cd, p + 34) !== 0) throw new MalformedError('ZIP: an entry on another disk');
      // A ZIP64 extra field holds exactly the values marked 0xFFFFFFFF, in the order of the specification.
      const marked = [u32(cd, p + 24) === 0xffffffff, u32(cd, p + 20) === 0xffffffff, u32(cd, p + 42) === 0xffffffff];
      const wide = zip64Values(cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), marked, `central directory record ${n}`);
      const size = marked[0] ? wide.shift()! : u32(cd, p + 24);
      const compressedSize = marked[1] ? wide.shift()! : u32(cd, p + 20);
      const localOffset = marked[2] ? wide.shift()! : u32(cd, p + 42);
      if (flags & FLAG_ENCRYPTED) throw new MalformedError('ZIP: an encrypted entry');
      if (method !== 0 && method !== 8) throw new MalformedError(`ZIP: compression method ${method}`);
      if (method === 0 && compressedSize !== size) throw new MalformedError('ZIP: a stored entry whose sizes differ');
      const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
      const name = nameBytes.toString('utf8');
      if (!nameLen || !Buffer.from(name, 'utf8').equals(nameBytes)) throw new MalformedError(`ZIP: entry ${n} has an empty or invalid name`);
      const key = name.toUpperCase();
      if (names.has(key)) throw new MalformedError(`ZIP: two entries named "${name}"`);
      names.add(key);
      entries.push({
        name, flags, method, crc: u32(cd, p + 16), compressedSize, size, cdRecord: Buffer.from(cd.subarray(p, p + recordLen)),
        localOffset, localHeaderSize: 0, dataOffset: 0, end: 0,
      });
      p += recordLen;
    }
    if (p !== cd.length) throw new MalformedError('ZIP: bytes after the last central directory record');

    // Local headers: agree with the directory, and tile the file from 0 to the directory in its order.
    let expected = 0;
    for (const en of entries) {
      if (en.localOffset !== expected) throw new MalformedError(`ZIP: entry "${en.name}" starts at ${en.localOffset}, not where the previous one ends (${expected}): a gap, an overlap or an order that differs from the directory's`);
      const lh = await read(en.localOffset, 30, 'local header');
      if (u32(lh, 0) !== LH_SIG) throw new MalformedError(`ZIP: no local header for "${en.name}"`);
      const nameLen = u16(lh, 26);
      const extraLen = u16(lh, 28);
      const cdr = en.cdRecord;
      if (u16(lh, 6) !== en.flags || u16(lh, 8) !== en.method || u16(lh, 10) !== u16(cdr, 12) || u16(lh, 12) !== u16(cdr, 14) || u16(lh, 4) !== u16(cdr, 6)) {
        throw new MalformedError(`ZIP: the local header of "${en.name}" disagrees with the central directory`);
      }
      const dd = (en.flags & FLAG_DATA_DESCRIPTOR) !== 0;
      const [crc, cs32, us32] = [u32(lh, 14), u32(lh, 18), u32(lh, 22)];
      const extra = await read(en.localOffset + 30 + nameLen, extraLen, 'local extra field');
      const wide = zip64Values(extra, [us32 === 0xffffffff, cs32 === 0xffffffff], `the local header of "${en.name}"`);
      const us = us32 === 0xffffffff ? wide.shift()! : us32;
      const cs = cs32 === 0xffffffff ? wide.shift()! : cs32;
      if (dd ? crc !== 0 || cs !== 0 || us !== 0 : crc !== en.crc || cs !== en.compressedSize || us !== en.size) {
        throw new MalformedError(`ZIP: the local header of "${en.name}" disagrees with the central directory on its CRC or sizes`);
      }
      const name = await read(en.localOffset + 30, nameLen, 'local name');
      if (!name.equals(cdr.subarray(46, 46 + u16(cdr, 28)))) throw new MalformedError(`ZIP: the local header names "${name.toString('utf8')}", the directory "${en.name}"`);
      en.localHeaderSize = 30 + nameLen + extraLen;
      en.dataOffset = en.localOffset + en.localHeaderSize;
      en.end = en.dataOffset + en.compressedSize;
      if (dd) {
        // In a ZIP64 archive every descriptor has 8-byte sizes (as osslsigncode reads and writes them).
        const ddSize = zip64 ? 24 : 16;
        const d = await read(en.end, ddSize, 'data descriptor');
        const [dcs, dus] = zip64 ? [Number(d.readBigUInt64LE(8)), Number(d.readBigUInt64LE(16))] : [u32(d, 8), u32(d, 12)];
        if (u32(d, 0) !== DD_SIG || u32(d, 4) !== en.crc || dcs !== en.compressedSize || dus !== en.size) {
          throw new MalformedError(`ZIP: the data descriptor of "${en.name}" disagrees with the central directory`);
        }
        en.end += ddSize;
      }
      expected = en.end;
    }
    if (expected !== cdOffset) throw new MalformedError(`ZIP: ${cdOffset - expected} bytes between the last entry and the central directory`);
    return new ZipArchive(source, entries, cdOffset, Buffer.from(tail.subarray(eocdAt + 22)), zip64);
  }

  entry(name: string): ZipEntry | undefined {
    return this.entries.find((e) => e.name === name);
  }

  /** Feeds raw file bytes [from, to) to `sink` in pieces. */
  async pipeRaw(from: number, to: number, sink: (b: Uint8Array) => void): Promise<void> {
    for (let at = from; at < to; at += PIECE) {
      const n = Math.min(PIECE, to - at);
      const b = await this.source.readAt(at, n);
      if (b.byteLength !== n) throw new MalformedError('ZIP: short read');
      sink(b);
    }
  }

  /**
   * Feeds an entry's uncompressed bytes to `sink` in pieces (inflating as it goes, never more than
   * the declared size: an inflate bomb stops there), then checks the size and the CRC-32.
   */
  async pipeEntry(en: ZipEntry, sink: (b: Uint8Array) => void): Promise<void> {
    let produced = 0;
    let crc = 0;
    const take = (b: Uint8Array) => {
      produced += b.byteLength;
      if (produced > en.size) throw new MalformedError(`ZIP: "${en.name}" inflates past its declared ${en.size} bytes`);
      crc = crc32(b, crc);
      sink(b);
    };
    if (en.method === 0) {
      await this.pipeRaw(en.dataOffset, en.dataOffset + en.compressedSize, take);
    } else {
      const inflate = createInflateRaw();
      let failure: Error | undefined;
      inflate.on('data', (b: Buffer) => {
        if (failure) return;
        try { take(b); } catch (err) { failure = err as Error; inflate.destroy(); }
      });
      const ended = new Promise<void>((resolve, reject) => {
        inflate.on('end', resolve);
        inflate.on('error', (err) => reject(failure ?? new MalformedError(`ZIP: "${en.name}" does not inflate (${err.message})`)));
        inflate.on('close', () => (failure ? reject(failure) : undefined));
      });
      ended.catch(() => { /* awaited below */ });
      for (let at = en.dataOffset; at < en.dataOffset + en.compressedSize && !failure; at += PIECE) {
        const n = Math.min(PIECE, en.dataOffset + en.compressedSize - at);
        const b = await this.source.readAt(at, n);
        if (b.byteLength !== n) throw new MalformedError('ZIP: short read');
        // Wait for room, or for the end: a stream destroyed by a failing sink never drains.
        if (!inflate.write(b)) await Promise.race([new Promise<void>((resolve) => inflate.once('drain', resolve)), ended.catch(() => undefined)]);
      }
      if (!failure) inflate.end();
      await ended;
      if (failure) throw failure;
    }
    if (produced !== en.size) throw new MalformedError(`ZIP: "${en.name}" holds ${produced} bytes, its directory entry says ${en.size}`);
    if (crc !== en.crc) throw new MalformedError(`ZIP: "${en.name}" fails its CRC-32`);
  }

  /** A small entry's uncompressed bytes (the caller bounds its declared size). */
  async readEntry(en: ZipEntry): Promise<Buffer> {
    const parts: Buffer[] = [];
    await this.pipeEntry(en, (b) => parts.push(Buffer.from(b)));
    return Buffer.concat(parts);
  }
}
