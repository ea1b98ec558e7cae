/**
 * Bytes the signatures do not cover must not change what the verifier concludes: a distrusted
 * certificate re-encoded (non-DER lengths, a changed outer signatureAlgorithm, an ECDSA s -> n-s
 * twin) is still distrusted or refused; unsigned CAB header bytes are held to their only values.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as asn1js from 'asn1js';
import { pinCertificateFile, readDistrustFile } from '../../src/policy/trustMaterial.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { CertificateInfo } from '../../src/verify/chain/certificateInfo.js';
import { parseStrictDer } from '../../src/verify/cms/strictDer.js';
import { AT, codes, fx, labPolicy, pki } from '../support/fixtures.js';

const good = () => Buffer.from(readFileSync(fx('good.exe')));
const derOf = (pemPath: string) => Buffer.from(readFileSync(pemPath, 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64');

describe('a distrusted certificate cannot be re-encoded past the distrust list', () => {
  const distrust = () => new Set(readDistrustFile(fx('distrust-updateca.txt')));
  const rootPinned = () => labPolicy({ anchors: pinCertificateFile(pki('root')), distrust: distrust() });

  it('the Update CA inside good.exe is found and distrusted as is', () => {
    expect(codes(verifyBytes(good(), rootPinned(), { now: AT }))).toEqual(['DISTRUSTED_CERT']);
  });
  it('changing the outer signatureAlgorithm NULL of the Update CA is refused (not an allow)', () => {
    const b = good();
    const ca = derOf(pki('updateca'));
    const at = b.indexOf(ca);
    expect(at).toBeGreaterThan(0);
    // The outer AlgorithmIdentifier is the last SEQUENCE before the signature BIT STRING: find its NULL.
    const sigAlg = Buffer.from('300d06092a864886f70d01010b0500', 'hex');
    const outerAlgAt = b.lastIndexOf(sigAlg, at + ca.length);
    expect(outerAlgAt).toBeGreaterThan(at);
    b[outerAlgAt + 13] = 0x04; // NULL -> empty OCTET STRING: same length, unsigned bytes
    const v = verifyBytes(b, rootPinned(), { now: AT });
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['MALFORMED']);
  });
  it('a non-minimal length inside the signature is refused as not DER', () => {
    expect(() => parseStrictDer(Buffer.from('3081030201' + '01', 'hex'), 'x')).toThrow(/non-minimal/);
    expect(() => parseStrictDer(Buffer.from('30030203010203', 'hex'), 'x')).toThrow(/DER|after|overruns/);
    expect(() => parseStrictDer(Buffer.from('3080020101' + '0000', 'hex'), 'x')).toThrow(/indefinite/);
  });
  it('nesting bombs are refused before parsing', () => {
    const depth = 5000;
    const bomb = Buffer.concat([Buffer.alloc(depth * 2).fill(Buffer.from([0x30, 0x80])), Buffer.alloc(depth * 2)]);
    expect(() => parseStrictDer(bomb, 'x')).toThrow(/indefinite|deeper/);
    let nested = Buffer.from([0x05, 0x00]);
    for (let i = 0; i < 200; i++) nested = Buffer.concat([Buffer.from([0x30, nested.length < 128 ? nested.length : 0x81]), nested.length < 128 ? Buffer.alloc(0) : Buffer.from([nested.length]), nested].slice(0, 3)) as Buffer;
    expect(() => parseStrictDer(nested, 'x')).toThrow();
  });
  it('an ECDSA-signed certificate is distrusted under its s -> n-s twin too (ECDSA malleability)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-ec-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=ecdsa-signed',
        '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '30'], { stdio: 'ignore' });
      const der = derOf(join(dir, 'c.pem'));
      const original = new CertificateInfo(new Uint8Array(der));
      // Build the twin: same tbsCertificate and algorithm, signature (r, n - s).
      const outer = asn1js.fromBER(der).result as asn1js.Sequence;
      const [tbs, alg, bits] = outer.valueBlock.value as [asn1js.Sequence, asn1js.Sequence, asn1js.BitString];
      const sig = asn1js.fromBER(bits.valueBlock.valueHexView).result as asn1js.Sequence;
      const [r, sv] = sig.valueBlock.value as asn1js.Integer[];
      const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
      const twinSig = new asn1js.Sequence({ value: [asn1js.Integer.fromBigInt(r!.toBigInt()), asn1js.Integer.fromBigInt(n - sv!.toBigInt())] }).toBER(false);
      const twinDer = new Uint8Array(new asn1js.Sequence({ value: [tbs, alg, new asn1js.BitString({ valueHex: twinSig, unusedBits: 0 })] }).toBER(false));
      const twin = new CertificateInfo(twinDer);
      expect(twin.sha256).not.toBe(original.sha256);
      // The twin is a valid signature too (that is the attack): node verifies it against the same key.
      const key = createPublicKey(readFileSync(join(dir, 'c.pem')));
      expect(new X509Certificate(Buffer.from(twinDer)).verify(key)).toBe(true);
      // Distrusting the original's fingerprint catches the twin, and the other way round.
      expect(twin.distrustFingerprints()).toContain(original.sha256);
      expect(original.distrustFingerprints()).toContain(twin.sha256);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('CAB header bytes outside the digest', () => {
  it('reserved1 must be zero', () => {
    const b = Buffer.from(readFileSync(fx('good.cab')));
    expect(verifyBytes(b, labPolicy(), { now: AT }).verdict).toBe('allow');
    b[5] = 1;
    expect(codes(verifyBytes(b, labPolicy(), { now: AT }))).toEqual(['MALFORMED']);
  });
  it('the signature locator keeps its canonical form', () => {
    const b = Buffer.from(readFileSync(fx('good.cab')));
    b[41] ^= 0xff;
    expect(codes(verifyBytes(b, labPolicy(), { now: AT }))).toEqual(['MALFORMED']);
  });
});

describe('chunks are copied while sniffing', () => {
  it('a caller that reuses a small buffer still gets the right verdict', async () => {
    const { IncrementalVerifier } = await import('../../src/verify/incrementalVerifier.js');
    const bytes = good();
    const v = new IncrementalVerifier(labPolicy(), { now: AT });
    const buf = Buffer.alloc(4);
    for (let i = 0; i < bytes.length; i += 4) {
      const n = bytes.copy(buf, 0, i, i + 4);
      v.update(buf.subarray(0, n));
    }
    expect(v.finish().verdict).toBe('allow');
  });
});

void createHash; void asn1js;
