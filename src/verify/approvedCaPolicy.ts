import type { DigestName } from './algorithms.js';

/** A pinned certificate: by SHA-256 of its DER, with the DER itself when the rules gave a file. */
export interface PinnedCertificate {
  sha256: string;
  /** The certificate's DER, when known: lets a chain reach an anchor the signature does not carry. */
  der?: Uint8Array;
  /** Where the pin came from (a file path or "fingerprint"), for messages. */
  label: string;
}

export type SignatureMode = 'primary' | 'best' | 'all';
export type EkuMode = 'strict' | 'nested';

/**
 * Everything the pure core needs to decide: trust material and the algorithm policy.
 * Built by src/policy from the rules file and the command line; the core never reads files.
 */
export interface ApprovedCaPolicy {
  /** Approved code-signing anchors. A chain is approved only if it reaches one of them. */
  anchors: PinnedCertificate[];
  /** Anchors accepted for timestamps (RFC 3161 and Authenticode countersignatures). */
  tsaAnchors: PinnedCertificate[];
  /**
   * Anchors for certificate trust lists (authroot.stl, disallowedcert.stl): their signer needs the
   * root-list-signer EKU below the anchor. Absent or empty: no CTL is accepted. Code-signing
   * anchors never approve a CTL, and these never approve code.
   */
  ctlAnchors?: PinnedCertificate[];
  /**
   * Fingerprints (lower-case hex) of distrusted certificates: SHA-256, or SHA-1 where only a
   * thumbprint was ever published (Microsoft's advisories give SHA-1). Beats everything else.
   */
  distrust: Set<string>;
  allowSha1: boolean;
  /** `strict`: every CA below the anchor must list codeSigning. `nested`: Windows' semantics (absent EKU = any). */
  ekuMode: EkuMode;
  signatureMode: SignatureMode;
  minRsaBits: number;
  /** File-digest algorithms the streaming verifier computes (what a signature may use). */
  fileDigests: DigestName[];
  limits: {
    /** Largest signature blob kept in memory (WIN_CERTIFICATE table, CAB signature, detached CMS). */
    maxSignatureBytes: number;
    /** Largest PE/CAB header region buffered before the layout is known. */
    maxHeaderBytes: number;
    /** Largest payload accepted (0 = no limit). */
    maxPayloadBytes: number;
  };
}

export const DEFAULT_LIMITS: ApprovedCaPolicy['limits'] = {
  maxSignatureBytes: 16 * 1024 * 1024,
  maxHeaderBytes: 1024 * 1024,
  maxPayloadBytes: 0,
};

/** A policy with no anchors: blocks everything signed. Callers add trust material. */
export function emptyPolicy(overrides: Partial<ApprovedCaPolicy> = {}): ApprovedCaPolicy {
  return {
    anchors: [],
    tsaAnchors: [],
    ctlAnchors: [],
    distrust: new Set(),
    allowSha1: false,
    ekuMode: 'strict',
    signatureMode: 'primary',
    minRsaBits: 2048,
    fileDigests: ['sha256', 'sha384', 'sha512'],
    limits: { ...DEFAULT_LIMITS },
    ...overrides,
  };
}

/**
 * The file digests a policy computes while streaming: each costs a pass of hashing over the whole
 * payload, so the rules choose (SHA-256 alone by default: what Windows Update payloads use);
 * SHA-1 only when it may be accepted.
 */
export function fileDigestsFor(allowSha1: boolean, base: DigestName[] = ['sha256', 'sha384', 'sha512']): DigestName[] {
  const out = base.filter((d) => d !== 'sha1' && d !== 'md5');
  return allowSha1 ? [...out, 'sha1'] : out;
}

/** Normalises a SHA-256 fingerprint written with colons, spaces or upper case; undefined if not 64 hex digits. */
export function normaliseFingerprint(text: string): string | undefined {
  const hex = text.replace(/[\s:]/g, '').toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : undefined;
}

/** Like normaliseFingerprint, but also accepts a 40-digit SHA-1 thumbprint (for distrust lists). */
export function normaliseThumbprint(text: string): string | undefined {
  const hex = text.replace(/[\s:]/g, '').toLowerCase();
  return /^([0-9a-f]{64}|[0-9a-f]{40})$/.test(hex) ? hex : undefined;
}
