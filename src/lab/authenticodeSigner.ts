/**
 * An in-process Authenticode signer (PE and CAB) built on pkijs/asn1js and node:crypto, for the lab
 * (which re-enacts the Flame attack and must sign payloads without osslsigncode), tests and
 * benchmarks. It writes what osslsigncode 2.9 writes, minus the optional SpcStatementType and the
 * program name: a CMS SignedData (version 1) over SpcIndirectDataContent, one SignerInfo
 * (version 1, issuerAndSerialNumber), rsaEncryption or ecdsa-with-SHA*.
 *
 * The file digests are computed with the verifier's own layout and range code (parsePeLayout,
 * peDigestRanges, parseCabLayout, RangeHasher): the signer signs exactly what the verifier hashes.
 * All ASN.1 is built with asn1js/pkijs; no DER is encoded by hand here.
 */
import { createHash, sign as cryptoSign, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../verify/oids.js';
import type { DigestName } from '../verify/algorithms.js';
import { RangeHasher } from '../verify/rangeHasher.js';
import { parsePeLayout, peDigestRanges, type PeLayout } from '../verify/pe/peLayout.js';
import {
  CAB_SIGNATURE,
  FLAG_NEXT_CABINET,
  FLAG_PREV_CABINET,
  FLAG_RESERVE_PRESENT,
  parseCabLayout,
  SIGNATURE_LOCATOR_MAGIC,
  SIGNED_HEADER_RESERVE,
} from '../verify/cab/cabLayout.js';
import { WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA } from '../verify/pe/winCertificate.js';

export type AuthenticodeDigest = DigestName;
export type AuthenticodeDataType = 'pe' | 'cab';

export interface AuthenticodeSignatureOptions {
  dataType: AuthenticodeDataType;
  /** The Authenticode file digest (PE image hash or CAB hash) computed with `digest`. */
  fileDigest: Uint8Array;
  /** Digest for the file digest, the SignerInfo and (for ECDSA) the signature algorithm. */
  digest: AuthenticodeDigest;
  signerCertDer: Uint8Array;
  /** RSA (PKCS#1 v1.5) or EC private key matching the signer certificate. */
  signerKey: KeyObject;
  /** Intermediates to put in the certificate bag after the signer (never needed: the root). */
  extraCertsDer?: Uint8Array[];
  /** Adds the (unauthenticated-by-anything) signingTime attribute. */
  signingTime?: Date;
}

/** What signPe/signCab need besides the file: the signature options minus what they compute. */
export type AuthenticodeSigner = Omit<AuthenticodeSignatureOptions, 'dataType' | 'fileDigest' | 'digest'> & {
  /** Default sha256. */
  digest?: AuthenticodeDigest;
};

const DIGEST_OID: Record<AuthenticodeDigest, string> = {
  md5: '1.2.840.113549.2.5',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};

const ECDSA_OID: Partial<Record<AuthenticodeDigest, string>> = {
  sha1: '1.2.840.10045.4.1',
  sha256: '1.2.840.10045.4.3.2',
  sha384: '1.2.840.10045.4.3.3',
  sha512: '1.2.840.10045.4.3.4',
};

const DIGEST_LENGTH: Record<AuthenticodeDigest, number> = { md5: 16, sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

/** Microsoft's SpcSpOpusInfo signed attribute (program name / more info; written empty here). */
export const OID_SPC_SP_OPUS_INFO = '1.3.6.1.4.1.311.2.1.12';

const asBytes = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));

/** X.690 11.6 order for SET OF: encodings compared as octet strings, the shorter padded with zeros. */
export function compareDerForSetOf(a: Uint8Array, b: Uint8Array): number {
  const n = Math.max(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x - y;
  }
  return 0;
}

function digestAlgorithm(digest: AuthenticodeDigest): pkijs.AlgorithmIdentifier {
  // osslsigncode (OpenSSL) writes the digest AlgorithmIdentifiers with NULL parameters.
  return new pkijs.AlgorithmIdentifier({ algorithmId: DIGEST_OID[digest], algorithmParams: new asn1js.Null() });
}

