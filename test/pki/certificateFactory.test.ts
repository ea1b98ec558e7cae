import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createHash, createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pkijs from 'pkijs';
import {
  CertificateFactoryError,
  generateKey,
  ipSubtreeBytes,
  issueCertificate,
  parseCertificate,
  prepareIssuer,
  type IssuedCertificate,
} from '../../src/pki/certificateFactory.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-pki-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, c: IssuedCertificate | string): string {
  const p = join(dir, name);
  writeFileSync(p, typeof c === 'string' ? c : c.pem);
  return p;
}
function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}
const text = (c: IssuedCertificate) => openssl(['x509', '-in', file('t.pem', c), '-noout', '-text']).out;

/** The TBSCertificate bytes and signature of a DER certificate, as pkijs reads them back. */
function tbsAndSignature(der: Uint8Array): { tbs: Uint8Array; sig: Uint8Array; alg: string } {
  const c = pkijs.Certificate.fromBER(new Uint8Array(der));
  return { tbs: new Uint8Array(c.tbsView), sig: new Uint8Array(c.signatureValue.valueBlock.valueHexView), alg: c.signatureAlgorithm.algorithmId };
}

describe('certificate factory: lab oddities', () => {
  const rsaRoot = issueCertificate({
    subject: { CN: 'Lab Root Authority', O: 'Lab' },
    key: { type: 'rsa', bits: 2048 },
    extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign', 'cRLSign'] } },
  });

  it('an MD5-signed v1 certificate with no extensions: node parses it, openssl shows md5WithRSAEncryption and Version 1', () => {
    const ms = issueCertificate({
      subject: [{ type: 'CN', value: 'MS' }],
      key: { type: 'rsa', bits: 1024 },
      issuer: rsaRoot,
      version: 1,
      signatureHash: 'md5',
      notBefore: new Date('2010-02-19T22:45:17Z'),
      notAfter: new Date('2012-02-19T22:45:17Z'),
    });
    const x = new X509Certificate(ms.pem);
    expect(x.subject).toBe('CN=MS');
    expect(x.issuer).toBe('O=Lab\nCN=Lab Root Authority');
    expect(x.checkIssued(new X509Certificate(rsaRoot.pem))).toBe(true);
    const t = text(ms);
    expect(t).toMatch(/Version: 1 \(0x0\)/);
    expect(t).toMatch(/Signature Algorithm: md5WithRSAEncryption/);
    expect(t).not.toMatch(/X509v3 extensions/);
    expect(t).toMatch(/Not Before: Feb 19 22:45:17 2010 GMT/);
    expect(t).toMatch(/Public-Key: \(1024 bit\)/);
    // The MD5 signature is cryptographically valid under the issuer's key (what the lab must show).
    const { tbs, sig, alg } = tbsAndSignature(ms.der);
    expect(alg).toBe('1.2.840.113549.1.1.4');
    expect(cryptoVerify('md5', tbs, createPublicKey(rsaRoot.keyObject), sig)).toBe(true);
    // ... and the whole certificate passes openssl verify once MD5 is allowed (security level 0) and time is ignored.
    const v = openssl(['verify', '-auth_level', '0', '-no_check_time', '-CAfile', file('rsaroot.pem', rsaRoot), file('ms.pem', ms)]);
    expect(v.out).toMatch(/: OK/);
    // pkijs still reads it back.
    const back = parseCertificate(ms.pem);
    expect(back.version).toBe(0);
    expect(back.extensions).toBeUndefined();
  });

  it('a SHA-1 signed certificate shows sha1WithRSAEncryption', () => {
    const c = issueCertificate({ subject: { CN: 'Licensing Intermediate' }, issuer: rsaRoot, signatureHash: 'sha1', extensions: { basicConstraints: { cA: true } } });
    const t = text(c);
    expect(t).toMatch(/Signature Algorithm: sha1WithRSAEncryption/);
    expect(t).toMatch(/Version: 3 \(0x2\)/);
    const { tbs, sig } = tbsAndSignature(c.der);
    expect(cryptoVerify('sha1', tbs, createPublicKey(rsaRoot.keyObject), sig)).toBe(true);
  });

  it('refuses what cannot be made', () => {
    const ec = issueCertificate({ subject: { CN: 'ec' } });
    expect(() => issueCertificate({ subject: { CN: 'x' }, issuer: ec, signatureHash: 'md5' })).toThrow(CertificateFactoryError);
    expect(() => issueCertificate({ subject: { CN: 'x' }, version: 1, extensions: {} })).toThrow(/version 1/);
    expect(() => issueCertificate({ subject: { CN: 'x' }, issuer: { certificate: ec.pem, key: rsaRoot.keyObject } })).toThrow(/does not match/);
  });
});

