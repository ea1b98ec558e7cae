import { digestFromOid, type DigestName } from './algorithms.js';
import type { Verifier } from './verifier.js';
import { reason, type Verdict } from './verdict.js';
import { MalformedError } from './malformed.js';
import { parseSignedData, type SignedDataParts, type SignerParts } from './cms/signedDataParts.js';
import { onlySigner, signedDataReport, verifySignedData } from './cms/signedDataVerification.js';

/**
 * A detached CMS/PKCS#7 signature over a whole file (`verify --detached`). Parsed before the
 * content streams, so the content is hashed once, with the signer's own digest algorithm; then
 * judged by the one SignedData path, its messageDigest bound to the streamed content.
 */
export class DetachedCmsCheck {
  private readonly parts: SignedDataParts;
  private readonly signerParts: SignerParts;

  constructor(signature: Uint8Array, private readonly verifier: Verifier, private readonly now: Date) {
    this.parts = parseSignedData(signature, 'detached signature');
    if (this.parts.eContentValue !== undefined) throw new MalformedError('the signature encapsulates its content: it is not detached');
    this.signerParts = onlySigner(this.parts, (n) => `expected one signer, found ${n}`);
  }

  contentDigests(): DigestName[] {
    const d = digestFromOid(this.signerParts.info.digestAlgorithm.algorithmId);
    return d && d !== 'md5' ? [d] : [];
  }

  verdict(digests: Map<DigestName, Buffer>): Omit<Verdict, 'format' | 'sha256' | 'size'> {
    const r = verifySignedData(this.parts, this.signerParts, {
      anchors: this.verifier.anchors.code,
      purpose: 'codeSigning',
      detachedDigest: (d) => digests.get(d),
      // A messageDigest that differs on detached content means the file was changed: say so plainly.
      messageDigestMismatch: reason('DIGEST_MISMATCH', 'the file does not match the digest in the detached signature'),
    }, this.verifier, this.now);
    const d = r.signerDigest;
    const report = signedDataReport(r);
    return {
      verdict: r.reasons.length ? 'block' : 'allow',
      reasons: r.reasons,
      signer: report.signer,
      chain: report.chain,
      digest: d && digests.get(d) ? { algorithm: d, expected: '(messageDigest attribute)', actual: digests.get(d)!.toString('hex') } : undefined,
      timestamp: report.timestamp,
      verifiedAt: r.at.toISOString(),
      ekuMode: this.verifier.policy.ekuMode,
    };
  }
}