function signatureAlgorithm(key: KeyObject, digest: AuthenticodeDigest): pkijs.AlgorithmIdentifier {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      // As osslsigncode: rsaEncryption, the digest is the SignerInfo's digestAlgorithm.
      return new pkijs.AlgorithmIdentifier({ algorithmId: OID.rsaEncryption, algorithmParams: new asn1js.Null() });
    case 'ec': {
      const oid = ECDSA_OID[digest];
      if (!oid) throw new Error(`ECDSA has no signature algorithm identifier for ${digest}`);
      return new pkijs.AlgorithmIdentifier({ algorithmId: oid });
    }
    default:
      throw new Error(`unsupported signer key type ${key.asymmetricKeyType ?? '(none)'}: RSA or EC only`);
  }
}

/** SpcString ::= CHOICE { unicode [0] IMPLICIT BMPSTRING, ... }: the "<<<Obsolete>>>" osslsigncode writes. */
function obsoleteSpcString(): asn1js.Primitive {
  const bmp = new asn1js.BmpString({ value: '<<<Obsolete>>>' });
  return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 0 }, valueHex: bmp.valueBlock.valueHexView });
}

/** SpcLink ::= CHOICE { ..., file [2] EXPLICIT SpcString } (a tagged CHOICE is explicit). */
function obsoleteSpcLinkFile(): asn1js.Constructed {
  return new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 2 }, value: [obsoleteSpcString()] });
}

/** The `value` of SpcAttributeTypeAndOptionalValue, as osslsigncode writes it for each file type. */
export function spcDataValue(dataType: AuthenticodeDataType): { type: string; value: asn1js.AsnType } {
  if (dataType === 'cab') return { type: OID.spcCabData, value: obsoleteSpcLinkFile() };
  // SpcPeImageData ::= SEQUENCE { flags SpcPeImageFlags (BIT STRING) DEFAULT includeResources,
  //                               file [0] EXPLICIT SpcLink OPTIONAL }
  // osslsigncode writes flags as the one-bit string '1'B (03 02 07 80) and file as <<<Obsolete>>>.
  const flags = new asn1js.BitString({ unusedBits: 7, valueHex: new Uint8Array([0x80]) });
  const file = new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [obsoleteSpcLinkFile()] });
  return { type: OID.spcPeImageData, value: new asn1js.Sequence({ value: [flags, file] }) };
}

/** SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue, messageDigest DigestInfo }. */
function spcIndirectDataContent(dataType: AuthenticodeDataType, digest: AuthenticodeDigest, fileDigest: Uint8Array): asn1js.Sequence {
  const { type, value } = spcDataValue(dataType);
  const data = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: type }), value] });
  const digestInfo = new asn1js.Sequence({
    value: [digestAlgorithm(digest).toSchema(), new asn1js.OctetString({ valueHex: fileDigest })],
  });
  return new asn1js.Sequence({ value: [data, digestInfo] });
}

function certificateFromDer(der: Uint8Array, what: string): pkijs.Certificate {
  const cert = pkijs.Certificate.fromBER(new Uint8Array(der));
  // pkijs re-encodes from the parsed TBS; refuse anything that would not come out byte for byte.
  const again = asBytes(cert.toSchema().toBER());
  if (Buffer.compare(Buffer.from(again), Buffer.from(der)) !== 0) throw new Error(`${what} does not re-encode identically (not DER?)`);
  return cert;
}

function timeValue(t: Date): asn1js.AsnType {
  // RFC 5652 11.3: UTCTime for 1950..2049, GeneralizedTime otherwise.
  const y = t.getUTCFullYear();
  return y >= 1950 && y < 2050 ? new asn1js.UTCTime({ valueDate: t }) : new asn1js.GeneralizedTime({ valueDate: t });
}

/**
 * Builds a DER ContentInfo(SignedData) Authenticode signature over a file digest. messageDigest is
 * the digest of the VALUE octets of the SpcIndirectDataContent SEQUENCE (without tag and length),
 * the Authenticode rule; the signature covers the DER of the signed attributes as a SET OF.
 */
