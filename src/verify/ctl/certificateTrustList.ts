import * as asn1js from 'asn1js';
import { OID } from '../oids.js';
import { MalformedError } from '../malformed.js';
import { parseSpcIndirectDataContent, type SpcIndirectDataContent } from '../cms/spcIndirectDataContent.js';

/** Entries beyond this many are refused: authroot.stl holds ~500, disallowedcert.stl ~100, big catalogs some thousands. */
export const MAX_TRUST_LIST_ENTRIES = 200_000;

/** One TrustedSubject: its identifier (a certificate thumbprint, or a catalog member's tag) and, for catalogs, its file digests. */
export interface TrustedSubject {
  identifier: Uint8Array;
  /** SpcIndirectDataContent attributes (catalog members): what the member file's Authenticode digest is. */
  indirectData: SpcIndirectDataContent[];
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

/** Parses the CTL content element (the SEQUENCE inside eContent [0]). */
export function parseCertificateTrustList(el: asn1js.AsnType | undefined): CertificateTrustList {
  const fields = seq(el, 'CertificateTrustList');
  let i = 0;
  if (fields[i] instanceof asn1js.Integer) {
    if ((fields[i] as asn1js.Integer).valueBlock.valueDec !== 0) throw new MalformedError('CertificateTrustList version is not v1 (0)');
    i++;
  }
  const subjectUsage = seq(fields[i++], 'CTL subjectUsage').map((u) => oidOf(u, 'CTL subjectUsage entry'));
  let listIdentifier: Uint8Array | undefined;
  if (fields[i] instanceof asn1js.OctetString) listIdentifier = (fields[i++] as asn1js.OctetString).valueBlock.valueHexView;
  let sequenceNumber: string | undefined;
  if (fields[i] instanceof asn1js.Integer) sequenceNumber = Buffer.from((fields[i++] as asn1js.Integer).valueBlock.valueHexView).toString('hex');
  const thisEl = fields[i++];
  if (!isTime(thisEl)) throw new MalformedError('CTL ctlThisUpdate missing');
  const thisUpdate = thisEl.toDate();
  let nextUpdate: Date | undefined;
  if (isTime(fields[i])) nextUpdate = (fields[i++] as asn1js.UTCTime).toDate();
  const subjectAlgorithmOid = oidOf(seq(fields[i++], 'CTL subjectAlgorithm')[0], 'CTL subjectAlgorithm');
  const subjects: TrustedSubject[] = [];
  if (fields[i] instanceof asn1js.Sequence) {
    const list = (fields[i++] as asn1js.Sequence).valueBlock.value;
    if (list.length > MAX_TRUST_LIST_ENTRIES) throw new MalformedError(`${list.length} entries in one trust list (limit ${MAX_TRUST_LIST_ENTRIES})`);
    for (const s of list) subjects.push(parseTrustedSubject(s));
  }
  const ext = fields[i];
  if (ext && ext.idBlock.tagClass === 3 && ext.idBlock.tagNumber === 0) i++;
  if (i !== fields.length) throw new MalformedError('CertificateTrustList has unexpected fields');
  if (!subjectUsage.length) throw new MalformedError('CTL subjectUsage is empty');
  return {
    subjectUsage, isCatalog: subjectUsage.includes(OID.catalogList), listIdentifier, sequenceNumber,
    thisUpdate, nextUpdate, subjectAlgorithmOid, subjects,
  };
}

function parseTrustedSubject(el: asn1js.AsnType): TrustedSubject {
  const [idEl, attrs, ...rest] = seq(el, 'TrustedSubject');
  if (!(idEl instanceof asn1js.OctetString) || rest.length) throw new MalformedError('TrustedSubject malformed');
  const indirectData: SpcIndirectDataContent[] = [];
  if (attrs !== undefined) {
    if (!(attrs instanceof asn1js.Set)) throw new MalformedError('TrustedSubject attributes are not a SET');
    for (const a of attrs.valueBlock.value) {
      const [typeEl, values] = seq(a, 'TrustedSubject attribute');
      if (!(values instanceof asn1js.Set)) throw new MalformedError('TrustedSubject attribute values are not a SET');
      if (oidOf(typeEl, 'TrustedSubject attribute type') !== OID.spcIndirectData) continue;
      for (const v of values.valueBlock.value) indirectData.push(parseSpcIndirectDataContent(v));
    }
  }
  return { identifier: idEl.valueBlock.valueHexView, indirectData };
}
