import { OID } from './oids.js';
import { DIGEST_STRENGTH, digestFromOid, type DigestName } from './algorithms.js';
import type { Verifier } from './verifier.js';
import { reason, type SignatureSummary, type Verdict, type VerdictReason } from './verdict.js';
import { MalformedError } from './malformed.js';
import { attributeValues, parseSignedData, type SignedDataParts, type SignerParts } from './cms/signedDataParts.js';
import { parseSpcIndirectDataContent } from './cms/spcIndirectDataContent.js';
import { judgeDigest } from './cms/signerCheck.js';
import type { AcceptedTimestamp } from './cms/timestampCheck.js';
import { onlySigner, signedDataReport, verifySignedData, type ContentBinding } from './cms/signedDataVerification.js';
import type { CertificateInfo } from './chain/certificateInfo.js';

/** What the file itself yields: the digests computed while streaming, and which Authenticode type it is. */
export interface FileEvidence {
  dataType: typeof OID.spcPeImageData | typeof OID.spcCabData | typeof OID.spcSipInfo;
  /** With SpcSipInfo: the SIP the signature must name (an APPX signature must not pass as an MSI one). */
  sipGuid?: Uint8Array;
  fileDigests: Map<DigestName, Buffer>;
}

/** One signature's evaluation, before signatures are combined. */
export interface SignatureEvaluation {
  index: number;
  nested: boolean;
  digestAlgorithm: DigestName | 'unknown';
  reasons: VerdictReason[];
  signer?: CertificateInfo;
  chain: CertificateInfo[];
  anchored: boolean;
  digest?: { algorithm: string; expected: string; actual: string };
  timestamp?: AcceptedTimestamp;
  verifiedAt: Date;
  nestedDers: Uint8Array[];
}

/**
 * Authenticode's content binding: SpcIndirectDataContent names the kind of file, the digest
 * algorithm and the file's digest, which must equal the digest the format computed. A signature
 * made for another kind of file (or, with SpcSipInfo, another SIP) is MALFORMED.
 */
function authenticodeBinding(parts: SignedDataParts, evidence: FileEvidence, verifier: Verifier): { binding: ContentBinding; algorithm: DigestName | undefined; digest: SignatureEvaluation['digest'] } {
  const indirect = parseSpcIndirectDataContent(parts.eContentElement);
  if (indirect.dataType !== evidence.dataType) {
    throw new MalformedError(`the signature was made for another kind of file (${indirect.dataType})`);
  }
  if (evidence.sipGuid && !(indirect.sipGuid && Buffer.from(indirect.sipGuid).equals(evidence.sipGuid))) {
    throw new MalformedError(`the signature names another SIP (${indirect.sipGuid ? Buffer.from(indirect.sipGuid).toString('hex') : 'none'}) than this format's`);
  }
  const out: VerdictReason[] = [];
  const algorithm = digestFromOid(indirect.digestAlgorithmOid);
  judgeDigest(indirect.digestAlgorithmOid, verifier.policy, 'file digest', out);
  const refused = out.length > 0;
  let digest: SignatureEvaluation['digest'];
  const expected = Buffer.from(indirect.digest);
  if (algorithm && algorithm !== 'md5') {
    const actual = evidence.fileDigests.get(algorithm);
    if (!actual) {
      if (!refused) out.push(reason('UNSUPPORTED_ALGORITHM', `file digest ${algorithm} is not among the digests the rules compute (${[...evidence.fileDigests.keys()].join(', ')})`));
    } else {
      digest = { algorithm, expected: expected.toString('hex'), actual: actual.toString('hex') };
      if (!actual.equals(expected)) out.unshift(reason('DIGEST_MISMATCH', `the file's ${algorithm} Authenticode digest is ${digest.actual}, the signature signs ${digest.expected}`));
    }
  }
  return { binding: { anchors: verifier.anchors.code, purpose: 'codeSigning', contentReasons: out }, algorithm, digest };
}

/**
 * Evaluates one Authenticode signature through the one SignedData path, bound to the file by its
 * indirect data: file digest first, so a good chain never stands in for a changed file.
 */
