/**
 * Property tests (fast-check, fixed seeds) for the parts of the core whose rules are simple to
 * state and easy to get subtly wrong:
 *
 * - PE layout and digest ranges: for any PE32/PE32+ header shape, the ranges the core hashes are
 *   exactly [0, end) minus CheckSum and minus the Certificate Table entry (when the directory has
 *   one), end being the certificate table's offset (or the file's end when unsigned), as a
 *   reference model written here from the PE/Authenticode specification computes them; any header
 *   bytes at all give a layout, a request for more bytes, or a MalformedError, nothing else.
 * - Range hashing and streaming: any chunking of the stream gives the same digests and verdict.
 * - EKU policy: for any EKU lists on leaf, intermediate and anchor, in strict and nested mode, the
 *   verdict (through signPe and verifyBytes, end to end) is allow exactly when the model says so.
 * - Algorithm policy: MD5 never, SHA-1 only when allowed, SHA-2 always, unknown digests
 *   unsupported; RSA keys below minRsaBits refused — for file digests and certificate signatures.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parsePeLayout, peDigestRanges } from '../../src/verify/pe/peLayout.js';
import { RangeHasher } from '../../src/verify/rangeHasher.js';
import { MalformedError } from '../../src/verify/malformed.js';
import { IncrementalVerifier, verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { judgeDigest } from '../../src/verify/cms/signerCheck.js';
import { validateChain } from '../../src/verify/chain/chainValidator.js';
import { Verifier } from '../../src/verify/verifier.js';
import { CertificateInfo } from '../../src/verify/chain/certificateInfo.js';
import type { PinnedCertificate } from '../../src/verify/approvedCaPolicy.js';
import type { VerdictReason } from '../../src/verify/verdict.js';
import { signPe } from '../../src/lab/authenticodeSigner.js';
import { generateKey, issueCertificate, type ExtendedKeyUsageName, type IssuedCertificate, type SignatureHash } from '../../src/pki/certificateFactory.js';
import { AT, codes, fx, labPolicy } from '../support/fixtures.js';

const SEED = 20261125;

// ---------------------------------------------------------------------------------------------
// PE layout and digest ranges

interface PeShape { is64: boolean; lfanew: number; extraOpt: number; numberOfRva: number; certOff: number; certSize: number; fileEnd: number }

/** A header region with the given shape (everything else zero). */
function peHeader(s: PeShape): { head: Uint8Array; opt: number; optEnd: number } {
  const opt = s.lfanew + 24;
  const dataDirs = opt + (s.is64 ? 112 : 96);
  const sizeOfOptional = dataDirs - opt + 8 * Math.min(16, s.numberOfRva) + s.extraOpt;
  const optEnd = opt + sizeOfOptional;
  const head = new Uint8Array(optEnd + 64);
  const v = new DataView(head.buffer);
  head[0] = 0x4d; head[1] = 0x5a;
  v.setUint32(0x3c, s.lfanew, true);
  v.setUint32(s.lfanew, 0x4550, true);
  v.setUint16(s.lfanew + 4 + 16, sizeOfOptional, true);
  v.setUint16(opt, s.is64 ? 0x20b : 0x10b, true);
  v.setUint32(opt + (s.is64 ? 108 : 92), s.numberOfRva, true);
  const certDir = dataDirs + 32;
  if (certDir + 8 <= head.length) {
    v.setUint32(certDir, s.certOff, true);
    v.setUint32(certDir + 4, s.certSize, true);
  }
  return { head, opt, optEnd };
}

type Iv = [number, number];
/** Clip to [0, end), drop empty, merge touching: a canonical form to compare range lists. */
function canonical(ranges: readonly (readonly [number, number])[], end: number): Iv[] {
  const out: Iv[] = [];
  for (const [a, b] of [...ranges].map(([a, b]) => [Math.max(0, a), Math.min(end, b)] as Iv).filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The reference: [0, end) minus CheckSum minus the Certificate Table entry if the directory has one. */
function referenceRanges(s: PeShape, opt: number, optEnd: number): { ranges: Iv[]; end: number } {
  const checksum = opt + 64;
  const certDir = opt + (s.is64 ? 112 : 96) + 32;
  const hasEntry = s.numberOfRva >= 5 && certDir + 8 <= optEnd;
  const signed = hasEntry && s.certSize !== 0;
  const end = signed ? s.certOff : s.fileEnd;
  const holes: Iv[] = [[checksum, checksum + 4]];
  if (hasEntry) holes.push([certDir, certDir + 8]);
  const out: Iv[] = [];
  let at = 0;
  for (const [a, b] of holes.sort((x, y) => x[0] - y[0])) {
    if (a > at) out.push([at, Math.min(a, end)]);
    at = Math.max(at, b);
  }
  if (end > at) out.push([at, end]);
  return { ranges: canonical(out, end), end };
}

const peShape: fc.Arbitrary<PeShape> = fc.record({
  is64: fc.boolean(),
  lfanew: fc.integer({ min: 8, max: 64 }).map((x) => x * 8),
  extraOpt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 64 })),
  numberOfRva: fc.oneof(fc.constant(16), fc.integer({ min: 0, max: 16 }), fc.constant(0xffffffff)),
  certOff: fc.integer({ min: 0, max: 0x10000 }),
  certSize: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 0x4000 })),
  fileEnd: fc.integer({ min: 0x200, max: 0x20000 }),
});

