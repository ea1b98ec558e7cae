import { createHash } from 'node:crypto';
import { OID } from '../oids.js';
import { reason, type VerdictReason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import { derElementLength } from '../pe/winCertificate.js';
import type { DigestName } from '../algorithms.js';
import type { FormatLimits, RandomAccessFormat, RandomAccessSource, SignedContent } from '../format/signedFileFormat.js';
import { ZipArchive, type ZipEntry } from './zipArchive.js';
import { BLOCK_BYTES, parseBlockMap } from './blockMap.js';

const SIGNATURE_NAME = 'AppxSignature.p7x';
const BLOCK_MAP_NAME = 'AppxBlockMap.xml';
const CONTENT_TYPES_NAME = '[Content_Types].xml';
const CODE_INTEGRITY_NAME = 'AppxMetadata/CodeIntegrity.cat';
const BUNDLE_MANIFEST_NAME = 'AppxMetadata/AppxBundleManifest.xml';
/** The APPX SIP's GUID {0AC5DF4B-CE07-4DE2-B76E-23C839A09FD1}, as SpcSipInfo carries it. */
export const APPX_SIP_GUID = Buffer.from('4bdfc50a07cee24db76e23c839a09fd1', 'hex');
/** The bundle SIP's GUID {0F5F58B3-AADE-4B9A-A434-95742D92ECEB}. */
export const APPX_BUNDLE_SIP_GUID = Buffer.from('b3585f0fdeaa9a4ba43495742d92eceb', 'hex');
/** Packages inside a bundle, by name. */
const INNER_PACKAGE = /\.(appx|msix)$/i;
const ENCRYPTED_PACKAGE = /\.(eappx|emsix|eappxbundle|emsixbundle)$/i;
/** Metadata parts read whole into memory (block map, content types): bounded. */
const MAX_METADATA_BYTES = 16 << 20;
/** Uncompressed bytes hashed per package: at most this many times the package plus 16 MiB (inflate bombs). */
const MAX_INFLATE_FACTOR = 8;

const tag = (t: string) => Buffer.from(t, 'latin1');

/** ZIP names are OPC part names (percent-encoded); the block map names files as they are. */
function partName(zipName: string): string {
  try { return decodeURIComponent(zipName); } catch { return zipName; }
}

/**
 * APPX and MSIX packages (ZIP): the signature is `AppxSignature.p7x` ("PKCX" + PKCS#7); its
 * SpcIndirectDataContent (SpcSipInfo, the APPX SIP) signs "APPX" followed by tagged digests of the
 * ZIP's entries (AXPC), its central directory without the signature (AXCD), [Content_Types].xml
 * (AXCT), AppxBlockMap.xml (AXBM) and AppxMetadata/CodeIntegrity.cat (AXCI, when present), as
 * Windows and osslsigncode compute them. Every block of every file is checked against the block map.
 */
export const appxFormat: RandomAccessFormat = {
  name: 'msix',
  mode: 'random-access',
  sniff: (head) => head.byteLength >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04,
  read: (source, limits, algorithms) => readPackage(source, limits, algorithms, true),
};

/** A package (or, where allowed, a bundle of packages): its signature, the APPX digest blob, the block map checked. */
async function readPackage(source: RandomAccessSource, limits: FormatLimits, algorithms: readonly DigestName[], bundleAllowed: boolean): Promise<SignedContent> {
  const zip = await ZipArchive.open(source);
  const blockMapEntry = zip.entry(BLOCK_MAP_NAME);
  const signatureEntry = zip.entry(SIGNATURE_NAME);
  if (!blockMapEntry && !signatureEntry) return { kind: 'blocked', reasons: [reason('UNSUPPORTED_FORMAT', 'a ZIP archive that is not an MSIX/APPX package (no AppxBlockMap.xml)')] };
  const isBundle = !!zip.entry(BUNDLE_MANIFEST_NAME);
  if (isBundle && !bundleAllowed) throw new MalformedError('a bundle inside a bundle');
  const encrypted = zip.entries.find((en) => ENCRYPTED_PACKAGE.test(en.name));
  if (encrypted) return { kind: 'blocked', reasons: [reason('UNSUPPORTED_FORMAT', `an encrypted package (${encrypted.name}) cannot be verified`)] };
  if (!signatureEntry) return { kind: 'blocked', reasons: [reason('NOT_SIGNED', 'the package carries no AppxSignature.p7x')] };
  if (!blockMapEntry) throw new MalformedError('a signed package without AppxBlockMap.xml');
  const contentTypesEntry = zip.entry(CONTENT_TYPES_NAME);
  if (!contentTypesEntry) throw new MalformedError('a package without [Content_Types].xml');
  if (signatureEntry.size > limits.maxSignatureBytes) {
    return { kind: 'blocked', reasons: [reason('OVERSIZE', `signature of ${signatureEntry.size} bytes exceeds the ${limits.maxSignatureBytes}-byte limit`)] };
  }
  for (const en of [blockMapEntry, contentTypesEntry]) {
    if (en.size > MAX_METADATA_BYTES) return { kind: 'blocked', reasons: [reason('OVERSIZE', `${en.name} of ${en.size} bytes exceeds the ${MAX_METADATA_BYTES}-byte limit`)] };
  }
  const inflated = zip.entries.reduce((n, en) => n + en.size, 0);
  if (inflated > MAX_INFLATE_FACTOR * source.size + (16 << 20)) {
    return { kind: 'blocked', reasons: [reason('OVERSIZE', `the package inflates to ${inflated} bytes, more than ${MAX_INFLATE_FACTOR} times its size`)] };
  }

  const problems: VerdictReason[] = [];
  const p7x = await zip.readEntry(signatureEntry);
  if (p7x.length < 4 || !p7x.subarray(0, 4).equals(tag('PKCX'))) throw new MalformedError('AppxSignature.p7x does not start with PKCX');
  const der = p7x.subarray(4);
  const derLen = derElementLength(der);
  if (derLen > der.length) throw new MalformedError('AppxSignature.p7x shorter than its PKCS#7 blob');
  if (derLen < der.length) problems.push(reason('TRAILING_DATA', `${der.length - derLen} bytes after the PKCS#7 blob in AppxSignature.p7x`));

  const blockMapXml = await zip.readEntry(blockMapEntry);
  const blockMap = parseBlockMap(blockMapXml);

  const fileDigests = new Map<DigestName, Buffer>();
  const alg = blockMap.hash;
  if (algorithms.includes(alg)) {
    const h = (data: Buffer) => createHash(alg).update(data).digest();
    const others = zip.entries.filter((en) => en !== signatureEntry);
    // AXPC: every entry (local header, data, descriptor) but the signature's, in file order.
    const axpc = createHash(alg);
    for (const en of others) await zip.pipeRaw(en.localOffset, en.end, (b) => axpc.update(b));
    // AXCD: the central directory as if the signature entry did not exist, and its end record.
    const cdRecords = Buffer.concat(others.map((en) => en.cdRecord));
    const cdOffset = others.reduce((n, en) => n + (en.end - en.localOffset), 0);
    const axcd = h(Buffer.concat([cdRecords, endRecords(zip, others.length, cdRecords.length, cdOffset)]));
    const axct = h(await zip.readEntry(contentTypesEntry));
    const axbm = h(blockMapXml);
    const ci = zip.entry(CODE_INTEGRITY_NAME);
    const parts = [tag('APPX'), tag('AXPC'), axpc.digest(), tag('AXCD'), axcd, tag('AXCT'), axct, tag('AXBM'), axbm];
    if (ci) {
      const c = createHash(alg);
      await zip.pipeEntry(ci, (b) => c.update(b));
      parts.push(tag('AXCI'), c.digest());
    }
    fileDigests.set(alg, Buffer.concat(parts));
  }
  // A bundle's packages, stored whole, each verified in place as a package of its own.
  const inner: { name: string; content: SignedContent }[] = [];
  if (isBundle) {
    for (const en of zip.entries.filter((x) => INNER_PACKAGE.test(x.name))) {
      if (en.method !== 0) throw new MalformedError(`the bundle's package ${en.name} is compressed`);
      const at = en.dataOffset;
      const sub: RandomAccessSource = {
        size: en.size,
        readAt: async (offset, length) => {
          if (offset < 0 || length < 0 || offset + length > en.size) throw new MalformedError(`a read past the end of ${en.name}`);
          return source.readAt(at + offset, length);
        },
      };
      inner.push({ name: en.name, content: await readPackage(sub, limits, algorithms, false) });
    }
    if (!inner.length) throw new MalformedError('a bundle without packages');
  }
  // After the digests, so a changed file reports DIGEST_MISMATCH too, not only the block or CRC it breaks.
  try {
    await checkBlockMap(zip, blockMap);
  } catch (err) {
    if (!(err instanceof MalformedError)) throw err;
    problems.push(reason('MALFORMED', err.message));
  }
  return {
    kind: 'signed',
    signatures: [der.subarray(0, derLen)],
    binding: { kind: 'authenticode', dataType: OID.spcSipInfo, sipGuid: isBundle ? APPX_BUNDLE_SIP_GUID : APPX_SIP_GUID, fileDigests },
    problems,
    inner,
  };
}

/**
 * The end records as if the signature entry did not exist (what AXCD covers after the directory):
 * for ZIP64, the ZIP64 end record and locator with the new count, size and offset and the original
 * other fields; then the end record, its disk numbers 0, its 0xFFFF/0xFFFFFFFF markers kept.
 */
function endRecords(zip: ZipArchive, count: number, cdSize: number, cdOffset: number): Buffer {
  const parts: Buffer[] = [];
  const z = zip.zip64;
  if (z) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(z.recordSize, 4);
    rec.writeUInt16LE(z.creatorVersion, 12);
    rec.writeUInt16LE(z.viewerVersion, 14);
    rec.writeUInt32LE(z.diskNumber, 16);
    rec.writeUInt32LE(z.diskWithCd, 20);
    rec.writeBigUInt64LE(BigInt(count), 24);
    rec.writeBigUInt64LE(BigInt(count), 32);
    rec.writeBigUInt64LE(BigInt(cdSize), 40);
    rec.writeBigUInt64LE(BigInt(cdOffset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeUInt32LE(z.locatorDisk, 4);
    loc.writeBigUInt64LE(BigInt(cdOffset + cdSize), 8);
    loc.writeUInt32LE(z.totalDisks, 16);
    parts.push(rec, z.extensible, loc);
  }
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(z?.countsMax ? 0xffff : count, 8);
  eocd.writeUInt16LE(z?.countsMax ? 0xffff : count, 10);
  eocd.writeUInt32LE(z?.sizeMax ? 0xffffffff : cdSize, 12);
  eocd.writeUInt32LE(z?.offsetMax ? 0xffffffff : cdOffset, 16);
  eocd.writeUInt16LE(zip.comment.length, 20);
  parts.push(eocd, zip.comment);
  return Buffer.concat(parts);
}

/**
 * Every file but the signature, the block map and the content types is in the block map with its
 * size, its local header size and the hash of each 64 KiB block of its uncompressed bytes; the
 * block map names no file the package lacks.
 */
async function checkBlockMap(zip: ZipArchive, map: ReturnType<typeof parseBlockMap>): Promise<void> {
  const seen = new Set<string>();
  for (const en of zip.entries) {
    if (en.name === SIGNATURE_NAME || en.name === BLOCK_MAP_NAME || en.name === CONTENT_TYPES_NAME) continue;
    const key = partName(en.name).toUpperCase();
    const f = map.files.get(key);
    if (!f) throw new MalformedError(`"${en.name}" is not in AppxBlockMap.xml`);
    seen.add(key);
    if (f.size !== en.size) throw new MalformedError(`AppxBlockMap.xml gives "${en.name}" ${f.size} bytes, the package ${en.size}`);
    if (f.lfhSize !== en.localHeaderSize) throw new MalformedError(`AppxBlockMap.xml gives "${en.name}" a ${f.lfhSize}-byte local header, the package ${en.localHeaderSize}`);
    if (f.blocks.length !== Math.ceil(en.size / BLOCK_BYTES)) throw new MalformedError(`AppxBlockMap.xml lists ${f.blocks.length} blocks for "${en.name}"`);
    await checkBlocks(zip, en, f.blocks, map.hash);
  }
  for (const key of map.files.keys()) if (!seen.has(key)) throw new MalformedError(`AppxBlockMap.xml lists ${key}, which the package lacks`);
}

async function checkBlocks(zip: ZipArchive, en: ZipEntry, blocks: Buffer[], alg: DigestName): Promise<void> {
  let index = 0;
  let filled = 0;
  let h = createHash(alg);
  const close = () => {
    const got = h.digest();
    if (!got.equals(blocks[index]!)) throw new MalformedError(`block ${index} of "${en.name}" does not match AppxBlockMap.xml`);
    index++;
    filled = 0;
    h = createHash(alg);
  };
  await zip.pipeEntry(en, (b) => {
    let at = 0;
    while (at < b.byteLength) {
      const n = Math.min(BLOCK_BYTES - filled, b.byteLength - at);
      h.update(b.subarray(at, at + n));
      filled += n;
      at += n;
      if (filled === BLOCK_BYTES) close();
    }
  });
  if (filled > 0) close();
}
