/**
 * Certificate signature checks are cached per (certificate, issuer's exact bytes): a leaf checked
 * against its real issuer must still fail against a look-alike issuer (same name, other key), in
 * either order.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { validateChain } from '../../src/verify/chain/chainValidator.js';
import { CertificateInfo } from '../../src/verify/chain/certificateInfo.js';
import { AnchorSet } from '../../src/verify/chain/anchorSet.js';
import { Verifier } from '../../src/verify/verifier.js';
import { generateKey, issueCertificate, type IssuedCertificate } from '../../src/pki/certificateFactory.js';
import { AT, labPolicy } from '../support/fixtures.js';

const NB = new Date('2025-01-01T00:00:00Z');
const NA = new Date('2030-01-01T00:00:00Z');
const ca = (): IssuedCertificate => issueCertificate({
  subject: { CN: 'Same Name Code Signing CA' }, key: generateKey({ type: 'ec' }), notBefore: NB, notAfter: NA,
  extensions: { basicConstraints: { cA: true, critical: true }, keyUsage: { usages: ['keyCertSign'], critical: true }, extendedKeyUsage: { purposes: ['codeSigning'] } },
});
const pin = (c: IssuedCertificate) => ({ sha256: createHash('sha256').update(c.der).digest('hex'), der: c.der, label: 'test' });

describe('certificate signature cache', () => {
  it('a look-alike issuer (same subject, other key) never inherits the real issuer\'s result', () => {
    const real = ca();
    const fake = ca();
    const leaf = issueCertificate({
      subject: { CN: 'Leaf' }, key: generateKey({ type: 'ec' }), issuer: real, notBefore: NB, notAfter: NA,
      extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
    });
    const leafInfo = CertificateInfo.fromDer(leaf.der);
    const realInfo = CertificateInfo.fromDer(real.der);
    const fakeInfo = CertificateInfo.fromDer(fake.der);
    // One verifier for both anchors: its signature cache sees the real and the look-alike issuer.
    const verifier = new Verifier(labPolicy({ anchors: [pin(real), pin(fake)] }));
    const codes = (issuer: CertificateInfo, anchor: IssuedCertificate) =>
      validateChain(leafInfo, [leafInfo, issuer], new AnchorSet([pin(anchor)]), 'codeSigning', AT, verifier).reasons.map((r) => r.code);
    for (let round = 0; round < 2; round++) {
      expect(codes(realInfo, real)).toEqual([]);
      expect(codes(fakeInfo, fake)).toContain('SIGNATURE_INVALID');
    }
    // Fresh objects for the same bytes (as after the certificate cache evicted them) agree too.
    expect(validateChain(new CertificateInfo(leaf.der), [new CertificateInfo(fake.der)], new AnchorSet([pin(fake)]), 'codeSigning', AT, verifier).reasons.map((r) => r.code)).toContain('SIGNATURE_INVALID');
  });
});
