import { digestFromOid, type DigestName } from './algorithms.js';
import type { Verifier } from './verifier.js';
import { dedupeReasons, reason, type Verdict, type VerdictReason } from './verdict.js';
import { MalformedError } from './malformed.js';
import { parseSignedData, type SignedDataParts } from './cms/signedDataParts.js';
import { checkSigner } from './cms/signerCheck.js';
import { judgeAtSigningTime } from './cms/signingTimeChain.js';

/**
 * A detached CMS/PKCS#7 signature over a whole file (`verify --detached`). Parsed before the
 * content streams, so the content is hashed once, with the signer's own digest algorithm.
 */
export class DetachedCmsCheck {
  private readonly parts: SignedDataParts;

  constructor(signature: Uint8Array, private readonly verifier: Verifier, private readonly now: Date) {
    this.parts = parseSignedData(signature, 'detached signature');
    if (this.parts.eContentValue !== undefined) throw new MalformedError('the signature encapsulates its content: it is not detached');
    if (this.parts.signers.length !== 1) throw new MalformedError(`expected one signer, found ${this.parts.signers.length}`);
  }

  contentDigests(): DigestName[] {
    const d = digestFromOid(this.parts.signers[0]!.info.digestAlgorithm.algorithmId);
    return d && d !== 'md5' ? [d] : [];
  }

  verdict(digests: Map<DigestName, Buffer>): Omit<Verdict, 'format' | 'sha256' | 'size'> {
    const out: VerdictReason[] = [];
    const signerParts = this.parts.signers[0]!;
    const signer = checkSigner(this.parts, signerParts, this.verifier, (d) => digests.get(d));
    // A messageDigest mismatch on detached content means the file was changed: say so plainly.
    for (const r of signer.reasons) {
      out.push(r.code === 'SIGNATURE_INVALID' && r.message.includes('messageDigest attribute does not match')
        ? reason('DIGEST_MISMATCH', 'the file does not match the digest in the detached signature')
        : r);
    }
    const judged = judgeAtSigningTime(this.parts, signerParts, signer.signer, this.verifier.anchors.code, 'codeSigning', this.verifier, this.now);
    const at = judged.at;
    const chain = { path: judged.chain?.path ?? [] };
    out.push(...judged.reasons);
    const reasons = dedupeReasons(out);
    const leaf = signer.signer;
    const d = signer.digest;
    return {
      verdict: reasons.length ? 'block' : 'allow',
      reasons,
      signer: leaf ? { subject: leaf.subject, issuer: leaf.issuer, serial: leaf.serialHex, sha256: leaf.sha256 } : undefined,
      chain: chain.path.length ? chain.path.map((c) => ({ subject: c.subject, issuer: c.issuer, sha256: c.sha256, notBefore: c.notBefore.toISOString(), notAfter: c.notAfter.toISOString() })) : undefined,
      digest: d && digests.get(d) ? { algorithm: d, expected: '(messageDigest attribute)', actual: digests.get(d)!.toString('hex') } : undefined,
      timestamp: judged.timestamp ? { time: judged.timestamp.time.toISOString(), authority: judged.timestamp.authority } : undefined,
      verifiedAt: at.toISOString(),
      ekuMode: this.verifier.policy.ekuMode,
    };
  }
}
