import * as asn1js from 'asn1js';
import { OID } from '../oids.js';
import { MalformedError } from '../malformed.js';
import { parseSpcIndirectDataContent, type SpcIndirectDataContent } from '../cms/spcIndirectDataContent.js';
import { asn1Of, rawChildren, rawTlv, type RawTlv } from '../cms/signedDataParts.js';

/** Entries beyond this many are refused: authroot.stl holds ~500, disallowedcert.stl ~100, big catalogs some thousands. */
export const MAX_TRUST_LIST_ENTRIES = 200_000;

/**
 * One TrustedSubject: its identifier (a certificate thumbprint, or a catalog member's tag) and its
 * attributes' DER, read on demand (`memberDigests`): verifying a list never parses its entries.
 */
export interface TrustedSubject {
  identifier: Uint8Array;
  /** The DER of the SET OF attributes, if any. */
  attributesDer?: Uint8Array;
}

/**
 * The CTL content of a certificate trust list or catalog (MS-CAESO):
 *   CertificateTrustList ::= SEQUENCE { version INTEGER DEFAULT 0, subjectUsage SEQUENCE OF OID,
 *     listIdentifier OCTET STRING OPTIONAL, sequenceNumber INTEGER OPTIONAL, ctlThisUpdate Time,
 *     ctlNextUpdate Time OPTIONAL, subjectAlgorithm AlgorithmIdentifier,
 *     trustedSubjects SEQUENCE OF TrustedSubject OPTIONAL, ctlExtensions [0] EXPLICIT Extensions OPTIONAL }
 */
export interface CertificateTrustList {
  subjectUsage: string[];
  /** A catalog (subject usage 1.3.6.1.4.1.311.12.1.1) lists files, not certificates. */
  isCatalog: boolean;
  listIdentifier?: Uint8Array;
  sequenceNumber?: string;
  thisUpdate: Date;
  nextUpdate?: Date;
  subjectAlgorithmOid: string;
  subjects: TrustedSubject[];
}

const isTime = (el: asn1js.AsnType | undefined): el is asn1js.UTCTime | asn1js.GeneralizedTime =>
  el instanceof asn1js.UTCTime || el instanceof asn1js.GeneralizedTime;

function seq(el: asn1js.AsnType | undefined, what: string): asn1js.AsnType[] {
  if (!(el instanceof asn1js.Sequence)) throw new MalformedError(`${what} is not a SEQUENCE`);
  return el.valueBlock.value;
}

function oidOf(el: asn1js.AsnType | undefined, what: string): string {
  if (!(el instanceof asn1js.ObjectIdentifier)) throw new MalformedError(`${what} is not an OBJECT IDENTIFIER`);
  return el.valueBlock.toString();
}

const TAG = { integer: 0x02, octetString: 0x04, sequence: 0x30, set: 0x31, utcTime: 0x17, generalizedTime: 0x18, ctx0: 0xa0 } as const;

/**
 * Parses the CTL content (the DER of the SEQUENCE inside eContent [0], already checked as strict
 * DER). Walked by offsets: the small fields and each TrustedSubject go through asn1js one at a
 * time, so a catalog of many thousands of members costs memory for one entry, not for all.
 */
