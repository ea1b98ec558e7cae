import type { PinnedCertificate } from '../approvedCaPolicy.js';
import { CertificateInfo } from './certificateInfo.js';

/**
 * Pinned anchors for one purpose (code, timestamps, trust lists), parsed once: the pins' SHA-256
 * fingerprints for the "is this the anchor" test, and the certificates the rules supplied, which
 * let a chain reach an anchor the signature does not carry.
 */
export class AnchorSet {
  readonly pins: readonly PinnedCertificate[];
  private readonly fingerprints: ReadonlySet<string>;
  /** The anchors whose DER the rules gave (a fingerprint-only pin has none), parsed. */
  readonly certificates: readonly CertificateInfo[];
  /** Identifies the set's contents, for caches keyed by what a chain may reach. */
  readonly key: string;

  constructor(pins: readonly PinnedCertificate[]) {
    this.pins = Object.freeze([...pins]);
    this.fingerprints = new Set(pins.map((p) => p.sha256));
    const certificates: CertificateInfo[] = [];
    for (const pin of pins) {
      if (!pin.der) continue;
      try {
        const info = new CertificateInfo(pin.der);
        if (!certificates.some((c) => c.sha256 === info.sha256)) certificates.push(info);
      } catch {
        // An anchor that does not parse still pins by fingerprint; it just cannot extend a chain.
      }
    }
    this.certificates = Object.freeze(certificates);
    this.key = [...this.fingerprints].sort().join(',');
  }

  get size(): number { return this.pins.length; }

  has(sha256: string): boolean { return this.fingerprints.has(sha256); }
}
