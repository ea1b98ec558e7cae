/**
 * Makes lab certificate trust lists (.stl) and catalogs (.cat) the way Microsoft's are shaped
 * (MS-CAESO: a PKCS#7 SignedData, version 1, whose eContent [0] holds the CTL SEQUENCE itself),
 * and the single-file cabinet ctldl.windowsupdate.com wraps an .stl in. For tests and the lab:
 * all ASN.1 is built with asn1js/pkijs; the signature is node:crypto over the DER signed attributes.
 */
import { createHash, sign as cryptoSign, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../verify/oids.js';
import type { DigestName } from '../verify/algorithms.js';
import { CAB_SIGNATURE } from '../verify/cab/cabLayout.js';
import { COMPRESS_NONE } from '../verify/ctl/cabinetFile.js';
import { compareDerForSetOf, spcDataValue } from './authenticodeSigner.js';

const DIGEST_OID: Record<Exclude<DigestName, 'md5'>, string> = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};

const asBytes = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));
const algorithm = (d: Exclude<DigestName, 'md5'>) => new pkijs.AlgorithmIdentifier({ algorithmId: DIGEST_OID[d], algorithmParams: new asn1js.Null() });

export interface TrustListEntry {
  /** Certificate thumbprint (CTL) or member tag (catalog). */
  identifier: Uint8Array;
  /** For a catalog member: the member file's Authenticode digest, as SpcIndirectDataContent. */
  member?: { digest: DigestName; value: Uint8Array; dataType?: 'pe' | 'flat' };
}

export interface TrustListOptions {
  /** Subject usage OIDs: 1.3.6.1.4.1.311.10.3.9 for a root list, 1.3.6.1.4.1.311.12.1.1 for a catalog. */
  usage: string[];
  entries: TrustListEntry[];
  thisUpdate: Date;
  nextUpdate?: Date;
  sequenceNumber?: number;
  /** Subject algorithm: sha1 thumbprints for CTLs; catalogs use the catalog-list-member OID. */
  subjectAlgorithm?: string;
  signerCertDer: Uint8Array;
  signerKey: KeyObject;
  extraCertsDer?: Uint8Array[];
  digest?: Exclude<DigestName, 'md5'>;
}

function spcIndirectData(m: NonNullable<TrustListEntry['member']>): asn1js.Sequence {
  // As Microsoft's catalogs: SpcPeImageData for a PE member, the cabinet type (with an obsolete link) for other files.
  const { type, value } = spcDataValue(m.dataType === 'pe' ? 'pe' : 'cab');
  const data = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: type }), value] });
  const digestInfo = new asn1js.Sequence({ value: [algorithm(m.digest as Exclude<DigestName, 'md5'>).toSchema(), new asn1js.OctetString({ valueHex: m.value })] });
  return new asn1js.Sequence({ value: [data, digestInfo] });
}

/** The CTL SEQUENCE. */
export function buildTrustListContent(o: Pick<TrustListOptions, 'usage' | 'entries' | 'thisUpdate' | 'nextUpdate' | 'sequenceNumber' | 'subjectAlgorithm'>): asn1js.Sequence {
  const isCatalog = o.usage.includes(OID.catalogList);
  const fields: asn1js.AsnType[] = [new asn1js.Sequence({ value: o.usage.map((u) => new asn1js.ObjectIdentifier({ value: u })) })];
  fields.push(new asn1js.OctetString({ valueHex: createHash('sha1').update(o.usage.join()).digest().subarray(0, 16) }));
  if (o.sequenceNumber !== undefined) fields.push(new asn1js.Integer({ value: o.sequenceNumber }));
  fields.push(new asn1js.UTCTime({ valueDate: o.thisUpdate }));
  if (o.nextUpdate) fields.push(new asn1js.UTCTime({ valueDate: o.nextUpdate }));
  const subjectAlgorithm = o.subjectAlgorithm ?? (isCatalog ? OID.catalogListMember : DIGEST_OID.sha1);
  fields.push(new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: subjectAlgorithm }), new asn1js.Null()] }));
  const subjects = o.entries.map((e) => {
    const value: asn1js.AsnType[] = [new asn1js.OctetString({ valueHex: e.identifier })];
    if (e.member) {
      const attr = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.spcIndirectData }), new asn1js.Set({ value: [spcIndirectData(e.member)] })] });
      value.push(new asn1js.Set({ value: [attr] }));
    }
    return new asn1js.Sequence({ value });
  });
  if (subjects.length) fields.push(new asn1js.Sequence({ value: subjects }));
  return new asn1js.Sequence({ value: fields });
}

