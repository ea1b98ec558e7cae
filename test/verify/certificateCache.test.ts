/**
 * CertificateInfo.fromDer keeps parsed certificates by the SHA-256 of their exact DER: the same bytes
 * give the same object, a certificate with the same issuer and serial number but other bytes (a
 * forgery with another key) gets its own parse, and the cache stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { CertificateInfo } from '../../src/verify/chain/certificateInfo.js';
import { generateKey, issueCertificate, prepareIssuer } from '../../src/pki/certificateFactory.js';

const NB = new Date('2025-01-01T00:00:00Z');
const NA = new Date('2030-01-01T00:00:00Z');
const ca = issueCertificate({
  subject: { CN: 'Certificate Cache Test CA' }, key: generateKey({ type: 'ec' }), notBefore: NB, notAfter: NA,
  extensions: { basicConstraints: { cA: true, critical: true }, keyUsage: { usages: ['keyCertSign'], critical: true } },
});
const issuer = prepareIssuer(ca);
const leaf = (serialNumber: bigint, key = generateKey({ type: 'ec' })) => issueCertificate({
  subject: { CN: 'Publisher' }, key, issuer, serialNumber, notBefore: NB, notAfter: NA,
  extensions: { basicConstraints: { cA: false }, extendedKeyUsage: { purposes: ['codeSigning'] } },
});

describe('the certificate cache', () => {
  it('the same DER gives the same parse; same issuer and serial with other bytes never does', () => {
    const real = leaf(77n);
    const forged = leaf(77n);
    const a = CertificateInfo.fromDer(real.der);
    expect(CertificateInfo.fromDer(new Uint8Array(real.der))).toBe(a);
    const f = CertificateInfo.fromDer(forged.der);
    expect(f.serialHex).toBe(a.serialHex);
    expect(Buffer.from(f.issuerDer).equals(Buffer.from(a.issuerDer))).toBe(true);
    expect(f).not.toBe(a);
    expect(Buffer.from(f.der).equals(Buffer.from(forged.der))).toBe(true);
    expect(Buffer.from(f.spkiDer).equals(Buffer.from(a.spkiDer))).toBe(false);
    expect(f.publicKey()!.export({ format: 'der', type: 'spki' }).equals(Buffer.from(a.spkiDer))).toBe(false);
    // Asked again in the other order, each still gets its own.
    expect(CertificateInfo.fromDer(forged.der)).toBe(f);
    expect(CertificateInfo.fromDer(real.der)).toBe(a);
  });

  it('keeps at most 512 certificates: the least recently used is parsed again', () => {
    const key = generateKey({ type: 'ec' });
    const first = leaf(1n, key);
    const a = CertificateInfo.fromDer(first.der);
    for (let i = 2n; i <= 513n; i++) CertificateInfo.fromDer(leaf(i, key).der);
    const again = CertificateInfo.fromDer(first.der);
    expect(again).not.toBe(a);
    expect(again.sha256).toBe(a.sha256);
  }, 60_000);
});
