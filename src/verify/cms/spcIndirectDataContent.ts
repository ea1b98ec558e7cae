import * as asn1js from 'asn1js';
import { MalformedError } from '../malformed.js';
import { OID } from '../oids.js';

/**
 * SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue, messageDigest DigestInfo }
 * The Authenticode content: which kind of file was hashed, and the file digest the signer signed.
 */
export interface SpcIndirectDataContent {
  dataType: string;
  /** For SpcSipInfo data: the SIP GUID (16 bytes). */
  sipGuid?: Uint8Array;
  digestAlgorithmOid: string;
  digest: Uint8Array;
}

/**
 * Successful reads kept per element. The element belongs to a SignedData parse that
 * signedDataParts.ts keeps by the SHA-256 of the exact signature bytes, so the same element object
 * means the same bytes; a payload met again (another URL, another client) is not read again.
 */
const READS = new WeakMap<asn1js.AsnType, SpcIndirectDataContent>();

export function parseSpcIndirectDataContent(el: asn1js.AsnType | undefined): SpcIndirectDataContent {
  const hit = el ? READS.get(el) : undefined;
  if (hit) return hit;
  const read = Object.freeze(readSpcIndirectDataContent(el));
  READS.set(el!, read);
  return read;
}

function readSpcIndirectDataContent(el: asn1js.AsnType | undefined): SpcIndirectDataContent {
  if (!(el instanceof asn1js.Sequence)) throw new MalformedError('SpcIndirectDataContent is not a SEQUENCE');
  const [data, digestInfo] = el.valueBlock.value;
  if (!(data instanceof asn1js.Sequence) || !(digestInfo instanceof asn1js.Sequence) || el.valueBlock.value.length !== 2) {
    throw new MalformedError('SpcIndirectDataContent fields missing');
  }
  const type = data.valueBlock.value[0];
  if (!(type instanceof asn1js.ObjectIdentifier)) throw new MalformedError('SpcIndirectDataContent data type missing');
  const [alg, digest] = digestInfo.valueBlock.value;
  const algOid = alg instanceof asn1js.Sequence ? alg.valueBlock.value[0] : undefined;
  if (!(algOid instanceof asn1js.ObjectIdentifier) || !(digest instanceof asn1js.OctetString)) {
    throw new MalformedError('SpcIndirectDataContent DigestInfo malformed');
  }
  const dataType = type.valueBlock.toString();
  let sipGuid: Uint8Array | undefined;
  if (dataType === OID.spcSipInfo) {
    // SpcSipInfo ::= SEQUENCE { dwSIPversion INTEGER, gSIPguid OCTET STRING (16), dwReserved1..5 INTEGER }
    const info = data.valueBlock.value[1];
    const guid = info instanceof asn1js.Sequence ? info.valueBlock.value[1] : undefined;
    if (!(guid instanceof asn1js.OctetString) || guid.valueBlock.valueHexView.byteLength !== 16) throw new MalformedError('SpcSipInfo without a 16-byte SIP GUID');
    sipGuid = guid.valueBlock.valueHexView;
  }
  return { dataType, sipGuid, digestAlgorithmOid: algOid.valueBlock.toString(), digest: digest.valueBlock.valueHexView };
}
