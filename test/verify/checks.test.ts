/**
 * Every policy check of the core, each against a fixture made by test/fixtures/make-fixtures.sh.
 * Each test names the reason code the check produces, so removing the check fails the test.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { pinCertificateFile, readDistrustFile } from '../../src/policy/trustMaterial.js';
import { verifyBuffer, verifyBytes, IncrementalVerifier } from '../../src/verify/incrementalVerifier.js';
import { AT, codes, fx, labPolicy, manifest, pki, verifyFixture } from '../support/fixtures.js';

describe('accepted payloads (the lab Update CA pinned)', () => {
  it.each(['good', 'good64', 'good-cab', 'ec', 'nested-good', 'payload'])('%s is allowed', (name) => {
    const v = verifyFixture(name);
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.signer?.subject).toMatch(/Publisher/);
    expect(v.chain?.at(-1)?.subject).toMatch(/Update CA/);
  });

  it('reports the format sniffed from the bytes and the SHA-256 of the whole payload', () => {
    const v = verifyFixture('good');
    expect(v.format).toBe('pe');
    expect(verifyFixture('good-cab').format).toBe('cab');
    expect(verifyFixture('payload').format).toBe('cms-detached');
    const { createHash } = require('node:crypto') as typeof import('node:crypto');
    expect(v.sha256).toBe(createHash('sha256').update(readFileSync(fx('good.exe'))).digest('hex'));
    expect(v.digest?.expected).toBe(v.digest?.actual);
  });
});

describe('the file digest comes first', () => {
  it('DIGEST_MISMATCH: one code byte flipped after signing', () => {
    const v = verifyFixture('tampered');
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['DIGEST_MISMATCH']);
    expect(v.digest?.expected).not.toBe(v.digest?.actual);
  });
  it('DIGEST_MISMATCH: a CAB data byte flipped', () => {
    expect(codes(verifyFixture('tampered-cab'))).toEqual(['DIGEST_MISMATCH']);
  });
  it('DIGEST_MISMATCH: detached content changed', () => {
    expect(codes(verifyFixture('payload-tampered'))).toEqual(['DIGEST_MISMATCH']);
  });
  it('a good chain never stands in for a changed file: the tampered file keeps its valid chain yet blocks', () => {
    const v = verifyFixture('tampered');
    expect(v.chain?.at(-1)?.subject).toMatch(/Update CA/);
    expect(v.verdict).toBe('block');
  });
});

describe('chain to a pinned anchor', () => {
  it('UNTRUSTED_ROOT: a complete chain under a rogue root', () => {
    expect(codes(verifyFixture('rogue'))).toEqual(['UNTRUSTED_ROOT']);
    expect(codes(verifyFixture('payload-rogue'))).toEqual(['UNTRUSTED_ROOT']);
  });
  it('the rogue chain is allowed only when its own CA is pinned (the check is the pin, nothing else)', () => {
    const v = verifyFixture('rogue', labPolicy({ anchors: pinCertificateFile(pki('rogueca')) }));
    expect(v.verdict).toBe('allow');
  });
  it('Flame: licensing intermediate without codeSigning, MD5-signed leaf without extensions', () => {
    const v = verifyFixture('flame');
    expect(codes(v)).toEqual(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM']);
    expect(v.reasons.find((r) => r.code === 'WEAK_ALGORITHM')?.message).toMatch(/MD5/);
  });
  it('Flame still blocks when the vendor ROOT is pinned (the pre-2012 rule), on EKU and MD5', () => {
    const v = verifyFixture('flame', labPolicy({ anchors: pinCertificateFile(pki('root')) }));
    expect(codes(v)).toEqual(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM']);
    expect(v.reasons.some((r) => r.code === 'NO_CODESIGN_EKU' && /Licensing/.test(r.message))).toBe(true);
  });
  it('Flame detached CMS blocks too', () => {
    expect(codes(verifyFixture('payload-flame'))).toContain('UNTRUSTED_ROOT');
    expect(codes(verifyFixture('payload-flame', labPolicy({ anchors: pinCertificateFile(pki('root')) })))).toEqual(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM']);
  });
  it('a pin is the whole certificate: a different certificate with the same name and key does not match', () => {
    // The rogue CA has a different name; the real test of "whole certificate" is that only the sha256 of the DER is compared.
    const pins = pinCertificateFile(pki('updateca'));
    const wrong = pins.map((p) => ({ ...p, sha256: p.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0')), der: undefined }));
    expect(verifyFixture('good', labPolicy({ anchors: wrong })).verdict).toBe('block');
  });
  it('a fingerprint-only anchor matches a certificate the signature carries', () => {
    const [pin] = pinCertificateFile(pki('updateca'));
    expect(verifyFixture('good', labPolicy({ anchors: [{ sha256: pin!.sha256, label: 'fp' }] })).verdict).toBe('allow');
  });
  it('a fingerprint-only ROOT anchor cannot be reached when the signature does not carry the root', () => {
    const [pin] = pinCertificateFile(pki('root'));
    expect(codes(verifyFixture('good', labPolicy({ anchors: [{ sha256: pin!.sha256, label: 'fp' }] })))).toEqual(['UNTRUSTED_ROOT']);
  });
  it('a PEM root anchor supplies the certificate the signature lacks', () => {
    expect(verifyFixture('good', labPolicy({ anchors: pinCertificateFile(pki('root')) })).verdict).toBe('allow');
  });
});

describe('EKU along the chain', () => {
  it('NO_CODESIGN_EKU: leaf without an EKU extension', () => {
    expect(codes(verifyFixture('noeku'))).toEqual(['NO_CODESIGN_EKU']);
  });
  it('NO_CODESIGN_EKU: leaf restricted to serverAuth', () => {
    expect(codes(verifyFixture('serverauth'))).toEqual(['NO_CODESIGN_EKU']);
  });
  it('strict: an intermediate CA without an EKU extension blocks (how Flame passed)', () => {
    const v = verifyFixture('noekuca', labPolicy({ anchors: pinCertificateFile(pki('root')) }));
    expect(codes(v)).toEqual(['NO_CODESIGN_EKU']);
    expect(v.ekuMode).toBe('strict');
  });
  it('nested (Windows) semantics accept that CA, and the verdict says which mode was used', () => {
    const v = verifyFixture('noekuca', labPolicy({ anchors: pinCertificateFile(pki('root')), ekuMode: 'nested' }));
    expect(v.verdict).toBe('allow');
    expect(v.ekuMode).toBe('nested');
  });
  it('nested semantics still refuse a leaf whose EKU excludes codeSigning', () => {
    expect(codes(verifyFixture('serverauth', labPolicy({ ekuMode: 'nested' })))).toEqual(['NO_CODESIGN_EKU']);
  });
  it('pinning the issuing CA itself (the 2012 fix) needs no EKU on anything above it', () => {
    expect(verifyFixture('noekuca', labPolicy({ anchors: pinCertificateFile(pki('noekuca')) })).verdict).toBe('allow');
  });
});

describe('basic constraints and key usage', () => {
  it('BASIC_CONSTRAINTS: a certificate that is not a CA issued the leaf', () => {
    expect(codes(verifyFixture('notaca'))).toEqual(['BASIC_CONSTRAINTS']);
  });
});

describe('algorithms', () => {
  it('WEAK_ALGORITHM: MD5 file digest', () => {
    const v = verifyFixture('md5-digest');
    expect(codes(v)).toEqual(['WEAK_ALGORITHM']);
    expect(v.reasons.map((r) => r.message).join()).toMatch(/file digest uses MD5/);
  });
  it('WEAK_ALGORITHM: SHA-1 file digest refused by default, accepted with allowSha1', () => {
    expect(codes(verifyFixture('sha1-digest'))).toEqual(['WEAK_ALGORITHM']);
    expect(verifyFixture('sha1-digest', labPolicy({ allowSha1: true })).verdict).toBe('allow');
  });
  it('WEAK_ALGORITHM: SHA-1-signed certificate refused by default, accepted with allowSha1', () => {
    expect(codes(verifyFixture('sha1-cert'))).toEqual(['WEAK_ALGORITHM']);
    expect(verifyFixture('sha1-cert', labPolicy({ allowSha1: true })).verdict).toBe('allow');
  });
  it('MD5 stays refused even when SHA-1 is allowed', () => {
    expect(codes(verifyFixture('md5-digest', labPolicy({ allowSha1: true })))).toEqual(['WEAK_ALGORITHM']);
    expect(codes(verifyFixture('flame', labPolicy({ allowSha1: true, anchors: pinCertificateFile(pki('root')) })))).toContain('WEAK_ALGORITHM');
  });
  it('WEAK_ALGORITHM: RSA keys below the minimum', () => {
    expect(codes(verifyFixture('good', labPolicy({ minRsaBits: 3072 })))).toEqual(['WEAK_ALGORITHM']);
  });
  it('EXPLICIT_CURVE: an EC key with explicit parameters (CVE-2020-0601) is refused', () => {
    expect(codes(verifyFixture('ec-explicit'))).toEqual(['EXPLICIT_CURVE']);
  });
});

describe('time and timestamps', () => {
  it('CERT_EXPIRED: expired leaf, no timestamp', () => {
    expect(codes(verifyFixture('expired'))).toEqual(['CERT_EXPIRED']);
  });
  it('an RFC 3161 timestamp from a pinned TSA proves the signing time', () => {
    const v = verifyFixture('expired-ts');
    expect(v.verdict).toBe('allow');
    expect(v.timestamp?.time).toBe('2020-06-01T00:00:00.000Z');
    expect(v.verifiedAt).toBe('2020-06-01T00:00:00.000Z');
  });
  it('an Authenticode (legacy) countersignature proves it too', () => {
    const v = verifyFixture('expired-ts-legacy');
    expect(v.verdict).toBe('allow');
    expect(v.timestamp?.time).toBe('2020-06-01T00:00:00.000Z');
  });
  it('a timestamp is worthless without a pinned TSA anchor', () => {
    const v = verifyFixture('expired-ts', labPolicy({ tsaAnchors: [] }));
    expect(codes(v)).toContain('CERT_EXPIRED');
    expect(v.reasons.some((r) => /timestamp: .*(not pinned|no pinned anchor)/.test(r.message))).toBe(true);
  });
  it('a TSA certificate without the timeStamping EKU does not rescue an expired signature', () => {
    const v = verifyFixture('expired-badtsa');
    expect(codes(v)).toContain('CERT_EXPIRED');
    expect(v.reasons.some((r) => r.code === 'NO_CODESIGN_EKU' && /timestamp/.test(r.message))).toBe(true);
  });
  it('a lifetime-signing leaf is not rescued by a timestamp', () => {
    const v = verifyFixture('lifetime-ts');
    expect(codes(v)).toEqual(['CERT_EXPIRED']);
    expect(v.reasons.some((r) => /lifetime-signing/.test(r.message))).toBe(true);
  });
  it('--at moves the verification time: the good signature is not yet valid in 2018', () => {
    expect(codes(verifyFixture('good', labPolicy(), new Date('2018-01-01T00:00:00Z')))).toEqual(['CERT_EXPIRED']);
  });
  it('a timestamp claiming a time after "now" is not accepted', () => {
    const v = verifyFixture('expired-ts', labPolicy(), new Date('2020-05-01T00:00:00Z'));
    expect(v.timestamp).toBeUndefined();
  });
  it('good-ts (timestamped now by the pinned TSA) is allowed and reports its timestamp', () => {
    const v = verifyFixture('good-ts');
    expect(v.verdict).toBe('allow');
    expect(v.timestamp?.authority).toMatch(/TSA/);
  });
});

describe('distrust list', () => {
  it('DISTRUSTED_CERT beats a pinned anchor', () => {
    const f = manifest().fixtures['distrusted']!;
    const distrust = new Set(readDistrustFile(fx(f.distrust!)));
    const v = verifyFixture('distrusted', labPolicy({ distrust }));
    expect(codes(v)).toEqual(['DISTRUSTED_CERT']);
  });
});

describe('the certificate table and file structure', () => {
  it('TRAILING_DATA: bytes appended after the certificate table', () => {
    expect(codes(verifyFixture('appended'))).toEqual(['TRAILING_DATA']);
  });
  it('TRAILING_DATA: padding hidden inside WIN_CERTIFICATE (CVE-2013-3900)', () => {
    expect(codes(verifyFixture('padded'))).toEqual(['TRAILING_DATA']);
  });
  it('MALFORMED: truncated inside the signature', () => {
    expect(codes(verifyFixture('truncated'))).toEqual(['MALFORMED']);
  });
  it('NOT_SIGNED: unsigned PE and CAB', () => {
    expect(codes(verifyFixture('unsigned'))).toEqual(['NOT_SIGNED']);
    expect(codes(verifyFixture('unsigned-cab'))).toEqual(['NOT_SIGNED']);
  });
  it('UNSUPPORTED_FORMAT: a non-PE blob named .exe', () => {
    const v = verifyFixture('notpe');
    expect(codes(v)).toEqual(['UNSUPPORTED_FORMAT']);
    expect(v.format).toBe('unknown');
  });
  it('MALFORMED: an OLE compound file (MSI) with nothing valid after its magic, read at random after the last byte', async () => {
    const ole = Buffer.alloc(4096);
    Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]).copy(ole);
    const v = await verifyBuffer(ole, labPolicy(), { now: AT });
    expect(v.format).toBe('msi');
    expect(codes(v)).toEqual(['MALFORMED']);
    // The streaming-only entry point cannot verify it, and says so (never an allow).
    expect(codes(verifyBytes(ole, labPolicy(), { now: AT }))).toEqual(['INTERNAL_ERROR']);
  });
  it('NOT_SIGNED: empty payload; MALFORMED: a payload that ends inside its headers', () => {
    expect(codes(verifyBytes(new Uint8Array(0), labPolicy(), { now: AT }))).toEqual(['NOT_SIGNED']);
    expect(codes(verifyBytes(readFileSync(fx('good.exe')).subarray(0, 100), labPolicy(), { now: AT }))).toEqual(['MALFORMED']);
  });
  it('OVERSIZE: a signature larger than the limit; a payload larger than the limit', () => {
    const tiny = labPolicy();
    tiny.limits = { ...tiny.limits, maxSignatureBytes: 1024 };
    expect(codes(verifyFixture('good', tiny))).toEqual(['OVERSIZE']);
    const small = labPolicy();
    small.limits = { ...small.limits, maxPayloadBytes: 4096 };
    expect(codes(verifyFixture('good', small))).toEqual(['OVERSIZE']);
  });
  it('a bad detached signature file is MALFORMED, never an allow', () => {
    const v = verifyBytes(readFileSync(fx('payload.bin')), labPolicy(), { now: AT, detachedSignature: new Uint8Array([0x30, 0x03, 1, 2, 3]) });
    expect(codes(v)).toEqual(['MALFORMED']);
  });
});

describe('several signatures in one file', () => {
  it('primary (default): a forged nested signature does not matter, a forged primary blocks', () => {
    expect(verifyFixture('nested-forged-inner').verdict).toBe('allow');
    const outer = verifyFixture('nested-forged-outer');
    expect(outer.verdict).toBe('block');
    expect(outer.signatures?.length).toBe(2);
    expect(outer.signatures?.[1]?.verdict).toBe('allow');
  });
  it('all: every signature must pass', () => {
    const p = labPolicy({ signatureMode: 'all' });
    expect(verifyFixture('nested-good', p).verdict).toBe('allow');
    expect(verifyFixture('nested-forged-inner', p).verdict).toBe('block');
    expect(verifyFixture('nested-forged-inner', p).reasons[0]?.message).toMatch(/^signature #1/);
    expect(verifyFixture('nested-forged-outer', p).verdict).toBe('block');
  });
  it('best: the strongest file digest decides (SHA-384 nested over SHA-256 primary)', () => {
    const v = verifyFixture('nested-good', labPolicy({ signatureMode: 'best' }));
    expect(v.verdict).toBe('allow');
    expect(v.digest?.algorithm).toBe('sha384');
    expect(v.signer?.subject).toMatch(/ECDSA/);
  });
  it('best: a SHA-1 primary with a SHA-256 nested signature is decided by the SHA-256 one', () => {
    const f = manifest().fixtures['nested-sha1']!;
    expect(f).toBeDefined();
    const v = verifyFixture('nested-sha1', labPolicy({ signatureMode: 'best' }));
    expect(v.digest?.algorithm).not.toBe('sha1');
  });
  it('whatever the mode, a signature whose file digest does not match never allows', () => {
    // tampered.exe's only signature is intact cryptographically but its file digest does not match.
    for (const signatureMode of ['primary', 'best', 'all'] as const) {
      expect(verifyFixture('tampered', labPolicy({ signatureMode })).verdict).toBe('block');
    }
  });
});

describe('streaming', () => {
  it('gives the same verdict whatever the chunking (1-byte, odd sizes, one buffer)', () => {
    for (const name of ['good', 'good-cab', 'tampered', 'padded', 'appended']) {
      const f = manifest().fixtures[name]!;
      const bytes = readFileSync(fx(f.file));
      const whole = verifyBytes(bytes, labPolicy(), { now: AT });
      for (const size of [1, 7, 333, 4096]) {
        const v = new IncrementalVerifier(labPolicy(), { now: AT });
        for (let i = 0; i < bytes.length; i += size) v.update(bytes.subarray(i, i + size));
        const r = v.finish();
        expect({ name, size, verdict: r.verdict, codes: codes(r), sha256: r.sha256 }).toEqual({ name, size, verdict: whole.verdict, codes: codes(whole), sha256: whole.sha256 });
      }
    }
  });
});
