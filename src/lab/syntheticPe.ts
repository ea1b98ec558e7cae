/**
 * Large signed PE32+ payloads generated on the fly, never written to disk: for the 1 GiB streaming
 * test and for benchmarks. Memory is O(chunk size) whatever the file size.
 *
 * Layout (as test/fixtures/build-unsigned.mjs pe64, which osslsigncode accepts): 0x200 bytes of
 * headers, one .text section whose raw data fills the file up to ~`size`, then the WIN_CERTIFICATE
 * table. Section bytes come from a 1 MiB pattern derived from the seed, XORed per MiB with a word
 * derived from the MiB index, so that every MiB differs and any byte can be produced at any offset.
 *
 * The constructor runs the first pass (generates the headers and content once to compute the
 * Authenticode digest and the PE CheckSum), then signs; `chunks()` is the second pass.
 */
import { RangeHasher } from '../verify/rangeHasher.js';
import { parsePeLayout, peDigestRanges } from '../verify/pe/peLayout.js';
import {
  buildAuthenticodeSignature,
  peChecksumFromWordSum,
  peWordSum,
  winCertificate,
  type AuthenticodeSigner,
} from './authenticodeSigner.js';

const MiB = 1024 * 1024;
const PATTERN_BYTES = MiB;
const FILE_ALIGN = 0x200;
const SECT_ALIGN = 0x1000;
const HEADERS = 0x200;
const TIMESTAMP = 0x67748580; // 2025-01-01T00:00:00Z, as the fixtures
const IMAGE_BASE = 0x140000000n;

export interface SyntheticPeOptions {
  /** Approximate file size in bytes (the .text raw size is rounded to 0x200; the table is added). */
  size: number;
  signer: AuthenticodeSigner;
  /** Selects the content pattern (default 1). */
  seed?: number;
  /** Bytes per yielded chunk (default 1 MiB). Any positive integer; multiples of 4 are fastest. */
  chunkSize?: number;
  /**
   * Yield the same buffer every time (refilled): no allocation per chunk, but a consumer must be done
   * with a chunk before asking for the next one. IncrementalVerifier is, for chunks of at least 64
   * bytes: it keeps the first chunks uncopied until it has SNIFF_BYTES (64) to sniff the format.
   * Default false.
   */
  reuseChunkBuffer?: boolean;
  /** Flip (XOR 0x01) the byte at this file offset in what chunks() yields, after signing: a tamper. */
  corruptByteAt?: number;
}

export interface SyntheticSignedPe {
  totalSize: number;
  /** File offset and size of the .text raw data (where a tamper gives DIGEST_MISMATCH). */
  textOffset: number;
  textSize: number;
  certTableOffset: number;
  /** The Authenticode file digest that was signed. */
  fileDigest: Uint8Array;
  /** The second pass: the whole signed file, in order. Each call starts over. */
  chunks(): Iterable<Uint8Array>;
}

/** Deterministic 1 MiB pattern (xorshift32 words) from a seed. */
function patternWords(seed: number): Uint32Array {
  const w = new Uint32Array(PATTERN_BYTES / 4);
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x6a09e667) >>> 0 || 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
  return w;
}

