import { DEFAULT_LIMITS, fileDigestsFor, type ApprovedCaPolicy, type EkuMode, type SignatureMode } from '../verify/approvedCaPolicy.js';
import type { LoadedRules } from './rulesFile.js';
import { pinCertificateFile, pinEntry, readDistrustFile } from './trustMaterial.js';

/** Command-line trust overrides shared by `verify`, `run` and `icap`. */
export interface TrustOverrides {
  /** When non-empty, replaces the rules' anchors. */
  anchorFiles?: string[];
  /** When non-empty, replaces the rules' timestamp anchors. */
  tsaAnchorFiles?: string[];
  /** Added to the rules' distrust list. */
  distrustFile?: string;
  allowSha1?: boolean;
  ekuMode?: EkuMode;
  signatureMode?: SignatureMode;
}

/** Turns validated rules plus overrides into the core's policy. Throws RulesError on bad trust material. */
export function buildPolicy(loaded: LoadedRules, o: TrustOverrides = {}): ApprovedCaPolicy {
  const r = loaded.rules;
  const anchors = o.anchorFiles?.length
    ? o.anchorFiles.flatMap(pinCertificateFile)
    : r.anchors.flatMap((e, i) => pinEntry(e, `anchors[${i}]`));
  const tsaAnchors = o.tsaAnchorFiles?.length
    ? o.tsaAnchorFiles.flatMap(pinCertificateFile)
    : (r.tsaAnchors ?? []).flatMap((e, i) => pinEntry(e, `tsaAnchors[${i}]`));
  const ctlAnchors = (r.ctlAnchors ?? []).flatMap((e, i) => pinEntry(e, `ctlAnchors[${i}]`));
  const distrust = new Set<string>();
  (r.distrust ?? []).forEach((e, i) => pinEntry(e, `distrust[${i}]`).forEach((p) => distrust.add(p.sha256)));
  (r.distrustFiles ?? []).forEach((f) => readDistrustFile(f).forEach((fp) => distrust.add(fp)));
  if (o.distrustFile) readDistrustFile(o.distrustFile).forEach((fp) => distrust.add(fp));
  const allowSha1 = o.allowSha1 || r.policy?.allowSha1 === true;
  return {
    anchors,
    tsaAnchors,
    ctlAnchors,
    distrust,
    allowSha1,
    ekuMode: o.ekuMode ?? r.policy?.ekuMode ?? 'strict',
    signatureMode: o.signatureMode ?? r.policy?.signatureMode ?? 'primary',
    minRsaBits: r.policy?.minRsaBits ?? 2048,
    fileDigests: fileDigestsFor(allowSha1, r.policy?.fileDigests ?? ['sha256']),
    limits: {
      maxSignatureBytes: r.limits?.maxSignatureBytes ?? DEFAULT_LIMITS.maxSignatureBytes,
      maxHeaderBytes: r.limits?.maxHeaderBytes ?? DEFAULT_LIMITS.maxHeaderBytes,
      maxPayloadBytes: r.limits?.maxPayloadBytes ?? DEFAULT_LIMITS.maxPayloadBytes,
    },
  };
}
