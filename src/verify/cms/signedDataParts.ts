import { hash } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from '../oids.js';
import { MalformedError, parsing } from '../malformed.js';
import { CertificateInfo } from '../chain/certificateInfo.js';
import { parseStrictDer, scanDerStructure } from './strictDer.js';
import { readDerHeader } from '../derHeader.js';
import { BoundedCache } from '../boundedCache.js';

/** Certificates beyond this many in one signature are refused: real signatures carry a handful. */
export const MAX_BAG_CERTIFICATES = 100;

export interface SignerParts {
  info: pkijs.SignerInfo;
  /** DER of the signed attributes re-tagged as SET OF, the bytes the signature covers; undefined if absent. */
  signedAttrsDer: Uint8Array | undefined;
}

/**
 * A CMS SignedData split into the parts verification needs, with exact bytes where digests and
 * pins depend on them. pkijs gives the typed objects; asn1js gives the original encodings.
 */
export interface SignedDataParts {
  eContentType: string;
  /** The content octets that messageDigest covers (value of the OCTET STRING, or of Authenticode's SEQUENCE). */
  eContentValue: Uint8Array | undefined;
  /**
   * The element inside eContent [0], for content types with structure (SpcIndirectDataContent).
   * Not made for a certificate trust list, which may hold hundreds of thousands of elements: its
   * parser walks `eContentDer` itself, one entry at a time.
   */
  eContentElement: asn1js.AsnType | undefined;
  /** The DER of the element inside eContent [0] (tag and length included). */
  eContentDer?: Uint8Array;
  certificates: readonly CertificateInfo[];
  digestAlgorithmOids: readonly string[];
  signers: readonly SignerParts[];
}

function isUniversal(el: asn1js.AsnType | undefined, tag: 16 | 17): boolean {
  return !!el && el.idBlock.tagClass === 1 && el.idBlock.tagNumber === tag && el.idBlock.isConstructed;
}

/** CMS fields the signature does not cover are held to their only valid form, so they carry nothing. */
function expectShape(ok: boolean, what: string): void {
  if (!ok) throw new MalformedError(`${what} is not in its valid form`);
}

/** An AlgorithmIdentifier for a digest: the OID, then NULL or nothing. */
function checkDigestAlgorithmShape(el: asn1js.AsnType | undefined, what: string): void {
  expectShape(isUniversal(el, 16), what);
  const parts = (el as asn1js.Sequence).valueBlock.value;
  expectShape(parts.length >= 1 && parts.length <= 2 && parts[0] instanceof asn1js.ObjectIdentifier && (parts.length === 1 || parts[1] instanceof asn1js.Null), what);
}

/** An INTEGER with the universal tag 2 exactly: asn1js reads ENUMERATED (tag 10) as an Integer subclass too. */
function isExactInteger(el: asn1js.AsnType | undefined): el is asn1js.Integer {
  return el instanceof asn1js.Integer && el.idBlock.tagClass === 1 && el.idBlock.tagNumber === 2 && !el.idBlock.isConstructed;
}

function isContext(el: asn1js.AsnType, tag: number): boolean {
  return el.idBlock.tagClass === 3 && el.idBlock.tagNumber === tag;
}

function children(el: asn1js.AsnType, what: string): asn1js.AsnType[] {
  const v = (el as asn1js.Constructed).valueBlock?.value;
  if (!Array.isArray(v)) throw new MalformedError(`${what} is not a constructed element`);
  return v as asn1js.AsnType[];
}

function headerLength(el: asn1js.AsnType): number {
  return el.idBlock.blockLength + el.lenBlock.blockLength;
}

/** The value octets of an element as they were encoded (definite length only). */
export function valueOctets(el: asn1js.AsnType): Uint8Array {
  if (el.lenBlock.isIndefiniteForm) throw new MalformedError('indefinite length where DER is required');
  if (el instanceof asn1js.OctetString && !el.idBlock.isConstructed) return el.valueBlock.valueHexView;
  return el.valueBeforeDecodeView.subarray(headerLength(el));
}

/** Parses DER that must be exactly one element (no trailing bytes). */
export function parseSingleDer(bytes: Uint8Array, what: string): asn1js.AsnType {
  return parseStrictDer(bytes, what);
}

/** One TLV of bytes already checked by scanDer (definite, minimal, nested exactly): offsets only. */
export interface RawTlv { tag: number; start: number; valueStart: number; end: number }

export function rawTlv(bytes: Uint8Array, at: number, limit: number): RawTlv {
  const h = readDerHeader(bytes, at);
  if (!h.ok) throw new MalformedError(`ASN.1 header unreadable (${h.problem})`);
  if (h.end > limit) throw new MalformedError('ASN.1 element overruns its container');
  return { tag: h.tag, start: at, valueStart: h.valueStart, end: h.end };
}

