import { createHash } from 'node:crypto';
import { digestFromOid, type DigestName } from '../algorithms.js';
import type { ApprovedCaPolicy } from '../approvedCaPolicy.js';
import { Verifier } from '../verifier.js';
import { OID } from '../oids.js';
import { reason, type Verdict, type VerdictReason } from '../verdict.js';
import { trustListVerdict } from './trustListVerification.js';
import { RangeHasher } from '../rangeHasher.js';
import { parsePeLayout, peDigestRanges } from '../pe/peLayout.js';
import { parseCabLayout } from '../cab/cabLayout.js';
import { sniffFormat } from '../format/sniffFormat.js';
import { judgeDigestName } from '../cms/signerCheck.js';
import { memberDigests, type CertificateTrustList } from './certificateTrustList.js';

/**
 * The digest a catalog records for a member file, as Windows' subject interface packages compute
 * it (and osslsigncode -catalog): the Authenticode image hash for a PE, the Authenticode hash for
 * a signed cabinet, the hash of the whole file otherwise.
 */
export function memberDigest(file: Uint8Array, digest: DigestName, maxHeaderBytes: number): Buffer {
  const kind = sniffFormat(file.subarray(0, 64));
  let ranges: (readonly [number, number])[] | undefined;
  if (kind === 'pe') {
    const r = parsePeLayout(file, maxHeaderBytes);
    if (r.kind === 'layout') ranges = peDigestRanges(r.layout, file.byteLength);
  } else if (kind === 'cab') {
    const r = parseCabLayout(file, maxHeaderBytes);
    if (r.kind === 'layout' && r.layout.signed) ranges = r.layout.ranges;
  }
  if (!ranges) return createHash(digest).update(file).digest();
  const h = new RangeHasher(ranges, [digest]);
  h.update(file, 0);
  return h.digests().get(digest)!;
}

export interface MembershipResult {
  member: boolean;
  reasons: VerdictReason[];
  /** The digest that matched (or, when none did, the SHA-256 / SHA-1 computed). */
  digest?: { algorithm: string; actual: string };
}

/** Whether `file` is a member of a (verified) catalog: its digest equals one member's SpcIndirectDataContent digest. */
export function catalogMembership(catalog: CertificateTrustList, file: Uint8Array, source: Verifier | ApprovedCaPolicy): MembershipResult {
  const policy = source instanceof Verifier ? source.policy : source;
  if (!catalog.isCatalog) return { member: false, reasons: [reason('UNSUPPORTED_FORMAT', 'the --catalog file is a certificate trust list, not a catalog')] };
  if (catalog.subjectAlgorithmOid !== OID.catalogListMember && catalog.subjectAlgorithmOid !== OID.catalogListMemberV2) {
    return { member: false, reasons: [reason('MALFORMED', `catalog subject algorithm ${catalog.subjectAlgorithmOid} is not a catalog member list`)] };
  }
  const byAlg = new Map<DigestName, Buffer>();
  const weak: VerdictReason[] = [];
  // The file's digest in every algorithm catalogs use, computed once: an entry whose bytes hold
  // none of them cannot match and is not parsed (a catalog may list a hundred thousand files).
  for (const alg of ['sha1', 'sha256', 'sha384', 'sha512'] as const) byAlg.set(alg, memberDigest(file, alg, policy.limits.maxHeaderBytes));
  for (const s of catalog.subjects) {
    const attrs = s.attributesDer ? Buffer.from(s.attributesDer.buffer, s.attributesDer.byteOffset, s.attributesDer.byteLength) : undefined;
    if (!attrs || ![...byAlg.values()].some((d) => attrs.includes(d))) continue;
    for (const ind of memberDigests(s)) {
      const alg = digestFromOid(ind.digestAlgorithmOid);
      if (!alg) continue;
      if (!byAlg.get(alg)?.equals(Buffer.from(ind.digest))) continue;
      judgeDigestName(alg, policy, 'catalog member digest', weak);
      return { member: weak.length === 0, reasons: weak, digest: { algorithm: alg, actual: byAlg.get(alg)!.toString('hex') } };
    }
  }
  const shown = (['sha256', 'sha1'] as const).map((a) => `${a} ${byAlg.get(a)!.toString('hex')}`).join(', ');
  return { member: false, reasons: [reason('DIGEST_MISMATCH', `the file is not a member of the catalog (${catalog.subjects.length} members; its digests: ${shown})`)] };
}

/**
 * `verify --catalog X.cat FILE`: FILE is approved when the catalog verifies under the policy (its
 * own signature, chain, EKU) and FILE's SIP digest is one of its members'. FILE's own embedded
 * signature, if any, plays no part, as with Windows' catalog signing. One place decides this.
 */
export function catalogFileVerdict(catalogDer: Uint8Array, file: Uint8Array, source: Verifier | ApprovedCaPolicy, now: Date): Verdict {
  const verifier = Verifier.of(source);
  const { verdict: cat, list } = trustListVerdict(catalogDer, verifier, now, 'catalog');
  const base: Verdict = {
    ...cat, format: cat.format ?? 'catalog', verdict: 'block', reasons: [],
    sha256: createHash('sha256').update(file).digest('hex'), size: file.byteLength,
  };
  const catalogReasons = cat.reasons.map((r) => ({ code: r.code, message: `catalog: ${r.message}` }));
  if (!list) return { ...base, reasons: catalogReasons.length ? catalogReasons : [reason('MALFORMED', 'catalog: not a catalog')] };
  const m = catalogMembership(list, file, verifier);
  const reasons = [...catalogReasons, ...m.reasons];
  if (!m.member && !m.reasons.length) reasons.push(reason('DIGEST_MISMATCH', 'the file is not a member of the catalog'));
  return {
    ...base,
    verdict: reasons.length === 0 && cat.verdict === 'allow' && m.member ? 'allow' : 'block',
    reasons,
    digest: m.digest ? { algorithm: m.digest.algorithm, expected: '(catalog member)', actual: m.digest.actual } : undefined,
  };
}