describe('PE layout and Authenticode digest ranges (property)', () => {
  it('any header bytes: a layout, a request for more, or MalformedError — never another error', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 1024 }),
      fc.uint8Array({ minLength: 64, maxLength: 1024 }).map((b) => { b[0] = 0x4d; b[1] = 0x5a; return b; }),
      peShape.chain((s) => fc.tuple(fc.constant(peHeader(s).head), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 8 }))
        .map(([h, flips]) => { const c = Uint8Array.from(h); for (const [i, v] of flips) c[i % c.length] = v; return c; })),
    );
    fc.assert(fc.property(bytes, (head) => {
      try {
        const r = parsePeLayout(head, 1 << 20);
        if (r.kind === 'need') expect(r.bytes).toBeGreaterThan(head.byteLength);
        else expect(r.layout.checksumOffset).toBeLessThan(head.byteLength);
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedError);
      }
    }), { seed: SEED, numRuns: 1500 });
  });

  it('the ranges hashed are exactly the file up to the table, without CheckSum and the Certificate Table entry', () => {
    fc.assert(fc.property(peShape, (s) => {
      const { head, opt, optEnd } = peHeader(s);
      const certDir = opt + (s.is64 ? 112 : 96) + 32;
      let r;
      try {
        r = parsePeLayout(head, 1 << 20);
      } catch (err) {
        expect(err).toBeInstanceOf(MalformedError);
        // The only refusal for these well-formed headers: a table that overlaps the headers.
        expect(s.certSize !== 0 && s.certOff < certDir + 8).toBe(true);
        return;
      }
      expect(r.kind).toBe('layout');
      if (r.kind !== 'layout') return;
      const ref = referenceRanges(s, opt, optEnd);
      const raw = peDigestRanges(r.layout, s.fileEnd);
      // Sorted and disjoint as returned (the hasher feeds them in order).
      for (let i = 1; i < raw.length; i++) expect(raw[i]![0]).toBeGreaterThanOrEqual(raw[i - 1]![1]);
      expect(canonical(raw, ref.end)).toEqual(ref.ranges);
      // Nothing at or past `end` is hashed (the table and anything after it).
      for (const [, b] of raw) expect(Math.min(b, ref.end)).toBeLessThanOrEqual(ref.end);
    }), { seed: SEED, numRuns: 3000 });
  });

  it('range hashing is independent of how the stream is cut', () => {
    const arb = fc.record({
      data: fc.uint8Array({ minLength: 1, maxLength: 4096 }),
      cuts: fc.array(fc.nat(4096), { maxLength: 12 }),
      holes: fc.array(fc.tuple(fc.nat(4096), fc.nat(64)), { maxLength: 4 }),
    });
    fc.assert(fc.property(arb, ({ data, cuts, holes }) => {
      const ranges = canonical([[0, data.length]], data.length).flatMap(([a, b]) => {
        let parts: Iv[] = [[a, b]];
        for (const [h, n] of holes) parts = parts.flatMap(([x, y]) => (h % data.length >= x && h % data.length < y ? [[x, h % data.length], [h % data.length + n, y]] as Iv[] : [[x, y] as Iv])).filter(([x, y]) => y > x);
        return parts;
      });
      const h = new RangeHasher(ranges, ['sha256']);
      const points = [...new Set(cuts.map((c) => c % data.length))].sort((x, y) => x - y);
      let at = 0;
      for (const p of [...points, data.length]) { if (p > at) { h.update(data.subarray(at, p), at); at = p; } }
      const expected = createHash('sha256');
      for (const [a, b] of ranges) expected.update(data.subarray(a, b));
      expect(h.digests().get('sha256')!.toString('hex')).toBe(expected.digest('hex'));
    }), { seed: SEED, numRuns: 500 });
  });

  it('a signed file streamed in any chunking gets the verdict, digest and sha256 of the whole', () => {
    const files = ['good.exe', 'good.cab', 'nested-good.exe', 'tampered.exe', 'padded.exe'].map((n) => new Uint8Array(readFileSync(fx(n))));
    const whole = files.map((f) => verifyBytes(f, labPolicy(), { now: AT }));
    fc.assert(fc.property(fc.nat(files.length - 1), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 40 }), (i, sizes) => {
      const f = files[i]!;
      const v = new IncrementalVerifier(labPolicy(), { now: AT });
      let at = 0;
      for (let k = 0; at < f.length; k++) {
        const n = sizes[k % sizes.length]!;
        v.update(f.subarray(at, at + n));
        at += n;
      }
      const got = v.finish();
      expect({ verdict: got.verdict, codes: codes(got), digest: got.digest, sha256: got.sha256 })
        .toEqual({ verdict: whole[i]!.verdict, codes: codes(whole[i]!), digest: whole[i]!.digest, sha256: whole[i]!.sha256 });
    }), { seed: SEED, numRuns: 60 });
  });
});

