import { MalformedError } from '../malformed.js';
import type { RandomAccessSource } from '../format/signedFileFormat.js';
import { u16, u32 } from '../format/littleEndian.js';

/**
 * A bounded reader of OLE compound files (MS-CFB), the container of MSI and MSP packages. It reads
 * through `readAt` only what it needs (header, FAT, directory, mini FAT) and keeps in memory at most
 * the FAT (capped), the directory (capped) and a bitmap of the sectors it has seen. Anything that
 * could make two readers see different bytes is refused as MALFORMED: sector chains that loop,
 * leave the file or share a sector with another chain, directory trees with cycles or shared
 * entries, duplicate names in a storage, sizes past the file.
 */

const HEADER_BYTES = 512;
const MAGIC = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
const MAXREGSECT = 0xfffffffa;
const DIFSECT = 0xfffffffc;
const FATSECT = 0xfffffffd;
const FREESECT = 0xffffffff;
const ENDOFCHAIN = 0xfffffffe;
const NOSTREAM = 0xffffffff;
const MINI_SECTOR = 64;
const MINI_CUTOFF = 4096;
const ENTRY_BYTES = 128;
/** FAT, mini FAT and DIFAT tables above this size are refused (16 MiB of FAT maps 2 GiB of 512-byte sectors). */
const MAX_TABLE_BYTES = 16 << 20;
/** Directory entries read at most (an MSI has tens to a few thousand): 2 MiB of directory. */
export const MAX_DIRECTORY_ENTRIES = 16384;
/** Largest single read: contiguous sectors are read together up to this. */
const MAX_READ_BYTES = 1 << 20;
/** Storage nesting deeper than this is refused (MSI uses one level at most). */
const MAX_DEPTH = 32;

export const ENTRY_STORAGE = 1;
export const ENTRY_STREAM = 2;
export const ENTRY_ROOT = 5;

export interface DirectoryEntry {
  id: number;
  /** Raw UTF-16LE name without the terminating NUL. */
  name: Buffer;
  type: number;
  clsid: Buffer;
  stateBits: Buffer;
  creationTime: Buffer;
  modifiedTime: Buffer;
  startSector: number;
  size: number;
  /** The 4 little-endian bytes of the size the MSI pre-hash covers. */
  sizeLow: Buffer;
  children: DirectoryEntry[];
}

/** A stream's bytes as file ranges, in stream order. */
export type FileRuns = (readonly [offset: number, length: number])[];

export class CompoundFile {
  private constructor(
    private readonly source: RandomAccessSource,
    readonly sectorSize: number,
    private readonly fat: Uint32Array,
    private readonly miniFat: Uint32Array,
    /** File sector numbers of the mini stream, in order. */
    private readonly miniStreamSectors: Uint32Array,
    readonly root: DirectoryEntry,
    /** Bytes after the last sector the FAT allocates: covered by no signature (CVE-2020-1464, "GlueBall"). */
    readonly trailingBytes: number,
  ) {}