describe('certificate factory: chains', () => {
  it('root → CA (EKU codeSigning) → leaf verifies with openssl verify, and keeps the extensions asked for', () => {
    const root = issueCertificate({
      subject: { C: 'US', O: 'Lab', CN: 'Lab Root' },
      key: { type: 'rsa', bits: 2048 },
      notBefore: new Date(Date.now() - 86_400_000),
      notAfter: new Date('2061-01-01T00:00:00Z'), // GeneralizedTime from 2050
      extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign', 'cRLSign'] } },
    });
    const ca = issueCertificate({
      subject: { O: 'Lab', CN: 'Lab Code Signing PCA' },
      key: { type: 'ec' },
      issuer: root,
      extensions: {
        basicConstraints: { cA: true, pathLen: 0 },
        keyUsage: { usages: ['keyCertSign', 'cRLSign', 'digitalSignature'] },
        extendedKeyUsage: { purposes: ['codeSigning'] },
      },
    });
    const leaf = issueCertificate({
      subject: { O: 'Lab', CN: 'Lab Update Signer' },
      key: { type: 'rsa', bits: 2048 },
      issuer: prepareIssuer({ certificate: ca.der, key: ca.keyObject }),
      extensions: {
        basicConstraints: { cA: false },
        keyUsage: { usages: ['digitalSignature'] },
        extendedKeyUsage: { purposes: ['codeSigning', '1.3.6.1.4.1.311.10.3.6'] },
      },
    });
    const v = openssl(['verify', '-CAfile', file('root.pem', root), '-untrusted', file('ca.pem', ca), file('leaf.pem', leaf)]);
    expect(v.out).toMatch(/leaf\.pem: OK/);
    expect(v.status).toBe(0);

    const rootX = new X509Certificate(root.pem);
    const caX = new X509Certificate(ca.pem);
    const leafX = new X509Certificate(leaf.pem);
    expect(caX.checkIssued(rootX)).toBe(true);
    expect(leafX.checkIssued(caX)).toBe(true);
    expect(leafX.verify(caX.publicKey)).toBe(true);
    expect(caX.keyUsage).toEqual(['1.3.6.1.5.5.7.3.3']);
    expect(leafX.keyUsage).toEqual(['1.3.6.1.5.5.7.3.3', '1.3.6.1.4.1.311.10.3.6']);
    expect(rootX.keyUsage).toBeUndefined(); // no EKU extension at all
    expect(rootX.validTo).toBe('Jan  1 00:00:00 2061 GMT');

    const t = text(ca);
    expect(t).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    expect(t).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(t).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(t).toMatch(/Extended Key Usage:\s*\n\s+Code Signing\n/);
    // SKI = SHA-1 of the subjectPublicKey bits; AKI of the leaf = SKI of its issuer.
    const caSki = /Subject Key Identifier:\s*\n\s+([0-9A-F:]+)/.exec(t)?.[1];
    const spki = createPublicKey(ca.keyObject).export({ type: 'spki', format: 'der' });
    const point = spki.subarray(spki.length - 65);
    expect(caSki?.replace(/:/g, '').toLowerCase()).toBe(createHash('sha1').update(point).digest('hex'));
    expect(text(leaf)).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${caSki}`));
    expect(text(leaf)).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
  });

  it('serial numbers are positive, 16 bytes, random', () => {
    const serials = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const x = new X509Certificate(issueCertificate({ subject: { CN: 's' } }).pem);
      expect(x.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
      serials.add(x.serialNumber);
    }
    expect(serials.size).toBe(50);
    // 0x80 needs a leading zero byte to stay positive (node's serialNumber hides it; pkijs shows the INTEGER bytes).
    const s80 = parseCertificate(issueCertificate({ subject: { CN: 's' }, serialNumber: 0x80n }).pem).serialNumber;
    expect(Buffer.from(s80.valueBlock.valueHexView).toString('hex')).toBe('0080');
    const s7f = parseCertificate(issueCertificate({ subject: { CN: 's' }, serialNumber: new Uint8Array([0, 0, 0x7f]) }).pem).serialNumber;
    expect(Buffer.from(s7f.valueBlock.valueHexView).toString('hex')).toBe('7f');
  });

  it('SAN and name constraints carry DNS names and IP addresses (v4 and v6)', () => {
    const ca = issueCertificate({
      subject: { CN: 'nc' },
      extensions: {
        basicConstraints: { cA: true },
        keyUsage: { usages: ['keyCertSign'] },
        nameConstraints: { permitted: { dns: ['example.org'], ip: ['10.0.0.0/8', '2001:db8::/32'] }, excluded: { dns: ['bad.example.org'] } },
      },
    });
    const t = text(ca);
    expect(t).toMatch(/Permitted:\s+DNS:example\.org\s+IP:10\.0\.0\.0\/255\.0\.0\.0\s+IP:2001:DB8:0:0:0:0:0:0\/FFFF:FFFF:0:0:0:0:0:0\s+Excluded:\s+DNS:bad\.example\.org/);
    const leaf = (dns: string[], ip: string[]) =>
      issueCertificate({ subject: { CN: 'l' }, key: generateKey(), issuer: ca, extensions: { subjectAltName: { dns, ip } } });
    const ok = leaf(['www.example.org'], ['10.1.2.3', '2001:db8:1::1']);
    expect(text(ok)).toMatch(/DNS:www\.example\.org, IP Address:10\.1\.2\.3, IP Address:2001:DB8:1:0:0:0:0:1/);
    const caFile = file('nc.pem', ca);
    expect(openssl(['verify', '-CAfile', caFile, file('ok.pem', ok)]).status).toBe(0);
    expect(openssl(['verify', '-CAfile', caFile, file('bad1.pem', leaf(['x.bad.example.org'], []))]).out).toMatch(/excluded subtree violation/);
    expect(openssl(['verify', '-CAfile', caFile, file('bad2.pem', leaf([], ['2001:db9::1']))]).out).toMatch(/permitted subtree violation/);
    expect(Buffer.from(ipSubtreeBytes('192.168.1.77/24')).toString('hex')).toBe('c0a80100ffffff00');
  });
});
