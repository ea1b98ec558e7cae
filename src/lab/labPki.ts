import { createHash } from 'node:crypto';
import { issueCertificate, type IssuedCertificate, type KeyUsageName } from '../pki/certificateFactory.js';
import type { PinnedCertificate } from '../verify/approvedCaPolicy.js';

const YEAR = 365 * 24 * 3600 * 1000;
const rsa = { type: 'rsa' as const, bits: 2048 as const };

/** Issues a lab PKI's certificates: RSA 2048, one organisation and validity window unless told otherwise. */
export interface LabIssuer {
  /** The validity window every certificate gets unless told otherwise. */
  notBefore: Date;
  notAfter: Date;
  /** A CA (basicConstraints cA, critical key usage), with an EKU extension only when `eku` lists purposes. */
  ca(cn: string, issuer: IssuedCertificate | undefined, opts?: { o?: string; usages?: KeyUsageName[]; eku?: string[] }): IssuedCertificate;
  /** An end-entity certificate (digitalSignature), with an EKU extension only when `eku` lists purposes. */
  leaf(cn: string, issuer: IssuedCertificate, eku: string[] | undefined, opts?: { notBefore?: Date; notAfter?: Date }): IssuedCertificate;
}

/** The issuer of a lab PKI whose certificates are valid from `yearsBefore` years before `now` to `yearsAfter` after. */
export function labIssuer(o: string, now: Date, yearsBefore: number, yearsAfter: number): LabIssuer {
  const from = new Date(now.getTime() - yearsBefore * YEAR);
  const to = new Date(now.getTime() + yearsAfter * YEAR);
  return {
    notBefore: from,
    notAfter: to,
    ca: (cn, issuer, opts = {}) => issueCertificate({
      subject: { O: opts.o ?? o, CN: cn }, key: rsa, issuer, notBefore: from, notAfter: to,
      extensions: {
        basicConstraints: { cA: true, critical: true },
        keyUsage: { usages: opts.usages ?? ['keyCertSign', 'cRLSign'], critical: true },
        ...(opts.eku ? { extendedKeyUsage: { purposes: opts.eku } } : {}),
      },
    }),
    leaf: (cn, issuer, eku, opts = {}) => issueCertificate({
      subject: { O: o, CN: cn }, key: rsa, issuer, notBefore: opts.notBefore ?? from, notAfter: opts.notAfter ?? to,
      extensions: {
        basicConstraints: { cA: false, critical: true },
        keyUsage: { usages: ['digitalSignature'], critical: true },
        ...(eku ? { extendedKeyUsage: { purposes: eku } } : {}),
      },
    }),
  };
}

/** `cert` as a pinned anchor (by the SHA-256 of its DER, the certificate given). */
export function pinnedAnchor(cert: IssuedCertificate, label: string): PinnedCertificate {
  return { sha256: createHash('sha256').update(cert.der).digest('hex'), der: cert.der, label };
}

/**
 * The lab's PKI, made on the fly: a vendor root; the vendor's dedicated update CA (the one the
 * gate approves, as Microsoft did in 2012); a licensing intermediate under the same root that
 * lacks codeSigning (Flame's Terminal Services path) and the forged publisher under it, signed with
 * MD5 and carrying no extensions at all; a rogue root the naive client happens to trust; and the
 * odd publishers the other scenarios need.
 */
export interface LabPki {
  vendorRoot: IssuedCertificate;
  updateCa: IssuedCertificate;
  publisher: IssuedCertificate;
  licensingCa: IssuedCertificate;
  forgedLeaf: IssuedCertificate;
  rogueRoot: IssuedCertificate;
  rogueCa: IssuedCertificate;
  roguePublisher: IssuedCertificate;
  noEkuPublisher: IssuedCertificate;
  expiredPublisher: IssuedCertificate;
}

const O = 'Patchgate Lab Vendor';
const ROGUE_O = 'Rogue Trust Services';
const CODE_SIGNING = ['codeSigning'];

export function makeLabPki(now = new Date()): LabPki {
  const { ca, leaf, notBefore: from, notAfter: to } = labIssuer(O, now, 2, 8);

  const vendorRoot = ca('Lab Vendor Root Authority', undefined);
  const updateCa = ca('Lab Vendor Update Signing CA', vendorRoot, { eku: CODE_SIGNING });
  const publisher = leaf('Lab Vendor Update Publisher', updateCa, CODE_SIGNING);
  const licensingCa = ca('Lab Vendor Enforced Licensing Intermediate PCA', vendorRoot);
  // Flame's forged leaf: CN "MS", version 1, no extensions, md5WithRSAEncryption.
  const forgedLeaf = issueCertificate({
    subject: { CN: 'MS' }, key: rsa, issuer: licensingCa, notBefore: from, notAfter: to, version: 1, signatureHash: 'md5',
  });
  const rogueRoot = ca('Rogue Root CA (trusted by the client, not approved for updates)', undefined, { o: ROGUE_O });
  const rogueCa = ca('Rogue Code Signing CA', rogueRoot, { o: ROGUE_O, eku: CODE_SIGNING });
  const roguePublisher = leaf('Lab Vendor Update Publisher', rogueCa, CODE_SIGNING);
  const noEkuPublisher = leaf('Lab Vendor Publisher (no EKU)', updateCa, undefined);
  const expiredPublisher = leaf('Lab Vendor Update Publisher 2019', updateCa, CODE_SIGNING, { notAfter: new Date(from.getTime() + YEAR / 2) });
  return { vendorRoot, updateCa, publisher, licensingCa, forgedLeaf, rogueRoot, rogueCa, roguePublisher, noEkuPublisher, expiredPublisher };
}
