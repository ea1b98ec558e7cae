import { OID } from '../oids.js';
import type { ApprovedCaPolicy } from '../approvedCaPolicy.js';
import { Verifier } from '../verifier.js';
import { reason, type PayloadFormat, type Verdict } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import { parseSignedData } from '../cms/signedDataParts.js';
import { onlySigner, signedDataReport, verifySignedData } from '../cms/signedDataVerification.js';
import { parseCertificateTrustList, type CertificateTrustList } from './certificateTrustList.js';

export type TrustListPartial = Omit<Verdict, 'format' | 'sha256' | 'size'> & { format?: PayloadFormat };

export interface TrustListResult {
  verdict: TrustListPartial;
  /** The parsed list, when the SignedData held a CTL (whatever the verdict). */
  list?: CertificateTrustList;
}

/**
 * Verifies a CMS SignedData that encapsulates a CTL: a certificate trust list (authroot.stl,
 * disallowedcert.stl) or a catalog (.cat). The same checks as an Authenticode signature, with the
 * content bound by the signer's messageDigest over the encapsulated CTL octets (checkSigner hashes
 * eContent), and the chain judged for what the list is:
 *  - a catalog vouches for files: code-signing anchors, codeSigning EKU below them;
 *  - any other CTL vouches for certificates: CTL anchors, root-list-signer EKU below them.
 * So a CTL signer cannot sign code and a code-signing leaf cannot sign a trust list.
 */
export function verifyTrustList(der: Uint8Array, source: Verifier | ApprovedCaPolicy, now: Date, format: PayloadFormat): TrustListResult {
  const verifier = Verifier.of(source);
  const policy = verifier.policy;
  const parts = parseSignedData(der, format === 'ctl-cab' ? 'trust list in the cabinet' : 'trust list');
  if (parts.eContentType !== OID.certTrustList) {
    return { verdict: { verdict: 'block', reasons: [reason('UNSUPPORTED_FORMAT', `a bare CMS/PKCS#7 object with content ${parts.eContentType}, not a certificate trust list or catalog: verify it with the content it signs (--detached)`)] } };
  }
  const signerParts = onlySigner(parts, (n) => `a trust list needs exactly one signer, found ${n}`);
  const list = parseCertificateTrustList(parts.eContentDer);
  const kind: PayloadFormat = list.isCatalog ? 'catalog' : format === 'ctl-cab' ? 'ctl-cab' : 'ctl';
  // The content is the encapsulated CTL itself: the signer's messageDigest is over its octets.
  const r = verifySignedData(parts, signerParts, list.isCatalog
    ? { anchors: verifier.anchors.code, purpose: 'codeSigning', noAnchors: reason('UNTRUSTED_ROOT', 'no code-signing anchor approves catalogs here') }
    : { anchors: verifier.anchors.trustList, purpose: 'trustListSigning', noAnchors: reason('UNTRUSTED_ROOT', 'no certificate-trust-list anchor is approved here (rules: ctlAnchors, or a channel\'s)') },
  verifier, now);
  const report = signedDataReport(r);
  return {
    list,
    verdict: {
      format: kind,
      verdict: r.reasons.length ? 'block' : 'allow',
      reasons: r.reasons,
      signer: report.signer,
      chain: report.chain,
      timestamp: report.timestamp,
      verifiedAt: r.at.toISOString(),
      ekuMode: policy.ekuMode,
      trustList: {
        usage: list.subjectUsage, entries: list.subjects.length, thisUpdate: list.thisUpdate.toISOString(),
        nextUpdate: list.nextUpdate?.toISOString(), sequenceNumber: list.sequenceNumber,
      },
    },
  };
}

/** verifyTrustList that never throws: a parse failure is MALFORMED, anything else INTERNAL_ERROR. */
export function trustListVerdict(der: Uint8Array, verifier: Verifier | ApprovedCaPolicy, now: Date, format: PayloadFormat = 'ctl'): TrustListResult {
  try {
    return verifyTrustList(der, verifier, now, format);
  } catch (err) {
    return { verdict: { verdict: 'block', reasons: [reason(err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR', `trust list: ${(err as Error).message}`)] } };
  }
}
