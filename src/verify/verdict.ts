import type { ReasonCode } from './reasonCodes.js';

/** `ctl`: a signed certificate trust list (.stl); `catalog`: a signed catalog (.cat); `ctl-cab`: an unsigned cabinet holding one .stl (authrootstl.cab). */
export type PayloadFormat = 'pe' | 'cab' | 'msi' | 'msix' | 'cms-detached' | 'ctl' | 'catalog' | 'ctl-cab' | 'unknown';

export interface VerdictReason {
  code: ReasonCode;
  message: string;
}

export interface CertificateSummary {
  subject: string;
  issuer: string;
  serial: string;
  sha256: string;
  notBefore: string;
  notAfter: string;
}

/** What one signature (primary or nested) concluded; the Verdict reports the deciding one. */
export interface SignatureSummary {
  index: number;
  nested: boolean;
  digestAlgorithm: string;
  verdict: 'allow' | 'block';
  reasons: VerdictReason[];
  signer?: string;
  /** The pinned anchor the chain reached, if any. */
  anchor?: string;
}

/**
 * The verdict: data shared by the CLI, the proxy, the audit log and the lab.
 * Only src/verify decides it; everything else reports it.
 */
export interface Verdict {
  verdict: 'allow' | 'block';
  /** Empty only for allow. */
  reasons: VerdictReason[];
  format: PayloadFormat;
  /** SHA-256 of the whole payload as received (hex). */
  sha256: string;
  /** Bytes received. */
  size: number;
  signer?: { subject: string; issuer: string; serial: string; sha256: string };
  chain?: { subject: string; issuer: string; sha256: string; notBefore: string; notAfter: string }[];
  digest?: { algorithm: string; expected: string; actual: string };
  timestamp?: { time: string; authority: string };
  /** The instant the chain was judged at (the timestamp's time, or now / --at). */
  verifiedAt?: string;
  /** How several signatures were combined, and what each said. */
  signatureMode?: 'primary' | 'best' | 'all';
  signatures?: SignatureSummary[];
  /** For a CTL or catalog: what the signed list says (the entries themselves are not copied here). */
  trustList?: { usage: string[]; entries: number; thisUpdate: string; nextUpdate?: string; sequenceNumber?: string };
  /** Set when the rules relaxed the EKU rule to Windows' nesting semantics. */
  ekuMode?: 'strict' | 'nested';
}

export function reason(code: ReasonCode, message: string): VerdictReason {
  return { code, message };
}

/** Keeps the first occurrence of each (code, message) pair, in order. */
export function dedupeReasons(reasons: VerdictReason[]): VerdictReason[] {
  const seen = new Set<string>();
  return reasons.filter((r) => {
    const key = `${r.code}\u0000${r.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
