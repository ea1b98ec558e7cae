import { createHash, type Hash } from 'node:crypto';
import type { DigestName } from '../algorithms.js';
import { ENTRY_STORAGE, ENTRY_STREAM, type CompoundFile, type DirectoryEntry } from './compoundFile.js';

/** The two streams of the root storage that hold the signature, and so are not hashed. */
export const DIGITAL_SIGNATURE = Buffer.from('\u0005DigitalSignature', 'utf16le');
export const MSI_DIGITAL_SIGNATURE_EX = Buffer.from('\u0005MsiDigitalSignatureEx', 'utf16le');

export const isSignatureStream = (e: DirectoryEntry) => e.name.equals(DIGITAL_SIGNATURE) || e.name.equals(MSI_DIGITAL_SIGNATURE_EX);

/**
 * The MSI hashing order: names as raw UTF-16LE bytes with their terminating NUL, compared bytewise
 * over the shorter length; on a tie the longer name first (what Windows' SIP and osslsigncode do).
 */
function hashOrder(a: DirectoryEntry, b: DirectoryEntry): number {
  const an = Buffer.concat([a.name, Buffer.alloc(2)]);
  const bn = Buffer.concat([b.name, Buffer.alloc(2)]);
  const n = Math.min(an.length, bn.length);
  const diff = Buffer.compare(an.subarray(0, n), bn.subarray(0, n));
  if (diff !== 0) return diff;
  return an.length > bn.length ? -1 : 1;
}

function sortedChildren(e: DirectoryEntry, isRoot: boolean): DirectoryEntry[] {
  return e.children.filter((c) => !(isRoot && isSignatureStream(c))).sort(hashOrder);
}

/**
 * The MsiDigitalSignatureEx pre-hash input: metadata only (names, sizes, CLSIDs, state bits and
 * times) of every storage and stream, in hashing order; the root contributes its CLSID and state bits.
 */
function prehashMetadata(e: DirectoryEntry, isRoot: boolean, h: Hash[]): void {
  const put = (b: Uint8Array) => { for (const x of h) x.update(b); };
  if (!isRoot) put(e.name);
  put(e.type === ENTRY_STREAM ? e.sizeLow : e.clsid);
  put(e.stateBits);
  if (!isRoot) { put(e.creationTime); put(e.modifiedTime); }
  if (e.type === ENTRY_STREAM) return;
  for (const c of sortedChildren(e, isRoot)) prehashMetadata(c, false, h);
}

async function hashContent(cf: CompoundFile, e: DirectoryEntry, isRoot: boolean, h: Hash[]): Promise<void> {
  for (const c of sortedChildren(e, isRoot)) {
    if (c.type === ENTRY_STREAM) {
      if (c.size > 0) await cf.pipeStream(c, (b) => { for (const x of h) x.update(b); });
    } else if (c.type === ENTRY_STORAGE) {
      await hashContent(cf, c, false, h);
    }
  }
  for (const x of h) x.update(e.clsid);
}

/** The MsiDigitalSignatureEx value for each algorithm: the hash of the metadata pre-hash input. */
export function msiPrehashes(cf: CompoundFile, algorithms: readonly DigestName[]): Map<DigestName, Buffer> {
  const hashes = algorithms.map((a) => createHash(a));
  prehashMetadata(cf.root, true, hashes);
  return new Map(algorithms.map((a, i) => [a, hashes[i]!.digest()]));
}

/**
 * The digest an MSI signature signs, for each algorithm: every stream's bytes in hashing order
 * (storages recursively, each followed by its CLSID; the root's CLSID last), preceded by the
 * pre-hash when the package carries MsiDigitalSignatureEx. Streams are read piece by piece.
 */
export async function msiDigests(cf: CompoundFile, algorithms: readonly DigestName[], prehashes?: Map<DigestName, Buffer>): Promise<Map<DigestName, Buffer>> {
  const hashes = algorithms.map((a) => {
    const h = createHash(a);
    if (prehashes) h.update(prehashes.get(a)!);
    return h;
  });
  await hashContent(cf, cf.root, true, hashes);
  return new Map(algorithms.map((a, i) => [a, hashes[i]!.digest()]));
}
