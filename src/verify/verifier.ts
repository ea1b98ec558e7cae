import { hash } from 'node:crypto';
import type { ApprovedCaPolicy } from './approvedCaPolicy.js';
import type { DigestName } from './algorithms.js';
import type { PayloadFormat, Verdict } from './verdict.js';
import { BoundedCache } from './boundedCache.js';
import { AnchorSet } from './chain/anchorSet.js';
import type { CertificateInfo } from './chain/certificateInfo.js';
import { checkSignature, type SignatureCheck } from './chain/signatureCheck.js';
import type { PathSearch } from './chain/chainValidator.js';
import { IncrementalVerifier, type IncrementalVerifierOptions } from './incrementalVerifier.js';
import { bytesSource } from './format/signedFileFormat.js';
import { trustListVerdict, type TrustListResult } from './ctl/trustListVerification.js';
import { catalogFileVerdict, catalogMembership, type MembershipResult } from './ctl/catalogMembership.js';
import type { CertificateTrustList } from './ctl/certificateTrustList.js';

/** What one verification needs besides the bytes: the instant to judge at when no timestamp proves one. */
export interface VerifyOptions {
  /**
   * Default: the time of the call. A per-call argument rather than a clock owned by the Verifier:
   * each payload is judged at its own moment, and tests and `verify --at` pin instants explicitly.
   */
  now?: Date;
}

/** Certificate signatures, signatures over signed attributes and chain searches kept per Verifier (each entry is small). */
const SIGNATURE_CHECKS = 4096;
const SIGNED_ATTRIBUTE_CHECKS = 4096;
const PATH_SEARCHES = 1024;

/**
 * The verifier, built once from trust material: it owns the rules (frozen), the anchors parsed once
 * per purpose, and the caches whose results depend on them, each bounded. Every verification
 * follows one order: the file's digest and the signer over its attributes, then the timestamps,
 * then the signer's chain at the time a valid timestamp proves, else at `now`.
 * One per trust channel; reused for every payload the channel judges.
 */
export class Verifier {
  readonly policy: Readonly<ApprovedCaPolicy>;
  readonly anchors: { readonly code: AnchorSet; readonly timestamp: AnchorSet; readonly trustList: AnchorSet };
  private readonly signatureChecks = new BoundedCache<string, SignatureCheck>(SIGNATURE_CHECKS);
  private readonly signedAttributeChecks = new BoundedCache<string, SignatureCheck>(SIGNED_ATTRIBUTE_CHECKS);
  private readonly pathSearches = new BoundedCache<string, PathSearch>(PATH_SEARCHES);

  constructor(policy: ApprovedCaPolicy) {
    // A copy: a caller changing its policy object afterwards does not change this verifier's rules.
    this.policy = Object.freeze({
      ...policy,
      anchors: [...policy.anchors], tsaAnchors: [...policy.tsaAnchors], ctlAnchors: [...(policy.ctlAnchors ?? [])],
      distrust: new Set(policy.distrust), fileDigests: [...policy.fileDigests], limits: Object.freeze({ ...policy.limits }),
    });
    this.anchors = Object.freeze({
      code: new AnchorSet(policy.anchors),
      timestamp: new AnchorSet(policy.tsaAnchors),
      trustList: new AnchorSet(policy.ctlAnchors ?? []),
    });
  }

  /** A Verifier as given, or one built for a one-off call from a policy (tests, scripts). */
  static of(source: Verifier | ApprovedCaPolicy): Verifier {
    return source instanceof Verifier ? source : new Verifier(source);
  }

  /** A streaming verification: feed it the payload's bytes as they arrive. */
  stream(options: IncrementalVerifierOptions = {}): IncrementalVerifier {
    return new IncrementalVerifier(this, options);
  }

  /** A whole payload in memory, any format (random-access ones are read from the buffer). */
  async verify(bytes: Uint8Array, options: IncrementalVerifierOptions = {}): Promise<Verdict> {
    const v = this.stream(options);
    v.update(bytes);
    return v.needsRandomAccess ? v.finishFrom(bytesSource(bytes)) : v.finish();
  }

  /** A signed certificate trust list or catalog on its own. Never throws. */
  trustList(der: Uint8Array, options: VerifyOptions & { format?: PayloadFormat } = {}): TrustListResult {
    return trustListVerdict(der, this, options.now ?? new Date(), options.format ?? 'ctl');
  }

  /** `verify --catalog`: `file` passes when the catalog verifies and lists its digest. */
  catalogFile(catalogDer: Uint8Array, file: Uint8Array, options: VerifyOptions = {}): Verdict {
    return catalogFileVerdict(catalogDer, file, this, options.now ?? new Date());
  }

  /** Whether `file` is a member of a catalog already verified. */
  catalogMembership(catalog: CertificateTrustList, file: Uint8Array): MembershipResult {
    return catalogMembership(catalog, file, this);
  }

  /**
   * Whether `issuer`'s key made `child`'s signature: a pure function of the two certificates'
   * exact bytes, keyed by both SHA-256s (a look-alike issuer, same name and other key, has its own
   * entry), so a publisher's chain is checked once, not once per payload.
   */
  certificateSignature(child: CertificateInfo, issuer: CertificateInfo): SignatureCheck {
    const key = `${child.sha256}:${issuer.sha256}`;
    const hit = this.signatureChecks.get(key);
    if (hit) return hit;
    const { tbs, signature } = child.signedPart();
    return this.signatureChecks.set(key, checkSignature(issuer, child.signatureAlgorithmOid, tbs, signature));
  }

  /**
   * Whether `signer`'s key made `signature` over a SignerInfo's signed attributes: a pure function
   * of the signer certificate's exact bytes (its SHA-256), the algorithms, and the exact attribute
   * and signature bytes (their SHA-256, the attributes' length first so that the split between the
   * two cannot move), so one signature blob met again (the same file under another URL, a timestamp
   * countersignature shared by many files) costs no public-key operation. Any other byte anywhere
   * (a changed attribute, messageDigest included, or another certificate with the same issuer and
   * serial) is another key.
   */
  signedAttributesSignature(signer: CertificateInfo, algorithmOid: string, signedAttrsDer: Uint8Array, signature: Uint8Array, digest: DigestName | undefined): SignatureCheck {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(signedAttrsDer.byteLength);
    const bytes = hash('sha256', Buffer.concat([length, signedAttrsDer, signature]), 'base64');
    const key = `${signer.sha256}:${algorithmOid}:${digest ?? ''}:${bytes}`;
    const hit = this.signedAttributeChecks.get(key);
    if (hit) return hit;
    return this.signedAttributeChecks.set(key, Object.freeze(checkSignature(signer, algorithmOid, signedAttrsDer, signature, digest)));
  }

  /**
   * The candidate paths from a leaf through a certificate bag to an anchor set: a function of the
   * certificates' bytes and the set alone (no time, no policy check), so kept per Verifier.
   */
  searchPaths(key: string, search: () => PathSearch): PathSearch {
    return this.pathSearches.get(key) ?? this.pathSearches.set(key, search());
  }
}
