import { OID } from '../oids.js';
import { reason, type VerdictReason } from '../verdict.js';
import type { Verifier } from '../verifier.js';
import type { CertificateInfo } from './certificateInfo.js';
import type { AnchorSet } from './anchorSet.js';

export type ChainPurpose = 'codeSigning' | 'timeStamping' | 'trustListSigning';

const PURPOSE_EKU: Record<ChainPurpose, string> = { codeSigning: OID.ekuCodeSigning, timeStamping: OID.ekuTimeStamping, trustListSigning: OID.ekuRootListSigner };

/** Extensions whose meaning the checks below account for; any other critical extension blocks. */
const UNDERSTOOD_EXTENSIONS = new Set<string>([
  OID.extBasicConstraints, OID.extKeyUsage, OID.extExtendedKeyUsage, OID.extSubjectKeyIdentifier,
  OID.extAuthorityKeyIdentifier, OID.extCertificatePolicies, OID.extSubjectAltName,
  OID.extCrlDistributionPoints, OID.extAuthorityInfoAccess, OID.extNetscapeCertType,
]);

/** Limit on path search work: a hostile bag of same-named certificates must not explode it. */
const MAX_PATH_LENGTH = 12;
const MAX_SEARCH_STEPS = 256;

export interface ChainResult {
  /** leaf first; ends at the anchor when `anchored`, else at the highest certificate found. */
  path: CertificateInfo[];
  anchored: boolean;
  reasons: VerdictReason[];
}

