/**
 * ASN.1 bombs against the core, each inside a real container (a PE's certificate table, a CAB's
 * signature area, a detached signature) so that the whole path from bytes to Verdict is exercised:
 * nesting thousands deep (definite and indefinite), lengths of 2^31, 2^32-1, 2^64-1 and 2^32 in five
 * octets, indefinite lengths inside a real signature, a 16 MiB blob of tiny elements, certificate
 * bags with thousands of certificates, a deep nest inside a certificate extension, and issuer
 * chains that loop. Each must block (MALFORMED, or UNTRUSTED_ROOT for a well-formed loop) quickly
 * and with bounded memory; none may throw.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import * as asn1js from 'asn1js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import type { Verdict } from '../../src/verify/verdict.js';
import { embedPeSignature, signPe } from '../../src/lab/authenticodeSigner.js';
import { issueCertificate, generateKey, type IssuedCertificate } from '../../src/pki/certificateFactory.js';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { AT, codes, fx, labPolicy, pki } from '../support/fixtures.js';
import { mapFile, outline } from './lib/regions.mjs';

const MiB = 1024 * 1024;
const TIME_BOUND_MS = 3000;
const MEMORY_BOUND = 400 * MiB;
const unsigned = () => new Uint8Array(readFileSync(fx('unsigned.exe')));
const der = (name: string) => new Uint8Array(new X509Certificate(readFileSync(pki(name))).raw);

function len(n: number): number[] {
  if (n < 0x80) return [n];
  const b: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) b.unshift(v % 256);
  return [0x80 | b.length, ...b];
}
const cat = (...parts: (Uint8Array | number[])[]) => new Uint8Array(Buffer.concat(parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)))));
const tlv = (tag: number, body: Uint8Array) => cat([tag, ...len(body.length)], body);
/** `depth` nested definite-length elements around `inner`, built in one buffer (linear time). */
function nest(depth: number, tag: number, inner: Uint8Array): Uint8Array {
  const sizes: number[] = [inner.length];
  for (let i = 0; i < depth; i++) sizes.push(sizes[i]! + 1 + len(sizes[i]!).length);
  const out = new Uint8Array(sizes[depth]!);
  let at = 0;
  for (let i = depth - 1; i >= 0; i--) {
    const l = len(sizes[i]!);
    out[at++] = tag;
    out.set(l, at);
    at += l.length;
  }
  out.set(inner, at);
  return out;
}
const SIGNED_DATA_OID = Uint8Array.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);

/** Verifies, timing it and watching memory; asserts the bounds and that it never throws. */
function bounded(bytes: Uint8Array, opts: { detachedSignature?: Uint8Array; policy?: ReturnType<typeof labPolicy> } = {}): Verdict & { ms: number } {
  const before = process.memoryUsage();
  const t0 = performance.now();
  let v: Verdict | undefined;
  expect(() => { v = verifyBytes(bytes, opts.policy ?? labPolicy(), { now: AT, detachedSignature: opts.detachedSignature }); }).not.toThrow();
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  expect(ms, 'time bound').toBeLessThan(TIME_BOUND_MS);
  expect(after.rss - before.rss, 'RSS growth').toBeLessThan(MEMORY_BOUND);
  expect(v!.verdict).toBe('block');
  expect(v!.reasons.length).toBeGreaterThan(0);
  return { ...v!, ms };
}

const inPe = (blob: Uint8Array) => embedPeSignature(unsigned(), blob);