export function buildAuthenticodeSignature(opts: AuthenticodeSignatureOptions): Uint8Array {
  const { digest, signerKey } = opts;
  if (!(digest in DIGEST_OID)) throw new Error(`unknown digest ${String(digest)}`);
  if (opts.fileDigest.byteLength !== DIGEST_LENGTH[digest]) {
    throw new Error(`a ${digest} file digest is ${DIGEST_LENGTH[digest]} bytes, got ${opts.fileDigest.byteLength}`);
  }
  if (signerKey.type !== 'private') throw new Error('signerKey must be a private key');
  const sigAlg = signatureAlgorithm(signerKey, digest);

  const signerCert = certificateFromDer(opts.signerCertDer, 'signer certificate');
  const bag = [signerCert, ...(opts.extraCertsDer ?? []).map((d, i) => certificateFromDer(d, `extra certificate #${i + 1}`))];

  const content = spcIndirectDataContent(opts.dataType, digest, opts.fileDigest);
  // The value octets of a SEQUENCE are its children's encodings, concatenated.
  const contentValue = asBytes(content.valueBlock.toBER(false));
  const messageDigest = createHash(digest).update(contentValue).digest();

  const attributes = [
    new pkijs.Attribute({ type: OID.contentType, values: [new asn1js.ObjectIdentifier({ value: OID.spcIndirectData })] }),
    new pkijs.Attribute({ type: OID.messageDigest, values: [new asn1js.OctetString({ valueHex: messageDigest })] }),
    new pkijs.Attribute({ type: OID_SPC_SP_OPUS_INFO, values: [new asn1js.Sequence({ value: [] })] }),
  ];
  if (opts.signingTime) attributes.push(new pkijs.Attribute({ type: OID.signingTime, values: [timeValue(opts.signingTime)] }));
  // DER SET OF: sort by encoding. The same order goes into [0] IMPLICIT and into what is signed.
  const sorted = attributes
    .map((a) => ({ a, der: asBytes(a.toSchema().toBER()) }))
    .sort((x, y) => compareDerForSetOf(x.der, y.der))
    .map((x) => x.a);
  const toBeSigned = asBytes(new asn1js.Set({ value: sorted.map((a) => a.toSchema()) }).toBER());
  const signature = cryptoSign(digest, toBeSigned, signerKey); // ECDSA: DER Ecdsa-Sig-Value, as CMS wants

  const signerInfo = new pkijs.SignerInfo({
    version: 1,
    sid: new pkijs.IssuerAndSerialNumber({ issuer: signerCert.issuer, serialNumber: signerCert.serialNumber }),
    digestAlgorithm: digestAlgorithm(digest),
    signedAttrs: new pkijs.SignedAndUnsignedAttributes({ type: 0, attributes: sorted }),
    signatureAlgorithm: sigAlg,
    signature: new asn1js.OctetString({ valueHex: signature }),
  });
  const signedData = new pkijs.SignedData({
    version: 1,
    digestAlgorithms: [digestAlgorithm(digest)],
    encapContentInfo: new pkijs.EncapsulatedContentInfo({
      eContentType: OID.spcIndirectData,
      // pkijs types eContent as an OCTET STRING; Authenticode puts the SEQUENCE itself there.
      eContent: content as unknown as asn1js.OctetString,
    }),
    certificates: bag,
    signerInfos: [signerInfo],
  });
  const sdSchema = signedData.toSchema();
  // pkijs forces version 3 for a non-id-data eContentType; Authenticode (and osslsigncode) use 1.
  sdSchema.valueBlock.value[0] = new asn1js.Integer({ value: 1 });
  const contentInfo = new pkijs.ContentInfo({ contentType: pkijs.ContentInfo.SIGNED_DATA, content: sdSchema });
  return asBytes(contentInfo.toSchema().toBER());
}

// ---------------------------------------------------------------------------------------- PE

const align8 = (n: number) => (n + 7) & ~7;

function peLayoutOf(pe: Uint8Array): PeLayout {
  const r = parsePeLayout(pe, pe.byteLength);
  if (r.kind === 'need') throw new Error(`PE headers need ${r.bytes} bytes, the file has ${pe.byteLength}`);
  return r.layout;
}

/** 16-bit little-endian word sum of `b` (even length and even start assumed by callers), not folded. */
export function peWordSum(b: Uint8Array): number {
  let sum = 0;
  const words = b.byteLength >>> 1;
  if (b.byteOffset % 4 === 0 && b.byteLength >= 4) {
    const w32 = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
    for (let i = 0; i < w32.length; i++) {
      const w = w32[i]!;
      sum += (w & 0xffff) + (w >>> 16);
    }
    if (words & 1) sum += b[b.byteLength - 2]! | (b[b.byteLength - 1]! << 8);
  } else {
    for (let i = 0; i < words; i++) sum += b[2 * i]! | (b[2 * i + 1]! << 8);
  }
  if (b.byteLength & 1) sum += b[b.byteLength - 1]!;
  return sum;
}

