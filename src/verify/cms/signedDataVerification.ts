import type { DigestName } from '../algorithms.js';
import { dedupeReasons, type Verdict, type VerdictReason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import type { Verifier } from '../verifier.js';
import type { AnchorSet } from '../chain/anchorSet.js';
import type { ChainPurpose } from '../chain/chainValidator.js';
import type { CertificateInfo } from '../chain/certificateInfo.js';
import type { SignedDataParts, SignerParts } from './signedDataParts.js';
import { checkSigner } from './signerCheck.js';
import { judgeAtSigningTime } from './signingTimeChain.js';
import type { AcceptedTimestamp } from './timestampCheck.js';

/**
 * How a SignedData is bound to the content it vouches for, and what its signer must chain to. The
 * three kinds differ only here:
 *  - Authenticode indirect data: SpcIndirectDataContent names the file's digest (PE, CAB, MSI, APPX);
 *    the format computed the file's own, compared before the signer is looked at;
 *  - detached content: the signer's messageDigest is over bytes outside the SignedData (`--detached`);
 *  - an encapsulated CTL (trust list, catalog): the messageDigest is over the eContent itself.
 */
export interface ContentBinding {
  /** The anchors the signer's chain must reach, and the EKU it must carry below them. */
  anchors: AnchorSet;
  purpose: ChainPurpose;
  /** What comparing the content found (a file digest that differs, a refused digest algorithm): reported first. */
  contentReasons?: VerdictReason[];
  /** Detached content's digest per algorithm: the messageDigest is checked against it instead of eContent. */
  detachedDigest?: (d: DigestName) => Buffer | undefined;
  /** How a messageDigest that does not match is reported (detached content: the file was changed). */
  messageDigestMismatch?: VerdictReason;
  /** Reported when the anchor set is empty (no trust-list anchor approved on this channel). */
  noAnchors?: VerdictReason;
}

/** What one SignedData concluded, before a format combines it with others. */
export interface SignedDataResult {
  signer?: CertificateInfo;
  /** The signer's digest algorithm, when known. */
  signerDigest?: DigestName;
  /** Leaf first; ends at the anchor when `anchored`. */
  chain: CertificateInfo[];
  anchored: boolean;
  timestamp?: AcceptedTimestamp;
  /** The instant the chain was judged at. */
  at: Date;
  /** Every reason to block, deduplicated, in the order they were found. */
  reasons: VerdictReason[];
}

/** The one signer a SignedData of these kinds must have (Authenticode, detached, CTL all require exactly one). */
export function onlySigner(parts: SignedDataParts, message: (n: number) => string): SignerParts {
  if (parts.signers.length !== 1) throw new MalformedError(message(parts.signers.length));
  return parts.signers[0]!;
}

/**
 * The one SignedData path. In the order that keeps a good chain from ever standing in for changed
 * content: the content binding, then the signer over its attributes (messageDigest included), then
 * the timestamps, then the signer's chain at the time a valid timestamp proves, else at `now`.
 */
export function verifySignedData(parts: SignedDataParts, signerParts: SignerParts, binding: ContentBinding, verifier: Verifier, now: Date): SignedDataResult {
  const out: VerdictReason[] = [...(binding.contentReasons ?? [])];
  const signer = checkSigner(parts, signerParts, verifier, { detachedDigest: binding.detachedDigest, messageDigestMismatch: binding.messageDigestMismatch });
  out.push(...signer.reasons);
  if (signer.signer && binding.noAnchors && binding.anchors.size === 0) out.push(binding.noAnchors);
  const judged = judgeAtSigningTime(parts, signerParts, signer.signer, binding.anchors, binding.purpose, verifier, now);
  out.push(...judged.reasons);
  return {
    signer: signer.signer, signerDigest: signer.digest, chain: judged.chain?.path ?? [], anchored: judged.chain?.anchored ?? false,
    timestamp: judged.timestamp, at: judged.at, reasons: dedupeReasons(out),
  };
}

/** The Verdict's account of one SignedData: who signed, the chain, the proven time. */
export function signedDataReport(r: Pick<SignedDataResult, 'signer' | 'chain' | 'timestamp'>): Pick<Verdict, 'signer' | 'chain' | 'timestamp'> {
  const leaf = r.signer;
  return {
    signer: leaf ? { subject: leaf.subject, issuer: leaf.issuer, serial: leaf.serialHex, sha256: leaf.sha256 } : undefined,
    chain: r.chain.length ? r.chain.map((c) => ({ subject: c.subject, issuer: c.issuer, sha256: c.sha256, notBefore: c.notBefore.toISOString(), notAfter: c.notAfter.toISOString() })) : undefined,
    timestamp: r.timestamp ? { time: r.timestamp.time.toISOString(), authority: r.timestamp.authority } : undefined,
  };
}