/** A signed CTL or catalog: ContentInfo(SignedData v1) over the CTL, one signer (issuerAndSerialNumber). */
export function signTrustList(o: TrustListOptions): Uint8Array {
  const digest = o.digest ?? 'sha256';
  const signerCert = pkijs.Certificate.fromBER(new Uint8Array(o.signerCertDer));
  const bag = [signerCert, ...(o.extraCertsDer ?? []).map((d) => pkijs.Certificate.fromBER(new Uint8Array(d)))];
  const content = buildTrustListContent(o);
  const messageDigest = createHash(digest).update(asBytes(content.valueBlock.toBER(false))).digest();
  const attributes = [
    new pkijs.Attribute({ type: OID.contentType, values: [new asn1js.ObjectIdentifier({ value: OID.certTrustList })] }),
    new pkijs.Attribute({ type: OID.messageDigest, values: [new asn1js.OctetString({ valueHex: messageDigest })] }),
  ]
    .map((a) => ({ a, der: asBytes(a.toSchema().toBER()) }))
    .sort((x, y) => compareDerForSetOf(x.der, y.der))
    .map((x) => x.a);
  const toBeSigned = asBytes(new asn1js.Set({ value: attributes.map((a) => a.toSchema()) }).toBER());
  const signature = cryptoSign(digest, toBeSigned, o.signerKey);
  if (o.signerKey.asymmetricKeyType !== 'rsa') throw new Error('lab trust lists are signed with RSA keys');
  const signerInfo = new pkijs.SignerInfo({
    version: 1,
    sid: new pkijs.IssuerAndSerialNumber({ issuer: signerCert.issuer, serialNumber: signerCert.serialNumber }),
    digestAlgorithm: algorithm(digest),
    signedAttrs: new pkijs.SignedAndUnsignedAttributes({ type: 0, attributes }),
    signatureAlgorithm: new pkijs.AlgorithmIdentifier({ algorithmId: OID.rsaEncryption, algorithmParams: new asn1js.Null() }),
    signature: new asn1js.OctetString({ valueHex: signature }),
  });
  const signedData = new pkijs.SignedData({
    version: 1,
    digestAlgorithms: [algorithm(digest)],
    encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: OID.certTrustList, eContent: content as unknown as asn1js.OctetString }),
    certificates: bag,
    signerInfos: [signerInfo],
  });
  const sd = signedData.toSchema();
  sd.valueBlock.value[0] = new asn1js.Integer({ value: 1 }); // PKCS#7 v1, as Microsoft writes CTLs
  return asBytes(new pkijs.ContentInfo({ contentType: pkijs.ContentInfo.SIGNED_DATA, content: sd }).toSchema().toBER());
}

/** CFDATA / header checksum of MS-CAB. */
function cabChecksum(data: Uint8Array, seed = 0): number {
  let csum = seed >>> 0;
  const n4 = data.length >>> 2;
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < n4; i++) csum = (csum ^ view.readUInt32LE(i * 4)) >>> 0;
  let ul = 0;
  let p = n4 * 4;
  switch (data.length & 3) {
    case 3: ul |= data[p++]! << 16; // fall through
    case 2: ul |= data[p++]! << 8; // fall through
    case 1: ul |= data[p]!;
  }
  return (csum ^ ul) >>> 0;
}

/** An unsigned, stored (uncompressed) single-file cabinet, as authrootstl.cab wraps authroot.stl. */
export function singleFileCabinet(name: string, data: Uint8Array): Buffer {
  const BLOCK = 32768;
  const nameBytes = Buffer.from(`${name}\0`, 'latin1');
  const blocks: Uint8Array[] = [];
  for (let i = 0; i < data.byteLength; i += BLOCK) blocks.push(data.subarray(i, i + BLOCK));
  if (!blocks.length) blocks.push(new Uint8Array(0));
  const coffFiles = 36 + 8;
  const coffCabStart = coffFiles + 16 + nameBytes.length;
  const total = coffCabStart + blocks.reduce((n, b) => n + 8 + b.byteLength, 0);
  const buf = Buffer.alloc(total);
  buf.writeUInt32LE(CAB_SIGNATURE, 0);
  buf.writeUInt32LE(total, 8);
  buf.writeUInt32LE(coffFiles, 16);
  buf[24] = 3;
  buf[25] = 1;
  buf.writeUInt16LE(1, 26); // one folder
  buf.writeUInt16LE(1, 28); // one file
  buf.writeUInt32LE(coffCabStart, 36);
  buf.writeUInt16LE(blocks.length, 40);
  buf.writeUInt16LE(COMPRESS_NONE, 42); // stored
  buf.writeUInt32LE(data.byteLength, coffFiles);
  buf.writeUInt16LE(((2026 - 1980) << 9) | (1 << 5) | 1, coffFiles + 10);
  buf.writeUInt16LE(0x20, coffFiles + 14);
  nameBytes.copy(buf, coffFiles + 16);
  let p = coffCabStart;
  for (const b of blocks) {
    const hdr = Buffer.alloc(4);
    hdr.writeUInt16LE(b.byteLength, 0);
    hdr.writeUInt16LE(b.byteLength, 2);
    buf.writeUInt16LE(b.byteLength, p + 4);
    buf.writeUInt16LE(b.byteLength, p + 6);
    Buffer.from(b).copy(buf, p + 8);
    buf.writeUInt32LE(cabChecksum(hdr, cabChecksum(b, 0)), p);
    p += 8 + b.byteLength;
  }
  return buf;
}
