// @ts-check
/**
 * The test's own view of where things are in a signed file, computed from the bytes without
 * patchgate's parsers (so that a bug there cannot hide itself):
 *
 * - PE: CheckSum, the Certificate Table directory entry and the certificate table (from the
 *   optional header), WIN_CERTIFICATE headers and their PKCS#7 blobs.
 * - CAB: the header bytes the Authenticode CAB digest skips (reserved1, iCabinet, cbCFHeader,
 *   cbCFFolder/cbCFData and the signature locator, as osslsigncode hashes it) and the signature.
 * - Every PKCS#7 blob: an outline of its ASN.1 elements with CMS/X.509 field names, so that an
 *   offset can be named ("signerInfos[0].unsignedAttrs[0](msRfc3161Timestamp) > ...").
 *
 * Plain ESM JavaScript: shared by the vitest suites (test/fuzz/*.test.ts) and scripts/fuzz.mjs.
 */
import * as asn1js from 'asn1js';
import { createHash } from 'node:crypto';

const u16 = (b, o) => b[o] | (b[o + 1] << 8);
const u32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/**
 * @typedef {{ start: number, end: number, name: string }} Region  half-open [start, end)
 * @typedef {{
 *   kind: 'pe' | 'cab' | 'p7s' | 'other',
 *   size: number,
 *   excluded: Region[],            // bytes the Authenticode digest skips by specification
 *   checked: Region[],             // of those, bytes the format still fixes (headers, locator)
 *   signature?: Region,            // the certificate table / CAB signature area / the whole .p7s
 *   blobs: { start: number, end: number }[],  // PKCS#7 DER blobs (absolute offsets)
 *   lengthFields: { at: number, width: number, name: string }[],  // little-endian size/offset fields
 * }} FileMap
 */

/** @param {Uint8Array} b @returns {FileMap} */
export function mapFile(b, kindHint) {
  if (kindHint === 'p7s') return { kind: 'p7s', size: b.length, excluded: [], checked: [], signature: { start: 0, end: b.length, name: 'detached signature' }, blobs: derBlobAt(b, 0), lengthFields: [] };
  if (b.length >= 0x40 && b[0] === 0x4d && b[1] === 0x5a) return mapPe(b);
  if (b.length >= 36 && u32(b, 0) === 0x4643534d) return mapCab(b);
  return { kind: 'other', size: b.length, excluded: [], checked: [], blobs: [], lengthFields: [] };
}

function derBlobAt(b, at) {
  const len = derLength(b, at);
  return len > 0 && at + len <= b.length ? [{ start: at, end: at + len }] : [];
}

/** Length of the DER element at `at` (header included), or -1. */
export function derLength(b, at) {
  if (at + 2 > b.length) return -1;
  const first = b[at + 1];
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0 || n > 4 || at + 2 + n > b.length) return -1;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[at + 2 + i];
  return 2 + n + len;
}

/** @param {Uint8Array} b @returns {FileMap} */
function mapPe(b) {
  const map = /** @type {FileMap} */ ({ kind: 'pe', size: b.length, excluded: [], checked: [], blobs: [], lengthFields: [] });
  const pe = u32(b, 0x3c);
  map.lengthFields.push({ at: 0x3c, width: 4, name: 'e_lfanew' });
  if (pe + 24 + 2 > b.length || u32(b, pe) !== 0x4550) return map;
  const opt = pe + 24;
  map.lengthFields.push({ at: pe + 4 + 16, width: 2, name: 'SizeOfOptionalHeader' });
  const magic = u16(b, opt);
  const is64 = magic === 0x20b;
  const checksum = opt + 64;
  map.excluded.push({ start: checksum, end: checksum + 4, name: 'OptionalHeader.CheckSum' });
  const dirs = opt + (is64 ? 112 : 96);
  map.lengthFields.push({ at: opt + (is64 ? 108 : 92), width: 4, name: 'NumberOfRvaAndSizes' });
  const certDir = dirs + 4 * 8;
  if (certDir + 8 > b.length) return map;
  // The directory entry is skipped by the digest, but it says where the table is: a change moves it.
  map.excluded.push({ start: certDir, end: certDir + 8, name: 'DataDirectory[SECURITY]' });
  map.checked.push({ start: certDir, end: certDir + 8, name: 'DataDirectory[SECURITY]' });
  map.lengthFields.push({ at: certDir, width: 4, name: 'DataDirectory[SECURITY].VirtualAddress' }, { at: certDir + 4, width: 4, name: 'DataDirectory[SECURITY].Size' });
  const off = u32(b, certDir);
  const size = u32(b, certDir + 4);
  if (!size || off >= b.length) return map;
  const end = Math.min(b.length, off + size);
  map.signature = { start: off, end, name: 'certificate table' };
  map.excluded.push(map.signature);
  let at = off;
  for (let i = 0; at + 8 <= end && i < 8; i++) {
    const dw = u32(b, at);
    map.checked.push({ start: at, end: at + 8, name: `WIN_CERTIFICATE[${i}] header` });
    map.lengthFields.push({ at, width: 4, name: `WIN_CERTIFICATE[${i}].dwLength` });
    map.blobs.push(...derBlobAt(b, at + 8));
    if (dw < 8) break;
    at += (dw + 7) & ~7;
  }
  return map;
}