  static async open(source: RandomAccessSource): Promise<CompoundFile> {
    const read = async (offset: number, length: number, what: string): Promise<Buffer> => {
      if (offset < 0 || length < 0 || offset + length > source.size) throw new MalformedError(`compound file: ${what} lies past the end of the file`);
      const b = await source.readAt(offset, length);
      if (b.byteLength !== length) throw new MalformedError(`compound file: short read of ${what}`);
      return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    };
    if (source.size < HEADER_BYTES) throw new MalformedError('compound file shorter than its header');
    const h = await read(0, HEADER_BYTES, 'header');
    if (!MAGIC.every((b, i) => h[i] === b)) throw new MalformedError('not an OLE compound file');
    const major = u16(h, 26);
    const sectorShift = u16(h, 30);
    if (u16(h, 28) !== 0xfffe) throw new MalformedError('compound file byte order mark is not 0xFFFE');
    if (!((major === 3 && sectorShift === 9) || (major === 4 && sectorShift === 12))) throw new MalformedError(`compound file version ${major} with sector shift ${sectorShift}`);
    if (u16(h, 32) !== 6) throw new MalformedError('compound file mini sector size is not 64');
    if (u32(h, 56) !== MINI_CUTOFF) throw new MalformedError('compound file mini stream cutoff is not 4096');
    // Fields MS-CFB fixes: a reader that ignores them and one that does not must never disagree.
    if (h.subarray(34, 40).some((b) => b !== 0)) throw new MalformedError('compound file header reserved bytes are not zero');
    if (major === 3 && u32(h, 40) !== 0) throw new MalformedError('compound file version 3 with a directory sector count');
    const sectorSize = 1 << sectorShift;
    if (source.size < sectorSize * 2) throw new MalformedError('compound file too short for its sector size');
    // Sector n starts at (n + 1) * sectorSize; the last one may be cut short by the end of the file.
    const fileSectors = Math.ceil((source.size - sectorSize) / sectorSize);
    const seen = new Uint8Array(Math.ceil(fileSectors / 8));
    const claim = (s: number, what: string) => {
      if (s >= fileSectors) throw new MalformedError(`compound file: ${what} names sector ${s}, past the end of the file`);
      if (seen[s >> 3]! & (1 << (s & 7))) throw new MalformedError(`compound file: sector ${s} is used twice (${what})`);
      seen[s >> 3]! |= 1 << (s & 7);
    };
    const sectorOffset = (s: number) => (s + 1) * sectorSize;
    /** The given sectors' bytes in order, contiguous ones read together (a FAT is usually one run). */
    const readSectors = async (list: readonly number[], what: string): Promise<Buffer> => {
      const parts: Buffer[] = [];
      for (let i = 0; i < list.length;) {
        let n = 1;
        while (i + n < list.length && list[i + n] === list[i]! + n && (n + 1) * sectorSize <= MAX_READ_BYTES) n++;
        parts.push(await read(sectorOffset(list[i]!), n * sectorSize, what));
        i += n;
      }
      return Buffer.concat(parts);
    };
    const perSector = sectorSize / 4;

    // FAT sector locations: 109 in the header, the rest in the DIFAT chain.
    const numFat = u32(h, 44);
    const numDifat = u32(h, 72);
    if (numFat * sectorSize > MAX_TABLE_BYTES || numFat > fileSectors) throw new MalformedError(`compound file: ${numFat} FAT sectors exceed the limit`);
    if (numDifat * sectorSize > MAX_TABLE_BYTES || numDifat > fileSectors) throw new MalformedError(`compound file: ${numDifat} DIFAT sectors exceed the limit`);
    const fatSectors: number[] = [];
    for (let i = 0; i < 109 && fatSectors.length < numFat; i++) fatSectors.push(u32(h, 76 + 4 * i));
    const difatSectors: number[] = [];
    let difat = u32(h, 68);
    for (let n = 0; n < numDifat; n++) {
      if (difat > MAXREGSECT) throw new MalformedError('compound file: DIFAT chain ends early');
      claim(difat, 'DIFAT');
      difatSectors.push(difat);
      const d = await read(sectorOffset(difat), sectorSize, 'DIFAT sector');
      for (let i = 0; i < perSector - 1 && fatSectors.length < numFat; i++) fatSectors.push(u32(d, 4 * i));
      difat = u32(d, sectorSize - 4);
    }
    if (fatSectors.length !== numFat) throw new MalformedError('compound file: DIFAT lists fewer FAT sectors than the header counts');
    for (const s of fatSectors) claim(s, 'FAT');
    const fatBytes = await readSectors(fatSectors, 'FAT');
    const fat = new Uint32Array(numFat * perSector);
    for (let j = 0; j < fat.length; j++) fat[j] = u32(fatBytes, 4 * j);
    // The FAT must mark its own sectors (and the DIFAT's) as such: else a stream could claim them.
    for (const s of fatSectors) if (fat[s] !== FATSECT) throw new MalformedError(`compound file: FAT sector ${s} is not marked FATSECT`);
    for (const s of difatSectors) if (fat[s] !== DIFSECT) throw new MalformedError(`compound file: DIFAT sector ${s} is not marked DIFSECT`);
    // ...and mark nothing else so: the special markers count exactly the FAT and DIFAT sectors.
    let fatMarks = 0;
    let difatMarks = 0;
    for (const v of fat) {
      if (v === FATSECT) fatMarks++;
      else if (v === DIFSECT) difatMarks++;
    }
    if (fatMarks !== numFat || difatMarks !== numDifat) throw new MalformedError(`compound file: the FAT marks ${fatMarks} FAT and ${difatMarks} DIFAT sectors, the header counts ${numFat} and ${numDifat}`);

    /** Follows a FAT chain, claiming each sector; a loop or a shared sector is MALFORMED. */
    const chain = (start: number, what: string, maxSectors: number): number[] => {
      const out: number[] = [];
      let s = start;
      while (s !== ENDOFCHAIN) {
        if (s > MAXREGSECT || s >= fat.length) throw new MalformedError(`compound file: ${what} chain reaches invalid sector ${s}`);
        if (out.length >= maxSectors) throw new MalformedError(`compound file: ${what} chain is longer than ${maxSectors} sectors`);
        claim(s, what);
        out.push(s);
        s = fat[s]!;
      }
      return out;
    };

    // Directory.
    const dirSectors = chain(u32(h, 48), 'directory', Math.ceil((MAX_DIRECTORY_ENTRIES * ENTRY_BYTES) / sectorSize));
    if (!dirSectors.length) throw new MalformedError('compound file has no directory');
    const dirBytes = await readSectors(dirSectors, 'directory');
    const entryCount = dirBytes.byteLength / ENTRY_BYTES;
    const parseEntry = (id: number): DirectoryEntry => {
      const e = dirBytes.subarray(id * ENTRY_BYTES, (id + 1) * ENTRY_BYTES);
      const nameLen = u16(e, 64);
      if (nameLen < 2 || nameLen > 64 || nameLen % 2 || u16(e, nameLen - 2) !== 0) throw new MalformedError(`compound file: directory entry ${id} has a bad name length`);
      const type = e[66]!;
      const size = major === 3 ? u32(e, 120) : u32(e, 120) + u32(e, 124) * 2 ** 32;
      if (size > source.size) throw new MalformedError(`compound file: stream ${id} claims ${size} bytes, more than the file`);
      return {
        id, name: Buffer.from(e.subarray(0, nameLen - 2)), type,
        clsid: Buffer.from(e.subarray(80, 96)), stateBits: Buffer.from(e.subarray(96, 100)),
        creationTime: Buffer.from(e.subarray(100, 108)), modifiedTime: Buffer.from(e.subarray(108, 116)),
        startSector: u32(e, 116), size, sizeLow: Buffer.from(e.subarray(120, 124)), children: [],
      };
    };
    const link = (id: number, at: number) => u32(dirBytes, id * ENTRY_BYTES + at);
    const root = parseEntry(0);
    if (root.type !== ENTRY_ROOT || root.name.toString('utf16le') !== 'Root Entry') throw new MalformedError('compound file: first directory entry is not the root');
    if (link(0, 68) !== NOSTREAM || link(0, 72) !== NOSTREAM) throw new MalformedError('compound file: the root entry has siblings');

    // The tree: children of each storage form a red-black tree through left/right sibling links.
    const visited = new Uint8Array(entryCount);
    visited[0] = 1;
    const storages: [DirectoryEntry, number][] = [[root, 0]];
    const streams: DirectoryEntry[] = [];
    while (storages.length) {
      const [storage, depth] = storages.pop()!;
      if (depth > MAX_DEPTH) throw new MalformedError('compound file: storages nested too deep');
      const pending = [link(storage.id, 76)];
      const names = new Set<string>();
      while (pending.length) {
        const id = pending.pop()!;
        if (id === NOSTREAM) continue;
        if (id >= entryCount || id === 0) throw new MalformedError(`compound file: directory link to entry ${id} is invalid`);
        if (visited[id]) throw new MalformedError(`compound file: directory entry ${id} is reached twice (a cycle or a shared entry)`);
        visited[id] = 1;
        const child = parseEntry(id);
        if (child.type !== ENTRY_STORAGE && child.type !== ENTRY_STREAM) throw new MalformedError(`compound file: directory entry ${id} of type ${child.type} inside a storage`);
        // Names compare case-insensitively in CFB; two that collide would make readers disagree.
        const key = child.name.toString('utf16le').toUpperCase();
        if (names.has(key)) throw new MalformedError(`compound file: two entries named "${child.name.toString('utf16le')}" in one storage`);
        names.add(key);
        // A stream has no children: a child link on one is something only some readers would follow.
        if (child.type === ENTRY_STREAM && link(id, 76) !== NOSTREAM) throw new MalformedError(`compound file: stream entry ${id} has a child link`);
        storage.children.push(child);
        if (child.type === ENTRY_STORAGE) storages.push([child, depth + 1]);
        else streams.push(child);
        pending.push(link(id, 68), link(id, 72));
      }
    }

    // Mini FAT and the mini stream (held in the root entry's chain).
    const numMiniFat = u32(h, 64);
    // Not much larger than the mini stream needs (one entry per 64 bytes of it, with slack for writers
    // that allocate ahead), so its memory follows the mini stream's size, not a header field.
    const miniFatNeeded = Math.ceil((Math.ceil(root.size / MINI_SECTOR) * 4) / sectorSize);
    if (numMiniFat > 2 * miniFatNeeded + 4) throw new MalformedError(`compound file: ${numMiniFat} mini FAT sectors for a mini stream that needs ${miniFatNeeded}`);
    const miniFatSectors = numMiniFat ? chain(u32(h, 60), 'mini FAT', numMiniFat) : [];
    if (miniFatSectors.length !== numMiniFat) throw new MalformedError('compound file: mini FAT chain length differs from the header');
    const miniFatBytes = await readSectors(miniFatSectors, 'mini FAT');
    const miniFat = new Uint32Array(numMiniFat * perSector);
    for (let j = 0; j < miniFat.length; j++) miniFat[j] = u32(miniFatBytes, 4 * j);
    const needMini = Math.ceil(root.size / sectorSize);
    const miniStreamSectors = Uint32Array.from(root.size ? chain(root.startSector, 'mini stream', needMini) : []);
    if (miniStreamSectors.length !== needMini) throw new MalformedError('compound file: mini stream chain length differs from its size');
    if (needMini && sectorOffset(miniStreamSectors[needMini - 1]!) + (root.size - (needMini - 1) * sectorSize) > source.size) throw new MalformedError('compound file: the mini stream ends past the end of the file');

    // Every stream's chain, claimed now so overlaps are found before anything is hashed.
    const miniSeen = new Uint8Array(Math.ceil(miniFat.length / 8));
    const miniCount = Math.floor(root.size / MINI_SECTOR);
    for (const s of streams) {
      if (s.size === 0) continue;
      if (s.size < MINI_CUTOFF) {
        const need = Math.ceil(s.size / MINI_SECTOR);
        let m = s.startSector;
        for (let n = 0; n < need; n++) {
          if (m >= miniFat.length || m >= miniCount) throw new MalformedError(`compound file: stream ${s.id} reaches mini sector ${m}, outside the mini stream`);
          if (miniSeen[m >> 3]! & (1 << (m & 7))) throw new MalformedError(`compound file: mini sector ${m} is used twice`);
          miniSeen[m >> 3]! |= 1 << (m & 7);
          m = miniFat[m]!;
        }
        if (m !== ENDOFCHAIN) throw new MalformedError(`compound file: stream ${s.id}'s mini chain does not end with its size`);
      } else {
        const need = Math.ceil(s.size / sectorSize);
        const c = chain(s.startSector, `stream ${s.id}`, need);
        if (c.length !== need) throw new MalformedError(`compound file: stream ${s.id} has ${c.length} sectors for ${s.size} bytes`);
        if (sectorOffset(c[c.length - 1]!) + (s.size - (need - 1) * sectorSize) > source.size) throw new MalformedError(`compound file: stream ${s.id} ends past the end of the file`);
      }
    }
    let lastUsed = -1;
    for (let i = Math.min(fat.length, fileSectors) - 1; i >= 0; i--) if (fat[i] !== FREESECT) { lastUsed = i; break; }
    const trailingBytes = Math.max(0, source.size - (lastUsed + 2) * sectorSize);
    return new CompoundFile(source, sectorSize, fat, miniFat, miniStreamSectors, root, trailingBytes);
  }

