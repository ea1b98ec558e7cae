import type { Verifier } from '../verifier.js';
import type { AnchorSet } from '../chain/anchorSet.js';
import { reason, type VerdictReason } from '../verdict.js';
import { hasLifetimeSigning, validateChain, type ChainPurpose, type ChainResult } from '../chain/chainValidator.js';
import type { CertificateInfo } from '../chain/certificateInfo.js';
import type { SignedDataParts, SignerParts } from './signedDataParts.js';
import { checkTimestamps, type AcceptedTimestamp } from './timestampCheck.js';

export interface SigningTimeChain {
  /** The timestamp that set the time the chain was judged at (absent: judged at `now`). */
  timestamp?: AcceptedTimestamp;
  at: Date;
  chain?: ChainResult;
  /** The chain's reasons, and why an expired chain was not rescued by a timestamp. */
  reasons: VerdictReason[];
}

/**
 * The one order every SignedData path follows (Authenticode, detached CMS, trust lists): timestamps
 * first, then the signer's chain at the time a valid timestamp proves, else at `now`. A leaf with
 * the lifetime-signing EKU is always judged at `now`: a timestamp does not extend its life.
 */
export function judgeAtSigningTime(
  parts: SignedDataParts, signerParts: SignerParts, leaf: CertificateInfo | undefined,
  anchors: AnchorSet, purpose: ChainPurpose, verifier: Verifier, now: Date,
): SigningTimeChain {
  const ts = checkTimestamps(parts, signerParts, verifier, now);
  const lifetime = leaf !== undefined && hasLifetimeSigning(leaf);
  const timestamp = ts.accepted && leaf && !lifetime ? ts.accepted : undefined;
  const at = timestamp?.time ?? now;
  if (!leaf) return { timestamp, at, reasons: [] };
  const chain = validateChain(leaf, parts.certificates, anchors, purpose, at, verifier);
  const reasons = [...chain.reasons];
  if (chain.reasons.some((r) => r.code === 'CERT_EXPIRED')) {
    if (ts.accepted && lifetime) reasons.push(reason('CERT_EXPIRED', 'the leaf has the lifetime-signing EKU: a timestamp does not extend its validity'));
    else if (!ts.accepted) reasons.push(...(ts.rejected.length ? ts.rejected : [reason('CERT_EXPIRED', 'no valid timestamp proves the signing time')]));
  }
  return { timestamp, at, chain, reasons };
}