/** Folds a word sum (end-around carry) and adds the file length: the PE CheckSum. */
export function peChecksumFromWordSum(sum: number, fileLength: number): number {
  let s = sum;
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return (s + fileLength) >>> 0;
}

/** The standard PE image checksum of `pe`, with its CheckSum field counted as zero. */
export function peChecksum(pe: Uint8Array, checksumOffset: number): number {
  const field = peWordSum(pe.subarray(checksumOffset, checksumOffset + 4));
  return peChecksumFromWordSum(peWordSum(pe) - field, pe.byteLength);
}

/**
 * The Authenticode digest of an unsigned PE as it will be once signed: the file padded with zeros
 * to a multiple of 8 (osslsigncode pads before appending the table; the padding IS hashed), with
 * CheckSum and the Certificate Table entry excluded (so they may be set after hashing).
 */
export function authenticodePeDigestOfUnsigned(unsignedPe: Uint8Array, digest: AuthenticodeDigest): Uint8Array {
  const layout = peLayoutOf(unsignedPe);
  if (layout.certTableSize !== 0) throw new Error('the PE is already signed (its Certificate Table entry is set)');
  if (layout.certDirOffset === undefined) throw new Error('the PE has no Certificate Table data directory entry');
  const paddedLength = align8(unsignedPe.byteLength);
  const h = new RangeHasher(peDigestRanges(layout, paddedLength), [digest]);
  h.update(unsignedPe, 0);
  h.update(new Uint8Array(paddedLength - unsignedPe.byteLength), unsignedPe.byteLength);
  return h.digests().get(digest)!;
}

/** WIN_CERTIFICATE { dwLength, wRevision 0x0200, wCertificateType 2 } + PKCS#7 padded with zeros to 8. */
export function winCertificate(pkcs7: Uint8Array): Uint8Array {
  const padded = align8(pkcs7.byteLength);
  const out = new Uint8Array(8 + padded);
  const view = new DataView(out.buffer);
  view.setUint32(0, 8 + padded, true); // osslsigncode: the padded length, header included
  view.setUint16(4, WIN_CERT_REVISION_2_0, true);
  view.setUint16(6, WIN_CERT_TYPE_PKCS_SIGNED_DATA, true);
  out.set(pkcs7, 8);
  return out;
}

/**
 * Appends a signature to an unsigned PE (small files, in memory): pads the file with zeros to a
 * multiple of 8, appends one WIN_CERTIFICATE, sets the Certificate Table entry (file offset, size)
 * and recomputes the PE CheckSum, as osslsigncode does.
 */
export function embedPeSignature(unsignedPe: Uint8Array, pkcs7: Uint8Array): Uint8Array {
  const layout = peLayoutOf(unsignedPe);
  if (layout.certTableSize !== 0) throw new Error('the PE is already signed (its Certificate Table entry is set)');
  if (layout.certDirOffset === undefined) throw new Error('the PE has no Certificate Table data directory entry');
  const tableOffset = align8(unsignedPe.byteLength);
  const table = winCertificate(pkcs7);
  if (tableOffset + table.byteLength > 0xffffffff) throw new Error('a signed PE must stay below 4 GiB');
  const out = new Uint8Array(tableOffset + table.byteLength);
  out.set(unsignedPe, 0);
  out.set(table, tableOffset);
  const view = new DataView(out.buffer);
  view.setUint32(layout.certDirOffset, tableOffset, true);
  view.setUint32(layout.certDirOffset + 4, table.byteLength, true);
  view.setUint32(layout.checksumOffset, 0, true);
  view.setUint32(layout.checksumOffset, peChecksum(out, layout.checksumOffset), true);
  return out;
}

/** Signs an unsigned PE (PE32 or PE32+) in memory and returns the signed file. */
export function signPe(unsignedPe: Uint8Array, signer: AuthenticodeSigner): Uint8Array {
  const digest = signer.digest ?? 'sha256';
  const fileDigest = authenticodePeDigestOfUnsigned(unsignedPe, digest);
  const pkcs7 = buildAuthenticodeSignature({ ...signer, digest, dataType: 'pe', fileDigest });
  return embedPeSignature(unsignedPe, pkcs7);
}