/** The first `max` children of a constructed element (the callers need a few; a bomb may hold millions). */
export function rawChildren(bytes: Uint8Array, el: RawTlv, what: string, max: number): RawTlv[] {
  if (!(el.tag & 0x20)) throw new MalformedError(`${what} is not a constructed element`);
  const out: RawTlv[] = [];
  for (let i = el.valueStart; i < el.end && out.length < max; i = out[out.length - 1]!.end) out.push(rawTlv(bytes, i, el.end));
  return out;
}

/** asn1js over one element's bytes (a part of a blob that parseStrictDer's scan has already checked). */
export function asn1Of(bytes: Uint8Array, el: RawTlv, what: string): asn1js.AsnType {
  // A copy of the element alone: asn1js over a view into a large buffer costs time in proportion to the buffer.
  const slice = bytes.slice(el.start, el.end);
  const parsed = asn1js.fromBER(slice, { copyInput: false });
  if (parsed.offset === -1) throw new MalformedError(`${what}: ${parsed.result.error || 'bad ASN.1'}`);
  if (parsed.offset !== slice.byteLength) throw new MalformedError(`${what}: bytes after the ASN.1 element`);
  return parsed.result;
}

/**
 * Splits a CMS SignedData. The whole blob gets the strict DER scan; then only the parts that need
 * typed objects go through asn1js, one element at a time. The certificate bag is cut into raw
 * slices and handed to CertificateInfo (parsed once per certificate and cached), so that the
 * signer's certificates, identical in every file a publisher signs, are not re-parsed per payload
 * (asn1js over the whole blob was two thirds of a verdict's cost).
 */
export function parseSignedData(der: Uint8Array, what = 'signature'): SignedDataParts {
  // A parse is a pure function of the bytes: the same signature blob (the same file fetched again,
  // by another client or under another URL) is parsed once. Keyed by the SHA-256 of the exact
  // bytes; only successful parses are kept, frozen so that no caller can change a shared one.
  const key = hash('sha256', der, 'base64');
  const hit = PARSE_CACHE.get(key);
  if (hit) return hit;
  const parts = parseSignedDataUncached(der, what);
  Object.freeze(parts.certificates);
  Object.freeze(parts.signers);
  Object.freeze(parts.digestAlgorithmOids);
  Object.freeze(parts);
  return PARSE_CACHE.set(key, parts);
}

/**
 * Parses are pure functions of the bytes, not of any trust: shared by every Verifier (each trust
 * channel has one), so a publisher's signature is parsed once whichever channel judges it.
 */
const PARSE_CACHE = new BoundedCache<string, SignedDataParts>(256);

