import { issueCertificate, type IssuedCertificate } from '../pki/certificateFactory.js';

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

const YEAR = 365 * 24 * 3600 * 1000;
const rsa = { type: 'rsa' as const, bits: 2048 as const };
const O = 'Patchgate Lab Vendor';

export function makeLabPki(now = new Date()): LabPki {
  const from = new Date(now.getTime() - 2 * YEAR);
  const to = new Date(now.getTime() + 8 * YEAR);
  const ca = (cn: string, issuer: IssuedCertificate | undefined, eku: 'codeSigning' | 'none', o = O) =>
    issueCertificate({
      subject: { O: o, CN: cn }, key: rsa, issuer, notBefore: from, notAfter: to,
      extensions: {
        basicConstraints: { cA: true, critical: true },
        keyUsage: { usages: ['keyCertSign', 'cRLSign'], critical: true },
        ...(eku === 'codeSigning' ? { extendedKeyUsage: { purposes: ['codeSigning'] } } : {}),
      },
    });
  const leaf = (cn: string, issuer: IssuedCertificate, eku: boolean, notBefore = from, notAfter = to) =>
    issueCertificate({
      subject: { O, CN: cn }, key: rsa, issuer, notBefore, notAfter,
      extensions: {
        basicConstraints: { cA: false, critical: true },
        keyUsage: { usages: ['digitalSignature'], critical: true },
        ...(eku ? { extendedKeyUsage: { purposes: ['codeSigning'] } } : {}),
      },
    });

  const vendorRoot = ca('Lab Vendor Root Authority', undefined, 'none');
  const updateCa = ca('Lab Vendor Update Signing CA', vendorRoot, 'codeSigning');
  const publisher = leaf('Lab Vendor Update Publisher', updateCa, true);
  const licensingCa = ca('Lab Vendor Enforced Licensing Intermediate PCA', vendorRoot, 'none');
  // Flame's forged leaf: CN "MS", version 1, no extensions, md5WithRSAEncryption.
  const forgedLeaf = issueCertificate({
    subject: { CN: 'MS' }, key: rsa, issuer: licensingCa, notBefore: from, notAfter: to, version: 1, signatureHash: 'md5',
  });
  const rogueRoot = ca('Rogue Root CA (trusted by the client, not approved for updates)', undefined, 'none', 'Rogue Trust Services');
  const rogueCa = ca('Rogue Code Signing CA', rogueRoot, 'codeSigning', 'Rogue Trust Services');
  const roguePublisher = leaf('Lab Vendor Update Publisher', rogueCa, true);
  const noEkuPublisher = leaf('Lab Vendor Publisher (no EKU)', updateCa, false);
  const expiredPublisher = leaf('Lab Vendor Update Publisher 2019', updateCa, true, from, new Date(from.getTime() + YEAR / 2));
  return { vendorRoot, updateCa, publisher, licensingCa, forgedLeaf, rogueRoot, rogueCa, roguePublisher, noEkuPublisher, expiredPublisher };
}