/** @param {Uint8Array} b @returns {FileMap} */
function mapCab(b) {
  const map = /** @type {FileMap} */ ({ kind: 'cab', size: b.length, excluded: [], checked: [], blobs: [], lengthFields: [] });
  map.lengthFields.push({ at: 8, width: 4, name: 'cbCabinet' }, { at: 16, width: 4, name: 'coffFiles' }, { at: 26, width: 2, name: 'cFolders' });
  const flags = u16(b, 30);
  if (!(flags & 4) || b.length < 60 || u16(b, 36) !== 20) return map;
  // osslsigncode's CAB digest: 0-3, skips reserved1 (4-7), hashes 8-33, skips iCabinet (34-35),
  // cbCFHeader, cbCFFolder, cbCFData and the first 16 reserve bytes (36-55), hashes 56-59 onwards.
  map.excluded.push({ start: 4, end: 8, name: 'CFHEADER.reserved1' });
  map.excluded.push({ start: 34, end: 36, name: 'CFHEADER.iCabinet' });
  map.excluded.push({ start: 36, end: 56, name: 'CFHEADER.cbCFHeader..signature locator' });
  map.checked.push({ start: 4, end: 8, name: 'CFHEADER.reserved1' }, { start: 36, end: 56, name: 'CFHEADER.cbCFHeader..signature locator' });
  map.lengthFields.push({ at: 36, width: 2, name: 'cbCFHeader' }, { at: 44, width: 4, name: 'signature offset' }, { at: 48, width: 4, name: 'signature size' });
  const off = u32(b, 44);
  const size = u32(b, 48);
  if (!off || !size || off >= b.length) return map;
  const end = Math.min(b.length, off + size);
  map.signature = { start: off, end, name: 'CAB signature' };
  map.excluded.push(map.signature);
  map.blobs.push(...derBlobAt(b, off));
  return map;
}

export const inRegion = (r, o) => o >= r.start && o < r.end;

// ---------------------------------------------------------------------------------------------
// ASN.1 outline with names

const OID_NAMES = {
  '1.2.840.113549.1.9.3': 'contentType', '1.2.840.113549.1.9.4': 'messageDigest', '1.2.840.113549.1.9.5': 'signingTime',
  '1.2.840.113549.1.9.6': 'counterSignature', '1.2.840.113549.1.9.16.2.14': 'timeStampToken', '1.3.6.1.4.1.311.3.3.1': 'msRfc3161Timestamp',
  '1.3.6.1.4.1.311.2.4.1': 'spcNestedSignature', '1.3.6.1.4.1.311.2.1.12': 'spcSpOpusInfo', '1.3.6.1.4.1.311.2.1.11': 'spcStatementType',
  '1.2.840.113549.1.9.16.2.47': 'signingCertificateV2', '1.2.840.113549.1.9.16.2.12': 'signingCertificate',
};

/**
 * @typedef {{ start: number, hdrEnd: number, end: number, path: string, type: string, el: any }} Node
 */

/**
 * Every element of a DER blob as an absolute [start, end) with a field path.
 * @param {Uint8Array} bytes the whole file  @param {number} at the blob's offset
 * @returns {Node[]}
 */
export function outline(bytes, at) {
  const len = derLength(bytes, at);
  if (len < 0) return [];
  const blob = bytes.subarray(at, at + len);
  const parsed = asn1js.fromBER(blob);
  if (parsed.offset === -1) return [];
  /** @type {Node[]} */
  const out = [];
  const visit = (el, start, path, role) => {
    const hdr = el.idBlock.blockLength + el.lenBlock.blockLength;
    const size = el.valueBeforeDecodeView.byteLength;
    out.push({ start, hdrEnd: start + hdr, end: start + size, path, type: typeName(el), el });
    const kids = el.idBlock.isConstructed && Array.isArray(el.valueBlock?.value) ? el.valueBlock.value : [];
    let o = start + hdr;
    const names = childNames(el, role, kids);
    kids.forEach((k, i) => {
      const [name, childRole] = names[i] ?? [`[${i}]`, ''];
      visit(k, o, path ? `${path}.${name}` : name, childRole);
      o += k.valueBeforeDecodeView.byteLength;
    });
  };
  visit(parsed.result, at, 'ContentInfo', 'ContentInfo');
  return out;
}

function typeName(el) {
  const c = el.idBlock.tagClass;
  if (c === 3) return `[${el.idBlock.tagNumber}]`;
  if (c !== 1) return `tag(${c}/${el.idBlock.tagNumber})`;
  return el.constructor?.name ?? 'element';
}