  /** The file ranges holding a stream's bytes (validated by open), merged where contiguous. */
  runs(e: DirectoryEntry): FileRuns {
    const out: [number, number][] = [];
    const push = (offset: number, length: number) => {
      const last = out[out.length - 1];
      if (last && last[0] + last[1] === offset) last[1] += length;
      else out.push([offset, length]);
    };
    let left = e.size;
    if (e.size < MINI_CUTOFF) {
      let m = e.startSector;
      while (left > 0) {
        const byteInMini = m * MINI_SECTOR;
        const sector = this.miniStreamSectors[Math.floor(byteInMini / this.sectorSize)]!;
        const n = Math.min(left, MINI_SECTOR);
        push((sector + 1) * this.sectorSize + (byteInMini % this.sectorSize), n);
        left -= n;
        m = this.miniFat[m]!;
      }
    } else {
      let s = e.startSector;
      while (left > 0) {
        const n = Math.min(left, this.sectorSize);
        push((s + 1) * this.sectorSize, n);
        left -= n;
        s = this.fat[s]!;
      }
    }
    return out;
  }

  /** Reads a whole (small) stream into memory: for the signature streams only, whose size the caller bounds. */
  async readStream(e: DirectoryEntry): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (const [offset, length] of this.runs(e)) {
      const b = await this.source.readAt(offset, length);
      if (b.byteLength !== length) throw new MalformedError('compound file: short read');
      parts.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    }
    return Buffer.concat(parts);
  }

  /** Feeds a stream's bytes to `sink` in pieces of at most `piece` bytes: memory stays bounded whatever its size. */
  async pipeStream(e: DirectoryEntry, sink: (bytes: Uint8Array) => void, piece = 1 << 20): Promise<void> {
    for (const [offset, length] of this.runs(e)) {
      for (let at = 0; at < length; at += piece) {
        const n = Math.min(piece, length - at);
        const b = await this.source.readAt(offset + at, n);
        if (b.byteLength !== n) throw new MalformedError('compound file: short read');
        sink(b);
      }
    }
  }
}