// --------------------------------------------------------------------------------------- CAB

/** cbCFHeader (u16) + cbCFFolder (u8) + cbCFData (u8) + the 20-byte signature reserve. */
const CAB_SIGNED_RESERVE = 4 + SIGNED_HEADER_RESERVE;

/**
 * Inserts the 20-byte signature reserve osslsigncode uses into an unsigned, single-cabinet CAB
 * (flags 0x0004, folder and file offsets shifted) and points it at `signatureSize` bytes appended
 * right after the cabinet. Returns the cabinet part (without the signature).
 */
function cabWithReserve(unsignedCab: Uint8Array, signatureSize: number): Uint8Array {
  if (unsignedCab.byteLength < 36) throw new Error('not a cabinet: shorter than CFHEADER');
  const src = new DataView(unsignedCab.buffer, unsignedCab.byteOffset, unsignedCab.byteLength);
  if (src.getUint32(0, true) !== CAB_SIGNATURE) throw new Error('not a cabinet: no MSCF signature');
  const flags = src.getUint16(30, true);
  if (flags & FLAG_RESERVE_PRESENT) throw new Error('the cabinet already has a reserve area (signed?): not supported');
  if (flags & (FLAG_PREV_CABINET | FLAG_NEXT_CABINET)) throw new Error('multi-cabinet sets (prev/next cabinet) are not supported');
  const cFolders = src.getUint16(26, true);
  const coffFiles = src.getUint32(16, true);
  if (src.getUint32(8, true) !== unsignedCab.byteLength) throw new Error('cbCabinet does not match the file size');
  if (36 + 8 * cFolders !== coffFiles) throw new Error('unexpected CFFOLDER table layout');

  const out = new Uint8Array(unsignedCab.byteLength + CAB_SIGNED_RESERVE);
  out.set(unsignedCab.subarray(0, 36), 0);
  out.set(unsignedCab.subarray(36), 36 + CAB_SIGNED_RESERVE);
  const v = new DataView(out.buffer);
  v.setUint32(8, out.byteLength, true); // cbCabinet: the cabinet without its signature
  v.setUint32(16, coffFiles + CAB_SIGNED_RESERVE, true);
  v.setUint16(30, flags | FLAG_RESERVE_PRESENT, true);
  v.setUint16(36, SIGNED_HEADER_RESERVE, true); // cbCFHeader
  out[38] = 0; // cbCFFolder
  out[39] = 0; // cbCFData
  v.setUint32(40, SIGNATURE_LOCATOR_MAGIC, true);
  v.setUint32(44, out.byteLength, true); // signature offset
  v.setUint32(48, signatureSize, true);
  for (let i = 0; i < cFolders; i++) {
    const at = 60 + 8 * i; // coffCabStart of each CFFOLDER
    v.setUint32(at, v.getUint32(at, true) + CAB_SIGNED_RESERVE, true);
  }
  return out;
}

/** Signs an unsigned CAB (no reserve, single cabinet) in memory, as osslsigncode does. */
export function signCab(unsignedCab: Uint8Array, signer: AuthenticodeSigner): Uint8Array {
  const digest = signer.digest ?? 'sha256';
  // Hash with a placeholder size: the signature locator (offset 44..52) is not covered.
  const cab = cabWithReserve(unsignedCab, 1);
  const r = parseCabLayout(cab, cab.byteLength);
  if (r.kind !== 'layout' || !r.layout.signed) throw new Error('internal: the reserved cabinet does not parse as signed');
  const h = new RangeHasher(r.layout.ranges, [digest]);
  h.update(cab, 0);
  const fileDigest = h.digests().get(digest)!;
  const pkcs7 = buildAuthenticodeSignature({ ...signer, digest, dataType: 'cab', fileDigest });
  const padded = align8(pkcs7.byteLength);
  const out = new Uint8Array(cab.byteLength + padded);
  out.set(cab, 0);
  out.set(pkcs7, cab.byteLength);
  new DataView(out.buffer).setUint32(48, padded, true);
  return out;
}