export function evaluateAuthenticodeSignature(der: Uint8Array, evidence: FileEvidence, verifier: Verifier, now: Date, index: number, nested: boolean): SignatureEvaluation {
  const base = { index, nested, chain: [] as CertificateInfo[], anchored: false, verifiedAt: now, nestedDers: [] as Uint8Array[] };
  let parts: SignedDataParts;
  let signerParts: SignerParts;
  try {
    parts = parseSignedData(der, nested ? `nested signature #${index}` : 'signature');
    if (parts.eContentType !== OID.spcIndirectData) throw new MalformedError('the signature does not sign Authenticode content (SpcIndirectDataContent)');
    signerParts = onlySigner(parts, (n) => `Authenticode requires exactly one signer, found ${n}`);
  } catch (err) {
    if (!(err instanceof MalformedError)) throw err;
    return { ...base, digestAlgorithm: 'unknown', reasons: [reason('MALFORMED', err.message)] };
  }
  const { binding, algorithm, digest } = authenticodeBinding(parts, evidence, verifier);
  const r = verifySignedData(parts, signerParts, binding, verifier, now);
  const nestedDers = nested ? [] : attributeValues(signerParts.info.unsignedAttrs, OID.spcNestedSignature).map((el) => new Uint8Array(el.valueBeforeDecodeView));
  return {
    index, nested, digestAlgorithm: algorithm ?? 'unknown', reasons: r.reasons, signer: r.signer,
    chain: r.chain, anchored: r.anchored, digest, timestamp: r.timestamp, verifiedAt: r.at, nestedDers,
  };
}

function summarise(e: SignatureEvaluation): SignatureSummary {
  return {
    index: e.index, nested: e.nested, digestAlgorithm: e.digestAlgorithm,
    verdict: e.reasons.length === 0 ? 'allow' : 'block', reasons: e.reasons,
    signer: e.signer?.subject, anchor: e.anchored ? e.chain[e.chain.length - 1]?.subject : undefined,
  };
}

function safeEvaluate(der: Uint8Array, evidence: FileEvidence, verifier: Verifier, now: Date, index: number, nested: boolean): SignatureEvaluation {
  try {
    return evaluateAuthenticodeSignature(der, evidence, verifier, now, index, nested);
  } catch (err) {
    const code = err instanceof MalformedError ? 'MALFORMED' : 'INTERNAL_ERROR';
    return { index, nested, digestAlgorithm: 'unknown', reasons: [reason(code, (err as Error).message)], chain: [], anchored: false, verifiedAt: now, nestedDers: [] };
  }
}

/**
 * Evaluates the primary signature and its nested ones and combines them as the rules say:
 * `primary` (what Windows evaluates), `best` (strongest file digest), or `all`. Whatever the mode,
 * only a signature whose own checks all pass (file digest included) can allow.
 */
export function authenticodeVerdict(signatureDers: Uint8Array[], evidence: FileEvidence, verifier: Verifier, now: Date): Omit<Verdict, 'format' | 'sha256' | 'size'> {
  const policy = verifier.policy;
  if (!signatureDers.length) throw new MalformedError('no signature');
  const primary = safeEvaluate(signatureDers[0]!, evidence, verifier, now, 0, false);
  // Further signatures: those nested in the primary (1.3.6.1.4.1.311.2.4.1), then further
  // WIN_CERTIFICATE entries (dual-signed UEFI binaries carry two), each evaluated on its own.
  const others = [...primary.nestedDers, ...signatureDers.slice(1)];
  const all = [primary, ...others.map((d, i) => safeEvaluate(d, evidence, verifier, now, i + 1, true))];
  let deciding = primary;
  let reasons: VerdictReason[];
  switch (policy.signatureMode) {
    case 'primary':
      reasons = primary.reasons;
      break;
    case 'best': {
      const strength = (e: SignatureEvaluation) => (e.digestAlgorithm === 'unknown' ? -1 : DIGEST_STRENGTH[e.digestAlgorithm]);
      for (const e of all) if (strength(e) > strength(deciding)) deciding = e;
      reasons = deciding.reasons;
      break;
    }
    case 'all':
      reasons = all.flatMap((e) => e.reasons.map((r) => (e.nested ? { code: r.code, message: `signature #${e.index}: ${r.message}` } : r)));
      break;
  }
  const report = signedDataReport(deciding);
  return {
    verdict: reasons.length === 0 ? 'allow' : 'block',
    reasons,
    signer: report.signer,
    chain: report.chain,
    digest: deciding.digest,
    timestamp: report.timestamp,
    verifiedAt: deciding.verifiedAt.toISOString(),
    signatureMode: policy.signatureMode,
    signatures: all.map(summarise),
    ekuMode: policy.ekuMode,
  };
}
