/**
 * What the mutation fuzzer found: bytes of a signed file that the signature does not cover and
 * that the core does not hold to their only valid value, so that one changed byte gives a file
 * with another SHA-256 that still verifies (signature malleability). Each test states the correct
 * behaviour (block, MALFORMED) and fails until src/verify enforces it.
 *
 * The worst of them: the BIT STRING "unused bits" octet of a certificate's signatureValue sits
 * outside tbsCertificate, so changing it gives the certificate a new SHA-256 fingerprint while its
 * signature still verifies — and a certificate on the distrust list is no longer recognised.
 *
 * Elements are found with the test's own ASN.1 outline (test/fuzz/lib/regions.mjs), never by
 * hard-coded offsets.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readDistrustFile, pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import type { Verdict } from '../../src/verify/verdict.js';
import { AT, codes, fx, labPolicy, pki } from '../support/fixtures.js';
import { mapFile, outline } from './lib/regions.mjs';

type Node = { start: number; hdrEnd: number; end: number; path: string };

const load = (name: string) => new Uint8Array(readFileSync(fx(name)));
const rootPinned = (extra = {}) => labPolicy({ anchors: pinCertificateFile(pki('root')), ...extra });

function nodesOf(bytes: Uint8Array, kind?: 'p7s'): Node[] {
  const map = mapFile(bytes, kind);
  return map.blobs.flatMap((b: { start: number }) => outline(bytes, b.start)) as Node[];
}
function node(nodes: Node[], path: string): Node {
  const n = nodes.find((x) => x.path === `ContentInfo${path ? `.${path}` : ''}`);
  if (!n) throw new Error(`no element ${path}`);
  return n;
}
function changed(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const c = Uint8Array.from(bytes);
  expect(c[at], `byte ${at} already holds 0x${value.toString(16)}`).not.toBe(value);
  c[at] = value;
  return c;
}
const blocked = (v: Verdict, ...expected: string[]) => {
  expect(v.verdict).toBe('block');
  expect(codes(v).some((c) => expected.includes(c)), `codes ${codes(v).join(',')}`).toBe(true);
};

describe('certificate signatureValue: the unused-bits octet is not signed', () => {
  it('a distrusted intermediate with its unused-bits octet changed (00 -> 01) is still distrusted (or refused)', () => {
    const good = load('good.exe');
    const policy = rootPinned({ distrust: new Set(readDistrustFile(fx('distrust-updateca.txt'))) });
    expect(codes(verifyBytes(good, policy, { now: AT }))).toEqual(['DISTRUSTED_CERT']);
    // certificates[1] is the Update CA (the distrusted one); its signatureValue's first value octet is "unused bits".
    const sig = node(nodesOf(good), 'content.SignedData.certificates.[1].signatureValue');
    const v = verifyBytes(changed(good, sig.hdrEnd, 0x01), policy, { now: AT });
    // Today: allow, chain publisher -> Update CA -> Vendor Root, the distrust list bypassed.
    blocked(v, 'DISTRUSTED_CERT', 'MALFORMED');
  });

  it('the leaf certificate with a non-zero unused-bits octet is refused (DER: a signature is whole octets)', () => {
    for (const [file, kind] of [['good.exe', undefined], ['good.cab', undefined], ['payload.bin.p7s', 'p7s']] as const) {
      const bytes = load(file);
      const sig = node(nodesOf(bytes, kind), 'content.SignedData.certificates.[0].signatureValue');
      const mutated = changed(bytes, sig.hdrEnd, 0x01);
      const v = kind === 'p7s'
        ? verifyBytes(load('payload.bin'), labPolicy(), { now: AT, detachedSignature: mutated })
        : verifyBytes(mutated, labPolicy(), { now: AT });
      blocked(v, 'MALFORMED');
    }
  });
});

describe('CMS structure the signature does not cover is held to its only valid form', () => {
  // [element path, offset within the element, new value or XOR mask label]
  const cases: [string, string, (b: Uint8Array, n: Node) => [number, number]][] = [
    ['SignedData SEQUENCE tag (0x30 -> 0x31)', 'content.SignedData', (b, n) => [n.start, b[n.start]! ^ 0x01]],
    ['SignedData.version (1 -> 0)', 'content.SignedData.version', (_b, n) => [n.hdrEnd, 0x00]],
    ['SignedData.version (1 -> -1)', 'content.SignedData.version', (_b, n) => [n.hdrEnd, 0xff]],
    // Found by `npm run fuzz` (3 min, 200k cases) once the core got faster: asn1js reads ENUMERATED
    // as an Integer subclass, and versions 3, 4, 5 were taken whatever the content.
    ['SignedData.version tag INTEGER -> ENUMERATED (0x02 -> 0x0a)', 'content.SignedData.version', (b, n) => [n.start, b[n.start]! ^ 0x08]],
    ['SignedData.version (1 -> 5)', 'content.SignedData.version', (_b, n) => [n.hdrEnd, 0x05]],
    ['SignedData.version (1 -> 3) with issuerAndSerialNumber signers', 'content.SignedData.version', (_b, n) => [n.hdrEnd, 0x03]],
    ['SignerInfo.version (1 -> 3) with an issuerAndSerialNumber sid', 'content.SignedData.signerInfos.[0].version', (_b, n) => [n.hdrEnd, 0x03]],
    ['SignerInfo.version tag INTEGER -> ENUMERATED (0x02 -> 0x0a)', 'content.SignedData.signerInfos.[0].version', (b, n) => [n.start, b[n.start]! ^ 0x08]],
    ['digestAlgorithms SET tag (0x31 -> 0x30)', 'content.SignedData.digestAlgorithms', (b, n) => [n.start, b[n.start]! ^ 0x01]],
    ['digestAlgorithms[0] parameters NULL -> empty OCTET STRING', 'content.SignedData.digestAlgorithms.[0].parameters', (_b, n) => [n.start, 0x04]],
    ['encapContentInfo SEQUENCE tag (0x30 -> 0x31)', 'content.SignedData.encapContentInfo', (b, n) => [n.start, b[n.start]! ^ 0x01]],
    ['SpcIndirectDataContent tag, constructed bit cleared (0x30 -> 0x10)', 'content.SignedData.encapContentInfo.eContent.SpcIndirectDataContent', (b, n) => [n.start, b[n.start]! ^ 0x20]],
    ['signerInfos SET tag (0x31 -> 0x30)', 'content.SignedData.signerInfos', (b, n) => [n.start, b[n.start]! ^ 0x01]],
    ['SignerInfo.version (1 -> 0)', 'content.SignedData.signerInfos.[0].version', (_b, n) => [n.hdrEnd, 0x00]],
    ['SignerInfo.digestAlgorithm parameters NULL -> empty OCTET STRING', 'content.SignedData.signerInfos.[0].digestAlgorithm.parameters', (_b, n) => [n.start, 0x04]],
    ['SignerInfo.signatureAlgorithm parameters NULL -> empty OCTET STRING', 'content.SignedData.signerInfos.[0].signatureAlgorithm.parameters', (_b, n) => [n.start, 0x04]],
  ];
  for (const [what, path, change] of cases) {
    it(`${what}: good.exe is refused`, () => {
      const good = load('good.exe');
      expect(verifyBytes(good, labPolicy(), { now: AT }).verdict).toBe('allow');
      const [at, value] = change(good, node(nodesOf(good), path));
      blocked(verifyBytes(changed(good, at, value), labPolicy(), { now: AT }), 'MALFORMED');
    });
  }

  it('detached signature: the outer ContentInfo SEQUENCE tag (0x30 -> 0x31) is refused', () => {
    const sig = load('payload.bin.p7s');
    const content = load('payload.bin');
    expect(verifyBytes(content, labPolicy(), { now: AT, detachedSignature: sig }).verdict).toBe('allow');
    blocked(verifyBytes(content, labPolicy(), { now: AT, detachedSignature: changed(sig, 0, 0x31) }), 'MALFORMED');
  });
});

describe('CAB header bytes the digest skips', () => {
  it('iCabinet (offset 34) of a single signed cabinet must be 0, like reserved1 and the signature locator', () => {
    const cab = load('good.cab');
    expect(verifyBytes(cab, labPolicy(), { now: AT }).verdict).toBe('allow');
    expect(cab[34]).toBe(0);
    expect(cab[35]).toBe(0);
    blocked(verifyBytes(changed(cab, 34, 0x01), labPolicy(), { now: AT }), 'MALFORMED');
    blocked(verifyBytes(changed(cab, 35, 0x80), labPolicy(), { now: AT }), 'MALFORMED');
  });
});

describe('what is malleable by specification (documented, allowed)', () => {
  it('the PE CheckSum is outside the digest: any value verifies', () => {
    const good = load('good.exe');
    const map = mapFile(good);
    const cs = map.excluded.find((r: { name: string }) => r.name === 'OptionalHeader.CheckSum')!;
    expect(verifyBytes(changed(good, cs.start, good[cs.start]! ^ 0xff), labPolicy(), { now: AT }).verdict).toBe('allow');
  });
  it('WIN_CERTIFICATE.dwLength may be the exact or the 8-aligned length (both forms exist): both verify', () => {
    const good = load('good.exe');
    const map = mapFile(good);
    const table = map.signature!;
    const dw = new DataView(good.buffer, good.byteOffset).getUint32(table.start, true);
    const der = nodesOf(good)[0]!;
    const exact = 8 + (der.end - der.start);
    expect(dw).toBe((exact + 7) & ~7);
    const c = Uint8Array.from(good);
    new DataView(c.buffer).setUint32(table.start, exact, true);
    expect(verifyBytes(c, labPolicy(), { now: AT }).verdict).toBe('allow');
    void join;
  });
});