export function parseCertificateTrustList(der: Uint8Array | undefined): CertificateTrustList {
  if (!der) throw new MalformedError('the trust list has no content');
  const top = rawTlv(der, 0, der.byteLength);
  if (top.tag !== TAG.sequence || top.end !== der.byteLength) throw new MalformedError('CertificateTrustList is not one SEQUENCE');
  const fields = rawChildren(der, top, 'CertificateTrustList', 10);
  const el = (i: number, what: string) => asn1Of(der, fields[i]!, what);
  let i = 0;
  if (fields[i]?.tag === TAG.integer) {
    const v = el(i++, 'CTL version');
    if (!(v instanceof asn1js.Integer) || v.valueBlock.valueDec !== 0) throw new MalformedError('CertificateTrustList version is not v1 (0)');
  }
  if (fields[i]?.tag !== TAG.sequence) throw new MalformedError('CTL subjectUsage missing');
  const subjectUsage = seq(el(i++, 'CTL subjectUsage'), 'CTL subjectUsage').map((u) => oidOf(u, 'CTL subjectUsage entry'));
  let listIdentifier: Uint8Array | undefined;
  if (fields[i]?.tag === TAG.octetString) listIdentifier = (el(i++, 'CTL listIdentifier') as asn1js.OctetString).valueBlock.valueHexView;
  let sequenceNumber: string | undefined;
  if (fields[i]?.tag === TAG.integer) sequenceNumber = Buffer.from((el(i++, 'CTL sequenceNumber') as asn1js.Integer).valueBlock.valueHexView).toString('hex');
  const isTimeTag = (t: number | undefined) => t === TAG.utcTime || t === TAG.generalizedTime;
  if (!isTimeTag(fields[i]?.tag)) throw new MalformedError('CTL ctlThisUpdate missing');
  const thisEl = el(i++, 'CTL ctlThisUpdate');
  if (!isTime(thisEl)) throw new MalformedError('CTL ctlThisUpdate is not a time');
  const thisUpdate = thisEl.toDate();
  let nextUpdate: Date | undefined;
  if (isTimeTag(fields[i]?.tag)) nextUpdate = (el(i++, 'CTL ctlNextUpdate') as asn1js.UTCTime).toDate();
  if (fields[i]?.tag !== TAG.sequence) throw new MalformedError('CTL subjectAlgorithm missing');
  const subjectAlgorithmOid = oidOf(seq(el(i++, 'CTL subjectAlgorithm'), 'CTL subjectAlgorithm')[0], 'CTL subjectAlgorithm');
  const subjects: TrustedSubject[] = [];
  if (fields[i]?.tag === TAG.sequence) {
    const list = rawChildren(der, fields[i++]!, 'CTL trustedSubjects', MAX_TRUST_LIST_ENTRIES + 1);
    if (list.length > MAX_TRUST_LIST_ENTRIES) throw new MalformedError(`more than ${MAX_TRUST_LIST_ENTRIES} entries in one trust list`);
    for (const s of list) subjects.push(trustedSubject(der, s));
  }
  if (fields[i]?.tag === TAG.ctx0) i++; // ctlExtensions
  if (i !== fields.length) throw new MalformedError('CertificateTrustList has unexpected fields');
  if (!subjectUsage.length) throw new MalformedError('CTL subjectUsage is empty');
  return {
    subjectUsage, isCatalog: subjectUsage.includes(OID.catalogList), listIdentifier, sequenceNumber,
    thisUpdate, nextUpdate, subjectAlgorithmOid, subjects,
  };
}

/** TrustedSubject ::= SEQUENCE { subjectIdentifier OCTET STRING, subjectAttributes SET OF Attribute OPTIONAL }, by offsets. */
function trustedSubject(der: Uint8Array, el: RawTlv): TrustedSubject {
  if (el.tag !== TAG.sequence) throw new MalformedError('TrustedSubject is not a SEQUENCE');
  const [id, attrs, ...rest] = rawChildren(der, el, 'TrustedSubject', 3);
  if (!id || id.tag !== TAG.octetString || rest.length || (attrs && attrs.tag !== TAG.set)) throw new MalformedError('TrustedSubject malformed');
  return { identifier: der.subarray(id.valueStart, id.end), attributesDer: attrs ? der.subarray(attrs.start, attrs.end) : undefined };
}

// DER of the SpcIndirectDataContent OID (1.3.6.1.4.1.311.2.1.4): attributes are matched by their type's bytes.
const SPC_INDIRECT_DATA_OID_DER = Buffer.from('060a2b060104018237020104', 'hex');

/** A catalog member's file digests: the SpcIndirectDataContent values among its attributes. */
export function memberDigests(subject: TrustedSubject): SpcIndirectDataContent[] {
  const der = subject.attributesDer;
  if (!der) return [];
  const out: SpcIndirectDataContent[] = [];
  for (const attr of rawChildren(der, rawTlv(der, 0, der.byteLength), 'TrustedSubject attributes', 64)) {
    const [type, values] = rawChildren(der, attr, 'TrustedSubject attribute', 3);
    if (!type || !values || values.tag !== TAG.set) throw new MalformedError('TrustedSubject attribute malformed');
    if (!Buffer.from(der.buffer, der.byteOffset + type.start, type.end - type.start).equals(SPC_INDIRECT_DATA_OID_DER)) continue;
    for (const v of rawChildren(der, values, 'SpcIndirectDataContent values', 8)) out.push(parseSpcIndirectDataContent(asn1Of(der, v, 'SpcIndirectDataContent')));
  }
  return out;
}