/** The paths a search found: those ending at an anchor (at most 8), and the longest other one. */
export interface PathSearch {
  anchored: readonly (readonly CertificateInfo[])[];
  longest: readonly CertificateInfo[];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/**
 * Builds a path from `leaf` to a pinned anchor using the certificates the signature carries (and
 * the anchors' own certificates when the rules supplied them), then applies the post-Flame policy
 * to every certificate on it. Pins compare the whole DER certificate (CVE-2020-0601: never a key alone).
 */
export function validateChain(
  leaf: CertificateInfo,
  bag: readonly CertificateInfo[],
  anchors: AnchorSet,
  purpose: ChainPurpose,
  at: Date,
  verifier: Verifier,
): ChainResult {
  // The search depends on the certificates' bytes and the anchor set only: the Verifier keeps it.
  const key = `${anchors.key}|${leaf.sha256}|${bag.map((c) => c.sha256).join(',')}`;
  const { anchored: anchoredPaths, longest } = verifier.searchPaths(key, () => searchPaths(leaf, bag, anchors));

  let best: ChainResult | undefined;
  for (const path of anchoredPaths) {
    const reasons = checkPath(path, true, purpose, at, verifier);
    if (!best || reasons.length < best.reasons.length) best = { path: [...path], anchored: true, reasons };
    if (reasons.length === 0) break;
  }
  if (best) return best;

  const top = longest[longest.length - 1]!;
  const where = top.isSelfIssued
    ? `the chain ends at "${top.subject}" (SHA-256 ${top.sha256}), which is not pinned`
    : `no certificate issued "${top.subject}" among the ${bag.length} the signature carries, and no pinned anchor was reached`;
  const reasons = [reason('UNTRUSTED_ROOT', `${purpose === 'timeStamping' ? 'timestamp: ' : ''}${where}`)];
  reasons.push(...checkPath(longest, false, purpose, at, verifier));
  return { path: [...longest], anchored: false, reasons };
}

/**
 * Depth-first search over issuer names, bounded in depth and steps (a hostile bag of same-named
 * certificates must not explode it): every path that reaches a pin (at most 8), and the longest one.
 */
function searchPaths(leaf: CertificateInfo, bag: readonly CertificateInfo[], anchors: AnchorSet): PathSearch {
  const pool: CertificateInfo[] = [...bag];
  for (const info of anchors.certificates) if (!pool.some((c) => c.sha256 === info.sha256)) pool.push(info);
  let steps = 0;
  const anchoredPaths: CertificateInfo[][] = [];
  let longest: CertificateInfo[] = [leaf];
  const walk = (path: CertificateInfo[]): void => {
    if (++steps > MAX_SEARCH_STEPS || anchoredPaths.length >= 8) return;
    const top = path[path.length - 1]!;
    if (anchors.has(top.sha256)) {
      anchoredPaths.push(path);
      return;
    }
    if (path.length > longest.length) longest = path;
    if (path.length >= MAX_PATH_LENGTH || top.isSelfIssued) return;
    for (const cand of pool) {
      if (path.includes(cand) || !sameBytes(cand.subjectDer, top.issuerDer)) continue;
      walk([...path, cand]);
    }
  };
  walk([leaf]);
  return Object.freeze({ anchored: Object.freeze(anchoredPaths.map((p) => Object.freeze(p))), longest: Object.freeze(longest) });
}

function checkPath(path: readonly CertificateInfo[], anchored: boolean, purpose: ChainPurpose, at: Date, verifier: Verifier): VerdictReason[] {
  const policy = verifier.policy;
  const out: VerdictReason[] = [];
  const tag = purpose === 'timeStamping' ? 'timestamp: ' : '';
  const add = (code: Parameters<typeof reason>[0], msg: string) => out.push(reason(code, tag + msg));
  const eku = PURPOSE_EKU[purpose];
  const last = path.length - 1;

  for (let i = 0; i <= last; i++) {
    const c = path[i]!;
    const isLeaf = i === 0;
    // The top is exempt from the below-the-anchor rules only when it is the anchor, or a root
    // (self-issued). The top of an unanchored path whose issuer is missing is an intermediate.
    const isTop = i === last && (anchored || c.isSelfIssued);
    const name = `"${c.subject}"`;

    if (policy.distrust.size && c.distrustFingerprints().some((f) => policy.distrust.has(f))) add('DISTRUSTED_CERT', `${name} (SHA-256 ${c.sha256}) is on the distrust list`);

    if (c.explicitCurve) add('EXPLICIT_CURVE', `${name} has an EC key with explicit curve parameters`);
    const bits = c.rsaBits();
    if (bits !== undefined && bits < policy.minRsaBits) add('WEAK_ALGORITHM', `${name} has a ${bits}-bit RSA key (minimum ${policy.minRsaBits})`);

    if (at < c.notBefore) add('CERT_EXPIRED', `${name} is not valid before ${c.notBefore.toISOString()} (checked at ${at.toISOString()})`);
    if (at > c.notAfter) add('CERT_EXPIRED', `${name} expired ${c.notAfter.toISOString()} (checked at ${at.toISOString()})`);

    for (const ext of c.criticalExtensions) {
      if (!UNDERSTOOD_EXTENSIONS.has(ext)) add('CRITICAL_EXTENSION', `${name} has critical extension ${ext}`);
    }

    // EKU: the leaf and every CA below the top must list the purpose; strict mode does not read a
    // missing extension as "any purpose". The top (the pinned anchor) is trusted by its pin, but an
    // EKU it does list must still allow the purpose.
    const list = c.eku;
    const lists = (oid: string) => list !== undefined && list.includes(oid);
    if (isTop && !isLeaf) {
      if (list !== undefined && !lists(eku) && !lists(OID.ekuAny)) add('NO_CODESIGN_EKU', `${name} restricts its EKU to ${list.join(', ')}, without ${purpose}`);
    } else {
      const strictOk = lists(eku);
      const nestedOk = list === undefined || lists(eku) || (!isLeaf && lists(OID.ekuAny));
      if (!(policy.ekuMode === 'strict' ? strictOk : nestedOk)) {
        add('NO_CODESIGN_EKU', list === undefined
          ? `${name} has no EKU extension (${isLeaf ? 'leaf' : 'CA below the anchor'}; strict mode requires ${purpose})`
          : `${name} lists EKU ${list.join(', ')} without ${purpose}`);
      }
    }

    // The legacy Netscape type, where present, must allow object signing as well (Debian's CA marks it critical).
    const ns = c.netscapeCertType;
    if (ns && purpose === 'codeSigning') {
      if (isLeaf && !ns.objectSigning) add('NO_CODESIGN_EKU', `${name} Netscape certificate type excludes object signing`);
      if (!isLeaf && !ns.objectSigningCa) add('NO_CODESIGN_EKU', `${name} Netscape certificate type excludes object-signing CA`);
    }

    if (isLeaf) {
      if (c.keyUsage && !c.keyUsage.digitalSignature) add('KEY_USAGE', `${name} key usage lacks digitalSignature`);
    } else {
      // An issuer: must be a CA. A v1 certificate has no extensions at all: accepted only as the top.
      const v1Top = isTop && c.cert.version === 0;
      if (!c.basicConstraints?.cA && !v1Top) add('BASIC_CONSTRAINTS', `${name} issues certificates but is not a CA (basicConstraints ${c.basicConstraints ? 'cA false' : 'absent'})`);
      const pl = c.basicConstraints?.pathLen;
      if (pl !== undefined && i - 1 > pl) add('BASIC_CONSTRAINTS', `${name} allows ${pl} intermediate(s) below it, the path has ${i - 1}`);
      if (c.keyUsage && !c.keyUsage.keyCertSign) add('KEY_USAGE', `${name} key usage lacks keyCertSign`);
    }

    // The signature on each certificate below the top, made by the next one up.
    if (i < last) {
      const issuer = path[i + 1]!;
      const alg = c.signatureAlgorithm;
      if (!alg) {
        add('UNSUPPORTED_ALGORITHM', `${name} is signed with unknown algorithm ${c.signatureAlgorithmOid}`);
      } else {
        if (alg.digest === 'md5') add('WEAK_ALGORITHM', `${name} is signed with MD5 (md5WithRSAEncryption)`);
        if (alg.digest === 'sha1' && !policy.allowSha1) add('WEAK_ALGORITHM', `${name} is signed with SHA-1, which the rules do not allow`);
        const check = verifier.certificateSignature(c, issuer);
        if (!check.ok) {
          if (check.why === 'unsupported') add('UNSUPPORTED_ALGORITHM', `${name}: ${check.detail}`);
          else if (!issuer.explicitCurve) add('SIGNATURE_INVALID', `${name} is not validly signed by "${issuer.subject}": ${check.detail}`);
        }
      }
    }
  }
  return out;
}

/** True when the leaf is restricted to lifetime signing: a timestamp does not extend its life. */
export function hasLifetimeSigning(leaf: CertificateInfo): boolean {
  return leaf.eku?.includes(OID.ekuLifetimeSigning) ?? false;
}
