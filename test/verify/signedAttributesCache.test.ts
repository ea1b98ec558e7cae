/**
 * Signer signatures over signed attributes are cached per Verifier by the signer certificate's exact
 * bytes and the exact attribute and signature bytes. A certificate that only looks like the signer
 * (same issuer name and serial number, other key), a signature changed in one byte, or attributes
 * changed in one byte never inherit a good result, in either order; the cache stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { sign, type KeyObject } from 'node:crypto';
import { Verifier } from '../../src/verify/verifier.js';
import { CertificateInfo } from '../../src/verify/chain/certificateInfo.js';
import { generateKey, issueCertificate, type IssuedCertificate } from '../../src/pki/certificateFactory.js';
import { parsePeLayout } from '../../src/verify/pe/peLayout.js';
import { parseCertificateTable } from '../../src/verify/pe/winCertificate.js';
import { AT, codes, fx, labPolicy } from '../support/fixtures.js';

const ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const NB = new Date('2025-01-01T00:00:00Z');
const NA = new Date('2030-01-01T00:00:00Z');

const ca = issueCertificate({
  subject: { CN: 'Attribute Cache Test CA' }, key: generateKey({ type: 'ec' }), notBefore: NB, notAfter: NA,
  extensions: { basicConstraints: { cA: true, critical: true }, keyUsage: { usages: ['keyCertSign'], critical: true } },
});
/** Leaves that share subject, issuer and serial number; only their keys (and so their bytes) differ. */
function twin(key: KeyObject): IssuedCertificate {
  return issueCertificate({
    subject: { CN: 'Publisher' }, key, issuer: ca, serialNumber: 0x1234567890n, notBefore: NB, notAfter: NA,
    extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
  });
}
const realKey = generateKey({ type: 'ec' });
const real = CertificateInfo.fromDer(twin(realKey).der);
const forged = CertificateInfo.fromDer(twin(generateKey({ type: 'ec' })).der);

/** A SET OF with one opaque attribute-like element: the check covers the bytes, whatever they say. */
function attributes(n: number): Uint8Array {
  const body = Buffer.alloc(8);
  body.writeUInt32BE(n, 4);
  return new Uint8Array(Buffer.concat([Buffer.from([0x31, 10, 0x04, 8]), body]));
}

const entries = (v: Verifier): number => (v as unknown as { signedAttributeChecks: { size: number } }).signedAttributeChecks.size;

describe('the signed-attributes signature cache', () => {
  it('a certificate with the signer\'s issuer and serial but another key never gets the signer\'s result, in either order', () => {
    expect(Buffer.from(forged.issuerDer).equals(Buffer.from(real.issuerDer))).toBe(true);
    expect(forged.serialHex).toBe(real.serialHex);
    expect(forged.sha256).not.toBe(real.sha256);
    const attrs = attributes(1);
    const sig = sign('sha256', attrs, realKey);
    for (const order of [[real, forged], [forged, real]]) {
      const v = new Verifier(labPolicy());
      for (let round = 0; round < 2; round++) {
        for (const cert of order) {
          const r = v.signedAttributesSignature(cert!, ECDSA_SHA256, attrs, sig, 'sha256');
          expect(r.ok).toBe(cert === real);
        }
      }
      expect(entries(v)).toBe(2);
    }
  });

  it('a signature or attributes changed in one byte are checked afresh, not served from the good entry', () => {
    const v = new Verifier(labPolicy());
    const attrs = attributes(2);
    const sig = sign('sha256', attrs, realKey);
    const good = v.signedAttributesSignature(real, ECDSA_SHA256, attrs, sig, 'sha256');
    expect(good.ok).toBe(true);
    // The same bytes again: the cached result itself (a hit), no new entry.
    expect(v.signedAttributesSignature(real, ECDSA_SHA256, new Uint8Array(attrs), new Uint8Array(sig), 'sha256')).toBe(good);
    expect(entries(v)).toBe(1);
    const badSig = new Uint8Array(sig);
    badSig[badSig.length - 1] ^= 1;
    expect(v.signedAttributesSignature(real, ECDSA_SHA256, attrs, badSig, 'sha256').ok).toBe(false);
    const badAttrs = new Uint8Array(attrs);
    badAttrs[badAttrs.length - 1] ^= 1;
    expect(v.signedAttributesSignature(real, ECDSA_SHA256, badAttrs, sig, 'sha256').ok).toBe(false);
    // Moving bytes between the attributes and the signature is another key too.
    const shifted = v.signedAttributesSignature(real, ECDSA_SHA256, attrs.subarray(0, attrs.length - 1), Buffer.concat([attrs.subarray(attrs.length - 1), sig]), 'sha256');
    expect(shifted.ok).toBe(false);
    // Another algorithm or digest over the same bytes: its own entry.
    expect(v.signedAttributesSignature(real, '1.2.840.10045.4.3.3', attrs, sig, 'sha384').ok).toBe(false);
    expect(entries(v)).toBe(5);
    expect(v.signedAttributesSignature(real, ECDSA_SHA256, attrs, sig, 'sha256')).toBe(good);
  });

  it('keeps at most 4096 entries, least recently used out first', () => {
    const v = new Verifier(labPolicy());
    const first = attributes(0);
    const firstSig = sign('sha256', first, realKey);
    const a = v.signedAttributesSignature(real, ECDSA_SHA256, first, firstSig, 'sha256');
    // The forged twin over the same bytes fails fast enough to fill the cache (no signing per entry).
    for (let i = 1; i <= 4096; i++) v.signedAttributesSignature(forged, ECDSA_SHA256, attributes(i), firstSig, 'sha256');
    expect(entries(v)).toBe(4096);
    const again = v.signedAttributesSignature(real, ECDSA_SHA256, first, firstSig, 'sha256');
    expect(again.ok).toBe(true);
    expect(again).not.toBe(a); // evicted, checked again
  }, 30_000);

  it('a PE whose signer signature differs in one byte is blocked by a Verifier that has the good one cached', () => {
    const good = Buffer.from(readFileSync(fx('good.exe')));
    const r = parsePeLayout(good, 1 << 20);
    if (r.kind !== 'layout') throw new Error('no layout');
    const der = parseCertificateTable(good.subarray(r.layout.certTableOffset, r.layout.certTableOffset + r.layout.certTableSize)).entries[0]!;
    const tampered = Buffer.from(good);
    tampered[good.indexOf(Buffer.from(der)) + der.length - 1] ^= 1; // the signer's signature value
    const v = new Verifier(labPolicy());
    const verify = (b: Buffer) => { const s = v.stream({ now: AT }); s.update(b); return s.finish(); };
    const before = verify(tampered);
    expect(before.verdict).toBe('block');
    expect(codes(before)).toContain('SIGNATURE_INVALID');
    expect(verify(good).verdict).toBe('allow');
    expect(verify(good).verdict).toBe('allow');
    const after = verify(tampered);
    expect(after.verdict).toBe('block');
    expect(codes(after)).toEqual(codes(before));
  });
});