/** A 32-bit word mixing seed and MiB index (murmur3 finaliser). */
function blockMask(seed: number, block: number): number {
  let h = (Math.imul(block + 1, 0x85ebca6b) ^ Math.imul(seed >>> 0, 0xc2b2ae35)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function buildHeaders(textRaw: number): Uint8Array {
  const buf = Buffer.alloc(HEADERS);
  const eLfanew = 0x80;
  const coff = eLfanew + 4;
  const opt = coff + 20;
  const optSize = 240; // PE32+, 16 data directories
  const sect = opt + optSize;
  const textVA = SECT_ALIGN;
  const sizeOfImage = textVA + Math.ceil(textRaw / SECT_ALIGN) * SECT_ALIGN;
  if (sizeOfImage > 0xffffffff) throw new Error('image too large for SizeOfImage');

  buf.write('MZ', 0, 'latin1');
  buf.writeUInt16LE(0x90, 0x02);
  buf.writeUInt16LE(0x03, 0x04);
  buf.writeUInt16LE(0x04, 0x08);
  buf.writeUInt16LE(0xffff, 0x0c);
  buf.writeUInt16LE(0xb8, 0x10);
  buf.writeUInt16LE(0x40, 0x18);
  buf.writeUInt32LE(eLfanew, 0x3c);
  Buffer.from([0x0e, 0x1f, 0xba, 0x0e, 0x00, 0xb4, 0x09, 0xcd, 0x21, 0xb8, 0x01, 0x4c, 0xcd, 0x21]).copy(buf, 0x40);
  buf.write('This program cannot be run in DOS mode.\r\r\n$', 0x4e, 'latin1');

  buf.write('PE\0\0', eLfanew, 'latin1');
  buf.writeUInt16LE(0x8664, coff); // amd64
  buf.writeUInt16LE(1, coff + 2); // NumberOfSections
  buf.writeUInt32LE(TIMESTAMP, coff + 4);
  buf.writeUInt16LE(optSize, coff + 16);
  buf.writeUInt16LE(0x0023, coff + 18); // EXECUTABLE_IMAGE | RELOCS_STRIPPED | LARGE_ADDRESS_AWARE

  buf.writeUInt16LE(0x20b, opt); // PE32+
  buf[opt + 2] = 14;
  buf.writeUInt32LE(textRaw, opt + 4); // SizeOfCode
  buf.writeUInt32LE(textVA, opt + 16); // AddressOfEntryPoint
  buf.writeUInt32LE(textVA, opt + 20); // BaseOfCode
  buf.writeBigUInt64LE(IMAGE_BASE, opt + 24);
  buf.writeUInt32LE(SECT_ALIGN, opt + 32);
  buf.writeUInt32LE(FILE_ALIGN, opt + 36);
  buf.writeUInt16LE(6, opt + 40); // MajorOperatingSystemVersion
  buf.writeUInt16LE(6, opt + 48); // MajorSubsystemVersion
  buf.writeUInt32LE(sizeOfImage, opt + 56);
  buf.writeUInt32LE(HEADERS, opt + 60); // SizeOfHeaders
  // opt + 64: CheckSum, set after signing
  buf.writeUInt16LE(3, opt + 68); // Subsystem: WINDOWS_CUI
  buf.writeUInt16LE(0x8500, opt + 70); // DllCharacteristics
  buf.writeBigUInt64LE(0x100000n, opt + 72);
  buf.writeBigUInt64LE(0x1000n, opt + 80);
  buf.writeBigUInt64LE(0x100000n, opt + 88);
  buf.writeBigUInt64LE(0x1000n, opt + 96);
  buf.writeUInt32LE(16, opt + 108); // NumberOfRvaAndSizes; the directories stay zero until signing

  buf.write('.text\0\0\0', sect, 'latin1');
  buf.writeUInt32LE(textRaw, sect + 8); // VirtualSize
  buf.writeUInt32LE(textVA, sect + 12);
  buf.writeUInt32LE(textRaw, sect + 16); // SizeOfRawData
  buf.writeUInt32LE(HEADERS, sect + 20); // PointerToRawData
  buf.writeUInt32LE(0x60000020, sect + 36); // CODE | MEM_EXECUTE | MEM_READ
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes file bytes [at, at + out.length) of the .text pattern into `out` (at relative to the file). */
function fillPattern(out: Uint8Array, at: number, pattern: Uint32Array, patternBytes: Uint8Array, seed: number): void {
  let o = 0;
  while (o < out.byteLength) {
    const f = at + o;
    const block = Math.floor(f / PATTERN_BYTES);
    const p = f - block * PATTERN_BYTES;
    const n = Math.min(out.byteLength - o, PATTERN_BYTES - p);
    const mask = blockMask(seed, block);
    if (p % 4 === 0 && (out.byteOffset + o) % 4 === 0) {
      const words = n >>> 2;
      const dst = new Uint32Array(out.buffer, out.byteOffset + o, words);
      const base = p >>> 2;
      for (let i = 0; i < words; i++) dst[i] = pattern[base + i]! ^ mask;
      for (let i = words * 4; i < n; i++) out[o + i] = patternBytes[p + i]! ^ ((mask >>> (8 * ((p + i) & 3))) & 0xff);
    } else {
      for (let i = 0; i < n; i++) out[o + i] = patternBytes[p + i]! ^ ((mask >>> (8 * ((p + i) & 3))) & 0xff);
    }
    o += n;
  }
}

/** Copies the part of `src` (placed at file offset `srcAt`) that overlaps [at, at + out.length). */
function overlay(out: Uint8Array, at: number, src: Uint8Array, srcAt: number): void {
  const from = Math.max(at, srcAt);
  const to = Math.min(at + out.byteLength, srcAt + src.byteLength);
  if (from < to) out.set(src.subarray(from - srcAt, to - srcAt), from - at);
}

/**
 * Builds a signed PE32+ of about `size` bytes without holding it: the first pass (here) hashes it,
 * the second (`chunks()`) yields it. Bytes are little-endian-platform deterministic per seed.
 */
export function createSyntheticSignedPe(opts: SyntheticPeOptions): SyntheticSignedPe {
  const seed = opts.seed ?? 1;
  const chunkSize = opts.chunkSize ?? MiB;
  if (!Number.isSafeInteger(opts.size) || opts.size < HEADERS + FILE_ALIGN) throw new Error(`size must be an integer >= ${HEADERS + FILE_ALIGN}`);
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new Error('chunkSize must be a positive integer');
  const textRaw = Math.max(FILE_ALIGN, Math.floor((opts.size - HEADERS) / FILE_ALIGN) * FILE_ALIGN);
  const contentEnd = HEADERS + textRaw; // a multiple of 8: no padding before the table
  if (contentEnd > 0xfff00000) throw new Error('a signed PE must stay below 4 GiB');

  const pattern = patternWords(seed);
  const patternBytes = new Uint8Array(pattern.buffer);
  const headers = buildHeaders(textRaw);
  const layoutResult = parsePeLayout(headers, HEADERS);
  if (layoutResult.kind !== 'layout') throw new Error('internal: synthetic headers do not parse');
  const layout = layoutResult.layout;
  const certDirOffset = layout.certDirOffset!;
  const digest = opts.signer.digest ?? 'sha256';

  // First pass: the Authenticode digest (CheckSum and the Certificate Table entry are still zero and
  // excluded anyway) and the word sum for the CheckSum, over headers + .text.
  const hasher = new RangeHasher(peDigestRanges(layout, contentEnd), [digest]);
  let wordSum = 0;
  {
    const buf = new Uint8Array(MiB);
    for (let at = 0; at < contentEnd; at += MiB) {
      const chunk = buf.subarray(0, Math.min(MiB, contentEnd - at));
      fillPattern(chunk, at, pattern, patternBytes, seed);
      overlay(chunk, at, headers, 0);
      hasher.update(chunk, at);
      wordSum += peWordSum(chunk);
    }
  }
  const fileDigest = new Uint8Array(hasher.digests().get(digest)!);
  const pkcs7 = buildAuthenticodeSignature({ ...opts.signer, digest, dataType: 'pe', fileDigest });
  const table = winCertificate(pkcs7);
  const totalSize = contentEnd + table.byteLength;

  const hv = new DataView(headers.buffer, headers.byteOffset, headers.byteLength);
  hv.setUint32(certDirOffset, contentEnd, true);
  hv.setUint32(certDirOffset + 4, table.byteLength, true);
  wordSum += peWordSum(headers.subarray(certDirOffset, certDirOffset + 8)) + peWordSum(table);
  hv.setUint32(layout.checksumOffset, peChecksumFromWordSum(wordSum, totalSize), true);

  const corrupt = opts.corruptByteAt;
  if (corrupt !== undefined && !(Number.isSafeInteger(corrupt) && corrupt >= 0 && corrupt < totalSize)) {
    throw new Error(`corruptByteAt ${corrupt} is outside the file (0..${totalSize - 1})`);
  }

  function* chunks(): Generator<Uint8Array> {
    const shared = opts.reuseChunkBuffer ? new Uint8Array(chunkSize) : undefined;
    for (let at = 0; at < totalSize; at += chunkSize) {
      const n = Math.min(chunkSize, totalSize - at);
      const chunk = shared ? shared.subarray(0, n) : new Uint8Array(n);
      if (at < contentEnd) fillPattern(chunk.subarray(0, Math.min(n, contentEnd - at)), at, pattern, patternBytes, seed);
      overlay(chunk, at, headers, 0);
      overlay(chunk, at, table, contentEnd);
      if (corrupt !== undefined && corrupt >= at && corrupt < at + n) chunk[corrupt - at]! ^= 0x01;
      yield chunk;
    }
  }

  return { totalSize, textOffset: HEADERS, textSize: textRaw, certTableOffset: contentEnd, fileDigest, chunks };
}