function parseSignedDataUncached(der: Uint8Array, what: string): SignedDataParts {
  return parsing(what, () => {
    scanDerStructure(der, what);
    const ci = rawTlv(der, 0, der.byteLength);
    expectShape(ci.tag === 0x30, 'ContentInfo');
    const ciFields = rawChildren(der, ci, 'ContentInfo', 2);
    const typeEl = ciFields[0] ? asn1Of(der, ciFields[0], 'ContentInfo.contentType') : undefined;
    if (!(typeEl instanceof asn1js.ObjectIdentifier) || typeEl.valueBlock.toString() !== OID.signedData) {
      throw new MalformedError('ContentInfo is not SignedData');
    }
    const wrapper = ciFields[1];
    if (!wrapper || (wrapper.tag & 0xdf) !== 0x80) throw new MalformedError('ContentInfo has no content');
    const sdRaw = rawChildren(der, wrapper, 'ContentInfo content', 1)[0];
    if (!sdRaw) throw new MalformedError('empty SignedData');
    expectShape(sdRaw.tag === 0x30, 'SignedData');
    const fRaw = rawChildren(der, sdRaw, 'SignedData', 7);
    const isCtx = (t: RawTlv | undefined, n: number) => !!t && (t.tag & 0xc0) === 0x80 && (t.tag & 0x1f) === n;
    let i = 0;
    const versionRaw = fRaw[i++];
    const digestAlgsRaw = fRaw[i++];
    const encapRaw = fRaw[i++];
    let certsRaw: RawTlv | undefined;
    if (isCtx(fRaw[i], 0)) certsRaw = fRaw[i++];
    if (isCtx(fRaw[i], 1)) i++; // CRLs: not used
    const signerInfosRaw = fRaw[i++];
    const version = versionRaw ? asn1Of(der, versionRaw, 'SignedData.version') : undefined;
    if (!isExactInteger(version) || !digestAlgsRaw || !encapRaw) throw new MalformedError('SignedData fields missing');
    if (!signerInfosRaw || i !== fRaw.length) throw new MalformedError('SignedData has unexpected fields');
    const digestAlgs = asn1Of(der, digestAlgsRaw, 'SignedData.digestAlgorithms');
    const signerInfosEl = asn1Of(der, signerInfosRaw, 'SignedData.signerInfos');
    expectShape(version.valueBlock.valueHexView.length === 1, 'SignedData.version');
    expectShape(isUniversal(digestAlgs, 17), 'SignedData.digestAlgorithms');
    for (const a of children(digestAlgs, 'digestAlgorithms')) checkDigestAlgorithmShape(a, 'SignedData.digestAlgorithms');
    expectShape(encapRaw.tag === 0x30, 'EncapsulatedContentInfo');
    expectShape(isUniversal(signerInfosEl, 17), 'SignedData.signerInfos');
    if (certsRaw) expectShape((certsRaw.tag & 0x20) !== 0, 'SignedData.certificates');

    const digestAlgorithmOids = children(digestAlgs, 'digestAlgorithms').map((a) => new pkijs.AlgorithmIdentifier({ schema: a }).algorithmId);

    // Split by offsets: the content may be a large trust list, parsed by its own code entry by entry.
    const encapFields = rawChildren(der, encapRaw, 'EncapsulatedContentInfo', 3);
    if (encapFields.length > 2) throw new MalformedError('EncapsulatedContentInfo has unexpected fields');
    const eTypeEl = encapFields[0] ? asn1Of(der, encapFields[0], 'eContentType') : undefined;
    if (!(eTypeEl instanceof asn1js.ObjectIdentifier)) throw new MalformedError('eContentType missing');
    let eContentValue: Uint8Array | undefined;
    let eContentElement: asn1js.AsnType | undefined;
    let eContentDer: Uint8Array | undefined;
    const eWrap = encapFields[1];
    if (eWrap) {
      if (eWrap.tag !== 0xa0) throw new MalformedError('bad eContent tag');
      const inner = rawChildren(der, eWrap, 'eContent', 2);
      if (inner.length !== 1) throw new MalformedError('eContent must hold one element');
      const el = inner[0]!;
      // Copies: a parse is cached by the bytes' digest and must not change if the caller's buffer does.
      eContentDer = der.slice(el.start, el.end);
      eContentValue = eContentDer.subarray(el.valueStart - el.start);
      if (eTypeEl.valueBlock.toString() !== OID.certTrustList) eContentElement = asn1Of(der, el, 'eContent');
    }

    const certificates: CertificateInfo[] = [];
    if (certsRaw) {
      const list = rawChildren(der, certsRaw, 'certificates', MAX_BAG_CERTIFICATES + 1);
      if (list.length > MAX_BAG_CERTIFICATES) {
        throw new MalformedError(`${list.length} certificates in one signature (limit ${MAX_BAG_CERTIFICATES})`);
      }
      for (const c of list) {
        // Only plain X.509 certificates (universal SEQUENCE); attribute and other certificate choices are tagged and skipped.
        if (c.tag !== 0x30) continue;
        const raw = der.slice(c.start, c.end);
        certificates.push(parsing('certificate in the signature', () => CertificateInfo.fromDer(raw)));
      }
    }

    let anyV3 = false;
    const signers: SignerParts[] = children(signerInfosEl, 'signerInfos').map((siEl) => {
      expectShape(isUniversal(siEl, 16), 'SignerInfo');
      const siFields = children(siEl, 'SignerInfo');
      const siVersion = siFields[0];
      // The version follows from the signer identifier: 1 with issuerAndSerialNumber, 3 with [0] subjectKeyIdentifier.
      const sid = siFields[1];
      const v = isExactInteger(siVersion) && siVersion.valueBlock.valueHexView.length === 1 ? siVersion.valueBlock.valueDec : -1;
      expectShape((v === 1 && isUniversal(sid, 16)) || (v === 3 && !!sid && isContext(sid, 0) && !sid.idBlock.isConstructed), 'SignerInfo.version');
      if (v === 3) anyV3 = true;
      checkDigestAlgorithmShape(siFields[2], 'SignerInfo.digestAlgorithm');
      const sigAlg = siFields.find((x, k) => k > 2 && isUniversal(x, 16));
      const sigAlgParts = sigAlg ? (sigAlg as asn1js.Sequence).valueBlock.value : [];
      // Signature algorithms carry NULL (RSA) or nothing (ECDSA); RSA-PSS parameters are a SEQUENCE.
      expectShape(sigAlgParts[0] instanceof asn1js.ObjectIdentifier && (sigAlgParts.length === 1 || sigAlgParts[1] instanceof asn1js.Null || isUniversal(sigAlgParts[1], 16)), 'SignerInfo.signatureAlgorithm');
      const info = new pkijs.SignerInfo({ schema: siEl });
      let signedAttrsDer: Uint8Array | undefined;
      for (const part of children(siEl, 'SignerInfo')) {
        if (isContext(part, 0) && part.idBlock.isConstructed) {
          if (part.lenBlock.isIndefiniteForm) throw new MalformedError('signed attributes use indefinite length');
          signedAttrsDer = new Uint8Array(part.valueBeforeDecodeView);
          signedAttrsDer[0] = 0x31; // [0] IMPLICIT -> SET OF: what the signature covers (RFC 5652 5.4)
        }
      }
      return { info, signedAttrsDer };
    });

    // The SignedData version is not free either. Authenticode (SpcIndirectDataContent) and CTLs keep
    // PKCS#7's 1, with issuerAndSerialNumber signers; otherwise RFC 5652 5.1: 3 when a signer is
    // identified by key identifier or the content is not id-data (timestamp tokens), else 1.
    // Attribute and other certificate or CRL formats (4, 5) are not used here.
    const eContentType = eTypeEl.valueBlock.toString();
    // Microsoft's certificate trust lists and catalogs are PKCS#7 objects too: version 1, like Authenticode.
    const pkcs7Style = eContentType === OID.spcIndirectData || eContentType === OID.certTrustList;
    const expected = pkcs7Style ? (anyV3 ? -1 : 1) : anyV3 || eContentType !== OID.data ? 3 : 1;
    expectShape(version.valueBlock.valueDec === expected, 'SignedData.version');
    return { eContentType, eContentValue, eContentElement, eContentDer, certificates, digestAlgorithmOids, signers };
  });
}