describe('nesting bombs', () => {
  it('10,000 levels of indefinite-length SEQUENCE as the signature: MALFORMED', () => {
    const depth = 10_000;
    const bomb = new Uint8Array(depth * 4);
    for (let i = 0; i < depth; i++) { bomb[2 * i] = 0x30; bomb[2 * i + 1] = 0x80; }
    expect(codes(bounded(inPe(bomb)))).toEqual(['MALFORMED']);
  });

  it('10,000 levels of definite-length SEQUENCE (and SET, and [0]) as the signature: MALFORMED', () => {
    for (const tag of [0x30, 0x31, 0xa0]) {
      expect(codes(bounded(inPe(nest(10_000, tag, Uint8Array.from([0x05, 0x00])))))).toEqual(['MALFORMED']);
    }
  });

  it('a ContentInfo whose SignedData holds a 5,000-deep nest where the certificates go: MALFORMED', () => {
    const deep = nest(5000, 0x30, Uint8Array.from([0x05, 0x00]));
    const sd = tlv(0x30, cat([0x02, 0x01, 0x01], tlv(0x31, new Uint8Array()), tlv(0x30, Uint8Array.from([0x06, 0x03, 0x2a, 0x03, 0x04])), tlv(0xa0, deep), tlv(0x31, new Uint8Array())));
    const ci = tlv(0x30, cat(SIGNED_DATA_OID, tlv(0xa0, sd)));
    expect(codes(bounded(inPe(ci)))).toEqual(['MALFORMED']);
    expect(codes(bounded(new Uint8Array(readFileSync(fx('payload.bin'))), { detachedSignature: ci }))).toEqual(['MALFORMED']);
  });

  it('a certificate whose EKU extension value is a 3,000-deep nest (inside an OCTET STRING, so no outer scan sees it): MALFORMED', () => {
    const deep = nest(3000, 0x30, Uint8Array.from([0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03]));
    const ca = issueCertificate({ subject: { CN: 'bomb CA' }, extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign'] }, extendedKeyUsage: { purposes: ['codeSigning'] } } });
    const leaf = issueCertificate({
      subject: { CN: 'bomb leaf' }, issuer: ca,
      extensions: { keyUsage: { usages: ['digitalSignature'] }, extra: [new pkijs.Extension({ extnID: '2.5.29.37', critical: false, extnValue: deep.slice().buffer as ArrayBuffer })] },
    });
    const pe = signPe(unsigned(), { signerCertDer: leaf.der, signerKey: leaf.keyObject, extraCertsDer: [ca.der] });
    const v = bounded(pe, { policy: labPolicy({ anchors: [{ sha256: new X509Certificate(Buffer.from(ca.der)).fingerprint256.replace(/:/g, '').toLowerCase(), der: ca.der, label: 'bomb CA' }] }) });
    expect(codes(v)).toContain('MALFORMED');
  });
});

describe('length bombs', () => {
  const lies: [string, number[]][] = [
    ['2^31', [0x84, 0x80, 0x00, 0x00, 0x00]],
    ['2^32-1', [0x84, 0xff, 0xff, 0xff, 0xff]],
    ['2^32 in five octets', [0x85, 0x01, 0x00, 0x00, 0x00, 0x00]],
    ['2^64-1 in eight octets', [0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    ['2^1000-ish in 127 octets', [0xff, ...new Array(127).fill(0xff)]],
    ['indefinite', [0x80]],
  ];
  const good = new Uint8Array(readFileSync(fx('good.exe')));
  const map = mapFile(good);
  const nodes = outline(good, map.blobs[0].start) as { start: number; hdrEnd: number; end: number; path: string }[];
  const elements = ['ContentInfo', 'ContentInfo.content.SignedData', 'ContentInfo.content.SignedData.certificates', 'ContentInfo.content.SignedData.certificates.[0]',
    'ContentInfo.content.SignedData.signerInfos.[0].signedAttrs', 'ContentInfo.content.SignedData.signerInfos.[0].signature'];

  for (const [what, bytes] of lies) {
    it(`a length of ${what} on the signature's main elements, inside good.exe: MALFORMED`, () => {
      for (const path of elements) {
        const n = nodes.find((x) => x.path === path)!;
        expect(n, path).toBeDefined();
        // Keep the WIN_CERTIFICATE consistent: rebuild the table around the changed blob.
        const blob = good.subarray(map.blobs[0].start, map.blobs[0].end);
        const at = n.start - map.blobs[0].start;
        const changed = cat(blob.subarray(0, at + 1), bytes, blob.subarray(n.hdrEnd - map.blobs[0].start), what === 'indefinite' ? [0, 0] : []);
        const v = bounded(inPe(changed));
        // The blob's outer length no longer matches its bytes, so TRAILING_DATA may come along.
        expect(codes(v), `${path}: ${v.reasons.map((r) => r.message).join('; ')}`).toContain('MALFORMED');
      }
    });
  }

  it('a PE certificate table entry that claims 2^31 bytes, and one that claims 0xFFFFFFFF: blocked, nothing allocated', () => {
    for (const size of [0x80000000, 0xffffffff, 0x7fffffff]) {
      const b = Uint8Array.from(good);
      new DataView(b.buffer).setUint32(map.lengthFields.find((f: { name: string }) => f.name === 'DataDirectory[SECURITY].Size')!.at, size, true);
      const v = bounded(b);
      expect(codes(v).some((c) => ['OVERSIZE', 'MALFORMED'].includes(c))).toBe(true);
    }
  });

  it('a 16 MiB signature made of 8 million NULLs (valid DER, absurd node count): MALFORMED within the time bound', () => {
    const body = new Uint8Array(16 * MiB - 64);
    for (let i = 0; i < body.length; i += 2) body[i] = 0x05;
    const v = bounded(inPe(tlv(0x30, body)));
    expect(codes(v)).toEqual(['MALFORMED']);
  });
});

describe('certificate bags and chains', () => {
  const publisher = () => ({ der: der('publisher'), key: readFileSync(pki('publisher').replace(/\.pem$/, '.key'), 'utf8') });

  it("good.exe's real signature with 5,000 certificates in its bag: MALFORMED, fast, bounded memory", () => {
    const good = new Uint8Array(readFileSync(fx('good.exe')));
    const map = mapFile(good);
    const nodes = outline(good, map.blobs[0].start) as { start: number; hdrEnd: number; end: number; path: string }[];
    const at = (p: string) => nodes.find((n) => n.path === `ContentInfo.content.SignedData${p}`)!;
    const sd = at('');
    const certs = at('.certificates');
    const bag = cat(good.subarray(certs.hdrEnd, certs.end), ...new Array(5000).fill(der('updateca')));
    const sdBody = cat(good.subarray(sd.hdrEnd, certs.start), tlv(0xa0, bag), good.subarray(certs.end, sd.end));
    const ci = tlv(0x30, cat(SIGNED_DATA_OID, tlv(0xa0, tlv(0x30, sdBody))));
    const pe = inPe(ci);
    expect(pe.byteLength).toBeGreaterThan(4 * MiB);
    expect(codes(bounded(pe))).toEqual(['MALFORMED']);
  });

  it('a bag of 120 distinct certificates (over the 100 limit): MALFORMED', async () => {
    const { createPrivateKey } = await import('node:crypto');
    const p = publisher();
    const key = generateKey();
    const bag = Array.from({ length: 120 }, (_, i) => issueCertificate({ subject: { CN: `filler ${i}` }, key }).der);
    const pe = signPe(unsigned(), { signerCertDer: p.der, signerKey: createPrivateKey(p.key), extraCertsDer: bag });
    expect(codes(bounded(pe))).toEqual(['MALFORMED']);
  });

  it('issuer chains that loop (A<->B, and a 3-name ring of 90 certificates): UNTRUSTED_ROOT, fast', () => {
    const kA = generateKey();
    const kB = generateKey();
    const kC = generateKey();
    const name = (n: string) => ({ O: 'Patchgate Test', CN: `Loop ${n}` });
    const ca = (subject: string, key: typeof kA, issuer: string, issuerKey: typeof kA, serial: number): IssuedCertificate => issueCertificate({
      subject: name(subject), key, issuer: { name: name(issuer), key: issuerKey }, serialNumber: BigInt(serial),
      extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
    });
    const leaf = issueCertificate({
      subject: { CN: 'Loop leaf' }, issuer: { name: name('A'), key: kA },
      extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
    });
    const policy = labPolicy({ anchors: pinCertificateFile(pki('updateca')) });
    // A issued by B, B issued by A.
    const two = signPe(unsigned(), { signerCertDer: leaf.der, signerKey: leaf.keyObject, extraCertsDer: [ca('A', kA, 'B', kB, 1).der, ca('B', kB, 'A', kA, 2).der] });
    const v2 = bounded(two, { policy });
    expect(codes(v2)).toContain('UNTRUSTED_ROOT');
    // A <- B <- C <- A, thirty certificates per name: the path search must stay bounded.
    const ring: Uint8Array[] = [];
    for (let i = 0; i < 30; i++) {
      ring.push(ca('A', kA, 'B', kB, 100 + i).der, ca('B', kB, 'C', kC, 200 + i).der, ca('C', kC, 'A', kA, 300 + i).der);
    }
    const three = signPe(unsigned(), { signerCertDer: leaf.der, signerKey: leaf.keyObject, extraCertsDer: ring });
    const v3 = bounded(three, { policy });
    expect(codes(v3)).toContain('UNTRUSTED_ROOT');
    expect(v3.ms).toBeLessThan(1500);
  });

  it('the same bags through a detached signature and a CAB are refused too', () => {
    // A detached signature that is just a huge bag: SignedData with 3,000 copies of one certificate.
    const cert = der('updateca');
    const certs = tlv(0xa0, cat(...new Array(3000).fill(cert)));
    const sd = tlv(0x30, cat([0x02, 0x01, 0x01], tlv(0x31, new Uint8Array()), tlv(0x30, Uint8Array.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01])), certs, tlv(0x31, new Uint8Array())));
    const ci = tlv(0x30, cat(SIGNED_DATA_OID, tlv(0xa0, sd)));
    expect(codes(bounded(new Uint8Array(readFileSync(fx('payload.bin'))), { detachedSignature: ci }))).toEqual(['MALFORMED']);
    // The CAB: its signature area replaced by the nesting bomb (locator kept consistent).
    const cab = new Uint8Array(readFileSync(fx('good.cab')));
    const cmap = mapFile(cab);
    const deep = nest(5000, 0x30, Uint8Array.from([0x05, 0x00]));
    const out = cat(cab.subarray(0, cmap.signature.start), deep);
    new DataView(out.buffer).setUint32(48, deep.length, true);
    expect(codes(bounded(out))).toEqual(['MALFORMED']);
    void asn1js;
  });
});
