import * as asn1js from 'asn1js';
import { MalformedError } from '../malformed.js';

/**
 * SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue, messageDigest DigestInfo }
 * The Authenticode content: which kind of file was hashed, and the file digest the signer signed.
 */
export interface SpcIndirectDataContent {
  dataType: string;
  digestAlgorithmOid: string;
  digest: Uint8Array;
}

export function parseSpcIndirectDataContent(el: asn1js.AsnType | undefined): SpcIndirectDataContent {
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
  return { dataType: type.valueBlock.toString(), digestAlgorithmOid: algOid.valueBlock.toString(), digest: digest.valueBlock.valueHexView };
}