/** All values of one attribute type, or [] if absent. */
export function attributeValues(attrs: pkijs.SignedAndUnsignedAttributes | undefined, oid: string): asn1js.AsnType[] {
  if (!attrs) return [];
  const out: asn1js.AsnType[] = [];
  for (const a of attrs.attributes) if (a.type === oid) out.push(...(a.values as asn1js.AsnType[]));
  return out;
}

/** Exactly one attribute of this type with exactly one value, else MalformedError. */
export function singleAttribute(attrs: pkijs.SignedAndUnsignedAttributes | undefined, oid: string, name: string): asn1js.AsnType | undefined {
  if (!attrs) return undefined;
  const matches = attrs.attributes.filter((a) => a.type === oid);
  if (matches.length === 0) return undefined;
  if (matches.length > 1 || matches[0]!.values.length !== 1) throw new MalformedError(`${name} attribute must appear once with one value`);
  return matches[0]!.values[0] as asn1js.AsnType;
}

/**
 * Lookups kept per (SignerInfo, bag) object pair: both come from one cached, frozen parse (the same
 * signature bytes), so the answer cannot differ; another parse is other objects, looked up afresh.
 */
const SIGNER_LOOKUPS = new WeakMap<pkijs.SignerInfo, WeakMap<readonly CertificateInfo[], CertificateInfo | null>>();

/** The certificate in the bag that the SignerInfo names (issuer and serial, or subject key identifier). */
export function findSignerCertificate(info: pkijs.SignerInfo, bag: readonly CertificateInfo[]): CertificateInfo | undefined {
  // Only a parse's own (frozen) bag: a caller's array could change after the answer was kept.
  if (!Object.isFrozen(bag)) return lookUpSignerCertificate(info, bag);
  let byBag = SIGNER_LOOKUPS.get(info);
  const hit = byBag?.get(bag);
  if (hit !== undefined) return hit ?? undefined;
  const found = lookUpSignerCertificate(info, bag);
  if (!byBag) SIGNER_LOOKUPS.set(info, (byBag = new WeakMap()));
  byBag.set(bag, found ?? null);
  return found;
}

function lookUpSignerCertificate(info: pkijs.SignerInfo, bag: readonly CertificateInfo[]): CertificateInfo | undefined {
  const sid = info.sid as unknown;
  if (sid instanceof pkijs.IssuerAndSerialNumber) {
    const issuer = Buffer.from(sid.issuer.valueBeforeDecode);
    const serial = Buffer.from(sid.serialNumber.valueBlock.valueHexView).toString('hex');
    return bag.find((c) => Buffer.from(c.issuerDer).equals(issuer) && c.serialHex === serial);
  }
  const el = sid as asn1js.AsnType | undefined;
  if (el && el.idBlock?.tagClass === 3 && el.idBlock.tagNumber === 0) {
    const hex = Buffer.from((el as asn1js.Primitive).valueBlock.valueHexView).toString('hex');
    return bag.find((c) => c.subjectKeyIdentifier === hex);
  }
  return undefined;
}
