/**
 * Certificate trust lists (.stl) and catalogs (.cat) as formats: lab lists signed with pkijs
 * (src/lab/trustListSigner.ts) under a PKI shaped like Microsoft's two channels.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { emptyPolicy, type ApprovedCaPolicy } from '../../src/verify/approvedCaPolicy.js';
import { IncrementalVerifier, verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { signTrustList, singleFileCabinet } from '../../src/lab/trustListSigner.js';
import { catalogMembership, memberDigest } from '../../src/verify/ctl/catalogMembership.js';
import { verifyTrustList } from '../../src/verify/ctl/trustListVerification.js';
import { singleCabinetFile } from '../../src/verify/ctl/cabinetFile.js';
import { OID } from '../../src/verify/oids.js';
import { DigestStream } from '../../src/verify/digestStream.js';
import { buildCab, buildPE } from '../fixtures/build-unsigned.mjs';
import { signCab } from '../../src/lab/authenticodeSigner.js';
import { makeTrustListPki, pin, rootList, signedPe, type TrustListPki } from '../support/trustListPki.js';
import { deflateRawSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { fx } from '../support/fixtures.js';

let pki: TrustListPki;
let ctl: Uint8Array;
let codeSignedCtl: Uint8Array;
let channels: { payload: ApprovedCaPolicy; ctl: ApprovedCaPolicy };
const codes = (v: { reasons: { code: string }[] }) => v.reasons.map((r) => r.code);

beforeAll(() => {
  pki = makeTrustListPki();
  ctl = rootList(pki.listPublisher, pki.listCa, [pki.root.der, pki.codePca.der]);
  codeSignedCtl = rootList(pki.codeLeaf, pki.codePca, [pki.root.der]);
  channels = {
    payload: emptyPolicy({ anchors: [pin(pki.codePca)], ctlAnchors: [] }),
    ctl: emptyPolicy({ anchors: [], ctlAnchors: [pin(pki.listCa)] }),
  };
});

describe('certificate trust lists', () => {
  it('a root list signed by the CTL publisher is allowed under the CTL anchor', () => {
    const v = verifyBytes(ctl, channels.ctl);
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.format).toBe('ctl');
    expect(v.trustList).toMatchObject({ usage: [OID.ekuRootListSigner], entries: 2, sequenceNumber: '013528ed' });
    expect(v.chain?.map((c) => c.subject)).toEqual(['O=Patchgate Lab, CN=Lab Certificate Trust List Publisher', 'O=Patchgate Lab, CN=Lab Certificate List CA 2026']);
  });
  it('the same list is blocked UNTRUSTED_ROOT on the payload channel (code-signing anchors never approve a CTL)', () => {
    const v = verifyBytes(ctl, channels.payload);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toContain('UNTRUSTED_ROOT');
    // ... even when the code-signing channel also pins the Certificate List CA as a code anchor
    const both = verifyBytes(ctl, emptyPolicy({ anchors: [pin(pki.codePca), pin(pki.listCa)] }));
    expect(codes(both)).toContain('UNTRUSTED_ROOT');
  });
  it('a CTL signed by a code-signing leaf is blocked on the CTL channel', () => {
    const v = verifyBytes(codeSignedCtl, channels.ctl);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toContain('UNTRUSTED_ROOT');
  });
  it('a code-signing leaf lacks the root-list-signer EKU, even under a misconfigured CTL anchor', () => {
    const v = verifyBytes(codeSignedCtl, emptyPolicy({ ctlAnchors: [pin(pki.codePca)] }));
    expect(codes(v)).toEqual(['NO_CODESIGN_EKU']);
    expect(v.reasons[0]!.message).toMatch(/without trustListSigning/);
  });
  it('a changed entry breaks the signature (messageDigest binds the encapsulated CTL)', () => {
    const bad = Buffer.from(ctl);
    const at = bad.indexOf(Buffer.from(createHash('sha1').update(pki.root.der).digest()));
    expect(at).toBeGreaterThan(0);
    bad[at] ^= 1;
    const v = verifyBytes(bad, channels.ctl);
    expect(codes(v)).toContain('SIGNATURE_INVALID');
  });
  it('a signed object whose content is not a CTL stays UNSUPPORTED_FORMAT', () => {
    const r = verifyTrustList(ctl, channels.ctl, new Date(), 'ctl');
    expect(r.list?.subjects.length).toBe(2);
    // A detached CMS signature (id-data content) given alone: still "verify it with its content".
    const p7s = readFileSync(fx('payload-rogue.bin.p7s'));
    const v = verifyBytes(p7s, channels.ctl);
    expect(codes(v)).toEqual(['UNSUPPORTED_FORMAT']);
    expect(v.reasons[0]!.message).toMatch(/--detached/);
  });
});

describe('a cabinet wrapping a CTL (authrootstl.cab)', () => {
  it('an unsigned single-.stl cabinet is judged by its CTL, fed in small chunks', () => {
    const cab = singleFileCabinet('authroot.stl', ctl);
    const inc = new IncrementalVerifier(channels.ctl);
    for (let i = 0; i < cab.byteLength; i += 7) inc.update(cab.subarray(i, i + 7));
    const v = inc.finish();
    expect(v.reasons).toEqual([]);
    expect(v.format).toBe('ctl-cab');
    expect(codes(verifyBytes(cab, channels.payload))).toContain('UNTRUSTED_ROOT');
  });
  it('with the digests computed on another thread (the proxy mode for big or chunked bodies) the verdict is the same', () => {
    // A signed cabinet too: the cabinet wrapper must hand the thread's digests to the cabinet stream it wraps.
    const signedCab = signCab(buildCab() as Uint8Array, { signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der] });
    const cases = [[singleFileCabinet('authroot.stl', ctl), 'ctl-cab', channels.ctl], [ctl, 'ctl', channels.ctl], [signedCab, 'cab', channels.payload]] as const;
    for (const [bytes, format, policy] of cases) {
      const inc = new IncrementalVerifier(policy, { digests: 'external' });
      const ds = new DigestStream(policy.fileDigests, policy.limits);
      for (let i = 0; i < bytes.byteLength; i += 1000) {
        inc.update(bytes.subarray(i, i + 1000));
        ds.update(bytes.subarray(i, i + 1000));
      }
      const v = inc.finishWith(ds.finish());
      expect(v.reasons).toEqual([]);
      expect(v.format).toBe(format);
      expect(v.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
  });
  it('an MSZIP-compressed cabinet is read too (one deflate block per CFDATA)', () => {
    const stored = singleFileCabinet('authroot.stl', ctl);
    const packed = Buffer.from(stored);
    const file = singleCabinetFile(stored, 1 << 20);
    // rewrite the one data block as MSZIP ("CK" + raw deflate) with typeCompress 1
    const coffCabStart = packed.readUInt32LE(36);
    const deflated = Buffer.concat([Buffer.from('CK'), deflateRawSync(file.data)]);
    const head = Buffer.from(packed.subarray(0, coffCabStart + 8));
    head.writeUInt16LE(1, 42);
    head.writeUInt16LE(deflated.byteLength, coffCabStart + 4);
    head.writeUInt32LE(0, coffCabStart);
    const cab = Buffer.concat([head, deflated]);
    cab.writeUInt32LE(cab.byteLength, 8);
    expect(singleCabinetFile(cab, 1 << 20).data.equals(file.data)).toBe(true);
    expect(verifyBytes(cab, channels.ctl).verdict).toBe('allow');
  });
  it('a cabinet holding something else than one .stl is judged as a cabinet (unsigned: NOT_SIGNED)', () => {
    expect(codes(verifyBytes(singleFileCabinet('update.exe', ctl), channels.ctl))).toEqual(['NOT_SIGNED']);
  });
  it('bytes appended to a trust-list cabinet, or a cabinet length that disagrees, are MALFORMED', () => {
    const cab = singleFileCabinet('authroot.stl', ctl);
    const longer = Buffer.concat([cab, Buffer.from('hidden')]);
    longer.writeUInt32LE(longer.byteLength, 8);
    expect(codes(verifyBytes(longer, channels.ctl))).toEqual(['MALFORMED']);
    expect(codes(verifyBytes(Buffer.concat([cab, Buffer.from('hidden')]), channels.ctl))).toEqual(['MALFORMED']);
  });
  it('a tampered CTL inside the cabinet is blocked', () => {
    const cab = singleFileCabinet('authroot.stl', ctl);
    cab[cab.byteLength - 300] ^= 1;
    expect(verifyBytes(cab, channels.ctl).verdict).toBe('block');
  });
});

describe('payloads and channels', () => {
  it('a PE signed by the CTL publisher is blocked on both channels', () => {
    const pe = signedPe(pki.listPublisher, pki.listCa);
    expect(codes(verifyBytes(pe, channels.payload))).toContain('UNTRUSTED_ROOT');
    expect(codes(verifyBytes(pe, channels.ctl))).toContain('UNTRUSTED_ROOT');
    // and, were the List CA pinned for code by mistake, the leaf still lacks codeSigning
    expect(codes(verifyBytes(pe, emptyPolicy({ anchors: [pin(pki.listCa)] })))).toEqual(['NO_CODESIGN_EKU']);
  });
  it('a PE signed by the code-signing leaf passes on the payload channel only', () => {
    const pe = signedPe(pki.codeLeaf, pki.codePca);
    expect(verifyBytes(pe, channels.payload).verdict).toBe('allow');
    expect(codes(verifyBytes(pe, channels.ctl))).toContain('UNTRUSTED_ROOT');
  });
});

describe('catalogs', () => {
  const unsignedPe = () => buildPE('pe64') as Uint8Array;
  const catalog = (signer = pki.codeLeaf, issuer = pki.codePca, file = unsignedPe()) => signTrustList({
    usage: [OID.catalogList], thisUpdate: new Date('2026-11-01T00:00:00Z'),
    entries: [
      { identifier: Buffer.from('other-member', 'utf16le'), member: { digest: 'sha256', value: createHash('sha256').update('x').digest(), dataType: 'flat' } },
      { identifier: Buffer.from('member', 'utf16le'), member: { digest: 'sha256', value: memberDigest(file, 'sha256', 1 << 20), dataType: 'pe' } },
    ],
    signerCertDer: signer.der, signerKey: signer.keyObject, extraCertsDer: [issuer.der],
  });
  it('a catalog signed by a code-signing leaf is allowed under the code-signing anchors (format catalog)', () => {
    const v = verifyBytes(catalog(), channels.payload);
    expect(v.reasons).toEqual([]);
    expect(v.format).toBe('catalog');
    expect(codes(verifyBytes(catalog(), channels.ctl))).toContain('UNTRUSTED_ROOT');
  });
  it('a catalog signed by the CTL publisher is blocked (a catalog vouches for code)', () => {
    expect(codes(verifyBytes(catalog(pki.listPublisher, pki.listCa), channels.payload))).toContain('UNTRUSTED_ROOT');
  });
  it('membership: the PE image hash of a listed file matches; a changed file does not', () => {
    const r = verifyTrustList(catalog(), channels.payload, new Date(), 'ctl');
    const file = unsignedPe();
    const yes = catalogMembership(r.list!, file, channels.payload);
    expect(yes).toMatchObject({ member: true, reasons: [] });
    // The PE image hash skips the checksum field: a changed checksum is still a member (as Windows).
    const changed = Buffer.from(file);
    changed[changed.byteLength - 1] ^= 1;
    const no = catalogMembership(r.list!, changed, channels.payload);
    expect(no.member).toBe(false);
    expect(no.reasons[0]!.code).toBe('DIGEST_MISMATCH');
  });
  it('a SHA-1 member digest is refused unless the rules allow SHA-1', () => {
    const file = unsignedPe();
    const cat = signTrustList({
      usage: [OID.catalogList], thisUpdate: new Date(), entries: [{ identifier: new Uint8Array([1]), member: { digest: 'sha1', value: memberDigest(file, 'sha1', 1 << 20), dataType: 'pe' } }],
      signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der],
    });
    const list = verifyTrustList(cat, channels.payload, new Date(), 'ctl').list!;
    expect(catalogMembership(list, file, channels.payload)).toMatchObject({ member: false, reasons: [{ code: 'WEAK_ALGORITHM' }] });
    expect(catalogMembership(list, file, { ...channels.payload, allowSha1: true }).member).toBe(true);
  });
});

describe('hostile trust lists', () => {
  it('random byte flips in a CTL, in the .stl of a CTL cabinet and in a catalog never crash the verifier and never allow', () => {
    const cat = signTrustList({
      usage: [OID.catalogList], thisUpdate: new Date(), entries: [{ identifier: new Uint8Array([1, 2]), member: { digest: 'sha256', value: new Uint8Array(32), dataType: 'pe' } }],
      signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der],
    });
    // Anchors pinned by fingerprint only, so that the list's own copy of the anchor is what counts
    // (with the PEM pinned, a flip in the bag's copy is harmless: the pinned bytes are used).
    const fp = (c: typeof pki.listCa) => ({ sha256: pin(c).sha256, label: 'fingerprint' });
    const ctlChannel = emptyPolicy({ ctlAnchors: [fp(pki.listCa)] });
    const payloadChannel = emptyPolicy({ anchors: [fp(pki.codePca)] });
    const cab = singleFileCabinet('authroot.stl', ctl);
    const stlStart = cab.indexOf(Buffer.from(ctl));
    const samples: [string, Uint8Array, ApprovedCaPolicy, number][] = [['ctl', ctl, ctlChannel, 0], ['cab', cab, ctlChannel, stlStart], ['catalog', cat, payloadChannel, 0]];
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    for (const [name, bytes, policy, signedFrom] of samples) {
      expect(verifyBytes(bytes, policy).verdict, name).toBe('allow');
      for (let i = 0; i < 150; i++) {
        const m = Buffer.from(bytes);
        const at = signedFrom + rnd(m.byteLength - signedFrom);
        m[at] ^= 1 + rnd(255);
        const v = verifyBytes(m, policy);
        expect(v.verdict, `${name}: flip at ${at}`).toBe('block');
        expect(v.reasons.every((r) => r.code !== 'INTERNAL_ERROR'), JSON.stringify(v.reasons)).toBe(true);
      }
    }
  });
  it('a cabinet claiming a huge .stl is refused without inflating it (bounded by the signature limit)', () => {
    const cab = singleFileCabinet('authroot.stl', ctl);
    const coffFiles = cab.readUInt32LE(16);
    cab.writeUInt32LE(0x7fffffff, coffFiles); // cbFile
    const v = verifyBytes(cab, channels.ctl);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['MALFORMED']);
  });
  it('a catalog of 8,000 members verifies in a fraction of a second of event-loop time: entries are split by offsets, not parsed', () => {
    const entries = Array.from({ length: 8_000 }, (_, i) => ({ identifier: Buffer.from(String(i), 'utf16le'), member: { digest: 'sha256' as const, value: createHash('sha256').update(String(i)).digest(), dataType: 'pe' as const } }));
    const big = signTrustList({ usage: [OID.catalogList], thisUpdate: new Date(), entries, signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der] });
    const t = performance.now();
    const v = verifyBytes(big, channels.payload);
    const ms = performance.now() - t;
    expect(v.reasons).toEqual([]);
    expect(v.trustList?.entries).toBe(8_000);
    expect(ms).toBeLessThan(500); // measured ~0.1 s; parsing every entry with asn1js took ~1.6 s
  }, 60_000);
});
