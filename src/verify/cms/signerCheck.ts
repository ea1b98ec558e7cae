import { hash } from 'node:crypto';
import * as asn1js from 'asn1js';
import { OID } from '../oids.js';
import { digestFromOid, type DigestName } from '../algorithms.js';
import type { ApprovedCaPolicy } from '../approvedCaPolicy.js';
import type { Verifier } from '../verifier.js';
import { reason, type VerdictReason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import type { CertificateInfo } from '../chain/certificateInfo.js';
import { findSignerCertificate, singleAttribute, type SignedDataParts, type SignerParts } from './signedDataParts.js';

export interface SignerCheckResult {
  signer: CertificateInfo | undefined;
  digest: DigestName | undefined;
  reasons: VerdictReason[];
  /** The signingTime attribute, if any (informational: never trusted as proof of time). */
  signingTime?: Date;
}

/** Policy on one digest algorithm; pushes WEAK/UNSUPPORTED reasons. */
export function judgeDigest(oid: string, policy: Pick<ApprovedCaPolicy, 'allowSha1'>, what: string, out: VerdictReason[], prefix = ''): DigestName | undefined {
  const d = digestFromOid(oid);
  if (!d) {
    out.push(reason('UNSUPPORTED_ALGORITHM', `${prefix}${what} uses unknown digest ${oid}`));
    return undefined;
  }
  judgeDigestName(d, policy, what, out, prefix);
  return d;
}

export function judgeDigestName(d: DigestName, policy: Pick<ApprovedCaPolicy, 'allowSha1'>, what: string, out: VerdictReason[], prefix = ''): void {
  if (d === 'md5') out.push(reason('WEAK_ALGORITHM', `${prefix}${what} uses MD5`));
  if (d === 'sha1' && !policy.allowSha1) out.push(reason('WEAK_ALGORITHM', `${prefix}${what} uses SHA-1, which the rules do not allow`));
}

/**
 * Checks one SignerInfo: its algorithms, its signed attributes (contentType and messageDigest over
 * the content), and its signature over those attributes with the signer certificate's key.
 */
export function checkSigner(
  parts: SignedDataParts,
  signerParts: SignerParts,
  verifier: Verifier,
  content: {
    /** The digest of detached content; without it the eContent is hashed here. */
    detachedDigest?: (d: DigestName) => Buffer | undefined;
    /** The reason for a messageDigest that does not match (default: SIGNATURE_INVALID). */
    messageDigestMismatch?: VerdictReason;
    /** Put in front of every message (a timestamp's signer: "timestamp: "). */
    prefix?: string;
  } = {},
): SignerCheckResult {
  const prefix = content.prefix ?? '';
  const policy = verifier.policy;
  const out: VerdictReason[] = [];
  const si = signerParts.info;
  const signer = findSignerCertificate(si, parts.certificates);
  const digest = judgeDigest(si.digestAlgorithm.algorithmId, policy, 'signer digest algorithm', out, prefix);
  if (!parts.digestAlgorithmOids.includes(si.digestAlgorithm.algorithmId)) {
    throw new MalformedError('signer digest algorithm is not listed in SignedData.digestAlgorithms');
  }
  if (!signer) {
    out.push(reason('SIGNATURE_INVALID', `${prefix}the signer certificate is not in the signature`));
    return { signer, digest, reasons: out };
  }
  if (!signerParts.signedAttrsDer) {
    out.push(reason('SIGNATURE_INVALID', `${prefix}the signer has no signed attributes (required here)`));
    return { signer, digest, reasons: out };
  }
  const ctEl = singleAttribute(si.signedAttrs, OID.contentType, 'contentType');
  const mdEl = singleAttribute(si.signedAttrs, OID.messageDigest, 'messageDigest');
  if (!(ctEl instanceof asn1js.ObjectIdentifier) || ctEl.valueBlock.toString() !== parts.eContentType) {
    out.push(reason('SIGNATURE_INVALID', `${prefix}the contentType attribute does not match the signed content type`));
  }
  if (!(mdEl instanceof asn1js.OctetString)) {
    out.push(reason('SIGNATURE_INVALID', `${prefix}the messageDigest attribute is missing`));
  } else if (digest && digest !== 'md5') {
    const expected = Buffer.from(mdEl.valueBlock.valueHexView);
    let actual: Buffer | undefined;
    if (content.detachedDigest) actual = content.detachedDigest(digest);
    else if (parts.eContentValue) actual = hash(digest, parts.eContentValue, 'buffer');
    if (!actual) {
      out.push(reason('UNSUPPORTED_ALGORITHM', `${prefix}content digest ${digest} was not computed`));
    } else if (!actual.equals(expected)) {
      out.push(content.messageDigestMismatch ?? reason('SIGNATURE_INVALID', `${prefix}the messageDigest attribute does not match the signed content`));
    }
  }
  let signingTime: Date | undefined;
  const st = singleAttribute(si.signedAttrs, OID.signingTime, 'signingTime');
  if (st instanceof asn1js.UTCTime || st instanceof asn1js.GeneralizedTime) signingTime = st.toDate();

  const sigAlgOid = si.signatureAlgorithm.algorithmId;
  const check = verifier.signedAttributesSignature(signer, sigAlgOid, signerParts.signedAttrsDer, si.signature.valueBlock.valueHexView, digest);
  if (check.ok) {
    if (check.digest && check.digest !== digest) judgeDigestName(check.digest, policy, 'signature algorithm', out, prefix);
  } else if (check.why === 'unsupported') {
    out.push(reason('UNSUPPORTED_ALGORITHM', `${prefix}${check.detail}`));
  } else if (!signer.explicitCurve) {
    out.push(reason('SIGNATURE_INVALID', `${prefix}the signature over the signed attributes does not verify with "${signer.subject}"'s key: ${check.detail}`));
  }
  return { signer, digest, reasons: out, signingTime };
}