const isCtx = (el, n) => el.idBlock.tagClass === 3 && el.idBlock.tagNumber === n;
const oidOf = (el) => (el instanceof asn1js.ObjectIdentifier ? el.valueBlock.toString() : undefined);

/** Field names for the children of an element, by the role the element plays. */
function childNames(el, role, kids) {
  switch (role) {
    case 'ContentInfo': return [['contentType', ''], ['content', 'ContentInfo.content']];
    case 'ContentInfo.content': return [['SignedData', 'SignedData']];
    case 'SignedData': {
      const names = [['version', ''], ['digestAlgorithms', 'AlgSet'], ['encapContentInfo', 'Encap']];
      for (let i = 3; i < kids.length; i++) {
        if (isCtx(kids[i], 0)) names.push(['certificates', 'CertSet']);
        else if (isCtx(kids[i], 1)) names.push(['crls', '']);
        else names.push(['signerInfos', 'SignerInfos']);
      }
      return names;
    }
    case 'AlgSet': return kids.map((_, i) => [`[${i}]`, 'AlgId']);
    case 'AlgId': return [['algorithm', ''], ['parameters', '']];
    case 'Encap': return [['eContentType', ''], ['eContent', 'EContent']];
    case 'EContent': return [['SpcIndirectDataContent', 'Spc']];
    case 'Spc': return [['data', ''], ['messageDigest', 'DigestInfo']];
    case 'DigestInfo': return [['digestAlgorithm', 'AlgId'], ['digest', '']];
    case 'CertSet': return kids.map((k, i) => [`[${i}]`, k.idBlock.tagClass === 1 && k.idBlock.tagNumber === 16 ? 'Certificate' : '']);
    case 'Certificate': return [['tbsCertificate', 'TBS'], ['signatureAlgorithm', 'AlgId'], ['signatureValue', '']];
    case 'TBS': {
      const order = ['serialNumber', 'signature', 'issuer', 'validity', 'subject', 'subjectPublicKeyInfo'];
      let j = 0;
      return kids.map((k) => {
        if (isCtx(k, 0)) return ['version', ''];
        if (isCtx(k, 3)) return ['extensions', 'Extensions'];
        if (isCtx(k, 1)) return ['issuerUniqueID', ''];
        if (isCtx(k, 2)) return ['subjectUniqueID', ''];
        const n = order[j++] ?? `[${j}]`;
        return [n, n === 'signature' ? 'AlgId' : n === 'subjectPublicKeyInfo' ? 'Spki' : ''];
      });
    }
    case 'Spki': return [['algorithm', 'AlgId'], ['subjectPublicKey', '']];
    case 'Extensions': return [['SEQUENCE', 'ExtList']];
    case 'ExtList': return kids.map((k, i) => [`[${i}](${oidOf(k.valueBlock?.value?.[0]) ?? '?'})`, '']);
    case 'SignerInfos': return kids.map((_, i) => [`[${i}]`, 'SignerInfo']);
    case 'SignerInfo': {
      let j = 0;
      const order = [['version', ''], ['sid', ''], ['digestAlgorithm', 'AlgId']];
      const after = [['signatureAlgorithm', 'AlgId'], ['signature', '']];
      let k2 = 0;
      return kids.map((k) => {
        if (isCtx(k, 0)) return ['signedAttrs', 'Attrs'];
        if (isCtx(k, 1)) return ['unsignedAttrs', 'Attrs'];
        if (j < order.length) return order[j++];
        return after[k2++] ?? ['?', ''];
      });
    }
    case 'Attrs': return kids.map((k, i) => {
      const oid = oidOf(k.valueBlock?.value?.[0]);
      return [`[${i}](${OID_NAMES[oid] ?? oid ?? '?'})`, ''];
    });
    default: return kids.map((_, i) => [`[${i}]`, '']);
  }
}

/** The deepest element containing `offset`, and which part of it (tag/length/value). */
export function locate(nodes, offset) {
  let best;
  for (const n of nodes) if (offset >= n.start && offset < n.end && (!best || n.end - n.start <= best.end - best.start)) best = n;
  if (!best) return undefined;
  const part = offset < best.start + best.el.idBlock.blockLength ? 'tag' : offset < best.hdrEnd ? 'length' : 'value';
  return { node: best, part, describe: `${best.path} (${best.type} ${part}, element at ${best.start}..${best.end})` };
}

/** The certificates in a blob's bag: absolute ranges, subject and SHA-256 of the bytes at that range. */
export function bagCertificates(nodes, bytes) {
  return nodes
    .filter((n) => /^ContentInfo\.content\.SignedData\.certificates\.\[\d+\]$/.test(n.path))
    .map((n) => ({ start: n.start, end: n.end, path: n.path, sha256: createHash('sha256').update(bytes.subarray(n.start, n.end)).digest('hex') }));
}