// ---------------------------------------------------------------------------------------------
// EKU and algorithm policy

const pinOf = (c: IssuedCertificate, label: string): PinnedCertificate => ({ sha256: createHash('sha256').update(c.der).digest('hex'), der: c.der, label });
const unsignedPe = () => new Uint8Array(readFileSync(fx('unsigned.exe')));
const NB = new Date('2025-01-01T00:00:00Z');
const NA = new Date('2030-01-01T00:00:00Z');
type Eku = ExtendedKeyUsageName[] | undefined;
const ekuArb: fc.Arbitrary<Eku> = fc.oneof(
  fc.constant(undefined),
  fc.subarray(['codeSigning', 'serverAuth', 'anyExtendedKeyUsage', 'timeStamping'] as ExtendedKeyUsageName[], { minLength: 1 }),
);

describe('EKU policy (property, end to end through signPe and verifyBytes)', () => {
  const rootKey = generateKey();
  const interKey = generateKey();
  const leafKey = generateKey();
  const root = issueCertificate({ subject: { O: 'pg prop', CN: 'Prop Root' }, key: rootKey, notBefore: NB, notAfter: NA, extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign', 'cRLSign'] } } });
  const unsigned = unsignedPe();

  it('allow exactly when the leaf and every CA below the anchor allow codeSigning (strict: listed; nested: absent counts) and the anchor does not exclude it', () => {
    const arb = fc.record({ leaf: ekuArb, inter: ekuArb, anchorIsInter: fc.boolean(), mode: fc.constantFrom('strict' as const, 'nested' as const) });
    fc.assert(fc.property(arb, ({ leaf, inter, anchorIsInter, mode }) => {
      const ic = issueCertificate({
        subject: { O: 'pg prop', CN: 'Prop Intermediate' }, key: interKey, issuer: root, notBefore: NB, notAfter: NA,
        extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign'] }, ...(inter ? { extendedKeyUsage: { purposes: inter } } : {}) },
      });
      const lc = issueCertificate({
        subject: { O: 'pg prop', CN: 'Prop Leaf' }, key: leafKey, issuer: ic, notBefore: NB, notAfter: NA,
        extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, ...(leaf ? { extendedKeyUsage: { purposes: leaf } } : {}) },
      });
      const pe = signPe(unsigned, { signerCertDer: lc.der, signerKey: lc.keyObject, extraCertsDer: [ic.der] });
      const policy = labPolicy({ anchors: [anchorIsInter ? pinOf(ic, 'inter') : pinOf(root, 'root')], ekuMode: mode });
      const v = verifyBytes(pe, policy, { now: AT });

      const lists = (e: Eku, x: ExtendedKeyUsageName) => e !== undefined && e.includes(x);
      const leafOk = mode === 'strict' ? lists(leaf, 'codeSigning') : leaf === undefined || lists(leaf, 'codeSigning');
      const interBelowOk = mode === 'strict' ? lists(inter, 'codeSigning') : inter === undefined || lists(inter, 'codeSigning') || lists(inter, 'anyExtendedKeyUsage');
      const anchorOk = (e: Eku) => e === undefined || lists(e, 'codeSigning') || lists(e, 'anyExtendedKeyUsage');
      const ok = leafOk && (anchorIsInter ? anchorOk(inter) : interBelowOk && anchorOk(undefined));
      expect({ verdict: v.verdict, eku: codes(v).includes('NO_CODESIGN_EKU') }, JSON.stringify(v.reasons)).toEqual({ verdict: ok ? 'allow' : 'block', eku: !ok });
      if (!ok) expect(codes(v)).toEqual(['NO_CODESIGN_EKU']);
    }), { seed: SEED, numRuns: 80 });
  });
});

describe('algorithm policy (property)', () => {
  const DIGESTS: Record<string, string | undefined> = {
    '1.2.840.113549.2.5': 'md5', '1.3.14.3.2.26': 'sha1', '2.16.840.1.101.3.4.2.1': 'sha256', '2.16.840.1.101.3.4.2.2': 'sha384',
    '2.16.840.1.101.3.4.2.3': 'sha512', '2.16.840.1.101.3.4.2.4': undefined /* sha224 */, '1.2.840.113549.2.2': undefined /* md2 */,
    '2.16.840.1.101.3.4.2.8': undefined /* sha3-256 */, '1.2.3.4': undefined,
  };
  it('file and signer digests: MD5 never, SHA-1 only when allowed, SHA-2 always, anything else unsupported', () => {
    fc.assert(fc.property(fc.constantFrom(...Object.keys(DIGESTS)), fc.boolean(), (oid, allowSha1) => {
      const out: VerdictReason[] = [];
      judgeDigest(oid, labPolicy({ allowSha1 }), 'file digest', out);
      const name = DIGESTS[oid];
      const expected = name === undefined ? ['UNSUPPORTED_ALGORITHM'] : name === 'md5' || (name === 'sha1' && !allowSha1) ? ['WEAK_ALGORITHM'] : [];
      expect(out.map((r) => r.code)).toEqual(expected);
    }), { seed: SEED, numRuns: 100 });
  });

  const ecRoot = issueCertificate({ subject: { CN: 'Alg EC Root' }, notBefore: NB, notAfter: NA, extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign'] } } });
  const rsaRoot = issueCertificate({ subject: { CN: 'Alg RSA Root' }, key: { type: 'rsa', bits: 2048 }, notBefore: NB, notAfter: NA, extensions: { basicConstraints: { cA: true }, keyUsage: { usages: ['keyCertSign'] } } });
  const rsaKeys = { 1024: generateKey({ type: 'rsa', bits: 1024 }), 2048: generateKey({ type: 'rsa', bits: 2048 }) } as const;
  const ecKey = generateKey();

  it('certificate signatures: MD5 never, SHA-1 only when allowed; RSA keys below minRsaBits refused', () => {
    const arb = fc.record({
      hash: fc.constantFrom<SignatureHash>('md5', 'sha1', 'sha256', 'sha384', 'sha512'),
      allowSha1: fc.boolean(),
      leafKey: fc.constantFrom<'ec' | 1024 | 2048>('ec', 1024, 2048),
      minRsaBits: fc.constantFrom(1024, 2048, 3072),
    });
    fc.assert(fc.property(arb, ({ hash, allowSha1, leafKey, minRsaBits }) => {
      // MD5 needs an RSA issuer: the RSA root then stays the anchor (pinned, so its own key size is not judged below it).
      const issuer = hash === 'md5' ? rsaRoot : ecRoot;
      const leaf = issueCertificate({
        subject: { CN: 'Alg Leaf' }, key: leafKey === 'ec' ? ecKey : rsaKeys[leafKey], issuer, signatureHash: hash, notBefore: NB, notAfter: NA,
        extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
      });
      const info = new CertificateInfo(leaf.der);
      const anchor = pinOf(issuer, 'root');
      const verifier = new Verifier(labPolicy({ allowSha1, minRsaBits, anchors: [anchor] }));
      const r = validateChain(info, [info], verifier.anchors.code, 'codeSigning', AT, verifier);
      const rootBits = issuer === rsaRoot ? 2048 : undefined;
      const weakHash = hash === 'md5' || (hash === 'sha1' && !allowSha1);
      const weakKey = (leafKey !== 'ec' && leafKey < minRsaBits) || (rootBits !== undefined && rootBits < minRsaBits);
      expect(r.anchored).toBe(true);
      const n = (weakHash ? 1 : 0) + (leafKey !== 'ec' && leafKey < minRsaBits ? 1 : 0) + (rootBits !== undefined && rootBits < minRsaBits ? 1 : 0);
      expect(n > 0).toBe(weakHash || weakKey);
      expect(r.reasons.map((x) => x.code), JSON.stringify(r.reasons)).toEqual(new Array(n).fill('WEAK_ALGORITHM'));
    }), { seed: SEED, numRuns: 120 });
    void X509Certificate; void createPrivateKey;
  });
});
