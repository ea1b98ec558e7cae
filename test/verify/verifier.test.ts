/**
 * The Verifier is built once from trust material and then judges many payloads: its rules are
 * fixed when it is built, and what it caches (chain searches, certificate signature checks) never
 * carries one payload's or one instant's verdict over to another.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { Verifier } from '../../src/verify/verifier.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { validateChain } from '../../src/verify/chain/chainValidator.js';
import { AnchorSet } from '../../src/verify/chain/anchorSet.js';
import { BoundedCache } from '../../src/verify/boundedCache.js';
import { parsePeLayout } from '../../src/verify/pe/peLayout.js';
import { parseCertificateTable } from '../../src/verify/pe/winCertificate.js';
import { findSignerCertificate, parseSignedData } from '../../src/verify/cms/signedDataParts.js';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { AT, codes, fx, labPolicy, manifest, pki } from '../support/fixtures.js';

const bytesOf = (name: string) => readFileSync(fx(manifest().fixtures[name]!.file));

function signedParts(name: string) {
  const b = bytesOf(name);
  const r = parsePeLayout(b, 1 << 20);
  if (r.kind !== 'layout') throw new Error('no layout');
  const der = parseCertificateTable(b.subarray(r.layout.certTableOffset, r.layout.certTableOffset + r.layout.certTableSize)).entries[0]!;
  const parts = parseSignedData(der);
  return { parts, leaf: findSignerCertificate(parts.signers[0]!.info, parts.certificates)! };
}

describe('Verifier', () => {
  it('parses its anchors once, per purpose, when it is built', () => {
    const v = new Verifier(labPolicy());
    const [updateCa] = pinCertificateFile(pki('updateca'));
    expect(v.anchors.code.size).toBe(1);
    expect(v.anchors.code.has(updateCa!.sha256)).toBe(true);
    expect(v.anchors.code.certificates.map((c) => c.sha256)).toEqual([updateCa!.sha256]);
    expect(v.anchors.timestamp.size).toBe(1);
    expect(v.anchors.trustList.size).toBe(0);
  });

  it('keeps the rules it was built with: changing the policy object afterwards changes no verdict', () => {
    const policy = labPolicy();
    const v = new Verifier(policy);
    expect(verifyBytes(bytesOf('good'), v, { now: AT }).verdict).toBe('allow');
    const { leaf } = signedParts('good');
    policy.distrust.add(leaf.sha256);
    policy.anchors.length = 0;
    policy.allowSha1 = true;
    expect(verifyBytes(bytesOf('good'), v, { now: AT }).verdict).toBe('allow');
    expect(codes(verifyBytes(bytesOf('sha1-digest'), v, { now: AT }))).toContain('WEAK_ALGORITHM');
    // The same changes do count for a Verifier built afterwards.
    expect(codes(verifyBytes(bytesOf('good'), new Verifier(policy), { now: AT }))).toContain('DISTRUSTED_CERT');
  });

  it('one Verifier reused across payloads and instants gives each the verdict a fresh one gives', () => {
    const shared = new Verifier(labPolicy());
    const names = ['good', 'good-ts', 'rogue', 'flame', 'noekuca', 'expired', 'expired-ts', 'tampered', 'distrusted', 'nested-forged-outer', 'good-cab'];
    const later = new Date('2041-01-01T00:00:00Z'); // after every lab certificate's notAfter
    for (let round = 0; round < 2; round++) {
      for (const name of names) {
        for (const now of [AT, later, AT]) {
          const fresh = verifyBytes(bytesOf(name), labPolicy(), { now });
          const reused = verifyBytes(bytesOf(name), shared, { now });
          expect({ name, now, verdict: reused.verdict, reasons: reused.reasons }).toEqual({ name, now, verdict: fresh.verdict, reasons: fresh.reasons });
        }
      }
    }
    expect(verifyBytes(bytesOf('good'), shared, { now: later }).verdict).toBe('block');
  });

  it('a chain search it keeps for one anchor set is never used for another', () => {
    const v = new Verifier(labPolicy());
    const { parts, leaf } = signedParts('good');
    expect(validateChain(leaf, parts.certificates, v.anchors.code, 'codeSigning', AT, v).anchored).toBe(true);
    const rogueOnly = new AnchorSet(pinCertificateFile(pki('rogueroot')));
    const r = validateChain(leaf, parts.certificates, rogueOnly, 'codeSigning', AT, v);
    expect(r.anchored).toBe(false);
    expect(r.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
    expect(validateChain(leaf, parts.certificates, v.anchors.code, 'codeSigning', AT, v).anchored).toBe(true);
  });
});

describe('Verifier caches', () => {
  it('a chain search it keeps for one certificate bag is never used for another (same leaf, same anchors)', () => {
    const v = new Verifier(labPolicy());
    const { parts, leaf } = signedParts('good');
    // The anchor pinned by fingerprint only: the chain reaches it only through the bag.
    const byFingerprint = new AnchorSet(pinCertificateFile(pki('updateca')).map(({ sha256, label }) => ({ sha256, label })));
    expect(parts.certificates.some((c) => byFingerprint.has(c.sha256))).toBe(true);
    expect(validateChain(leaf, parts.certificates, byFingerprint, 'codeSigning', AT, v).anchored).toBe(true);
    const alone = validateChain(leaf, [leaf], byFingerprint, 'codeSigning', AT, v);
    expect(alone.anchored).toBe(false);
    expect(alone.reasons.map((x) => x.code)).toContain('UNTRUSTED_ROOT');
  });
});

describe('BoundedCache', () => {
  it('keeps at most its capacity, evicting the least recently used', () => {
    const c = new BoundedCache<string, number>(3);
    c.set('a', 1); c.set('b', 2); c.set('c', 3);
    expect(c.get('a')).toBe(1); // a is now the most recent
    c.set('d', 4);
    expect(c.size).toBe(3);
    expect(c.get('b')).toBeUndefined();
    expect([c.get('a'), c.get('c'), c.get('d')]).toEqual([1, 3, 4]);
    for (let i = 0; i < 1000; i++) c.set(`k${i}`, i);
    expect(c.size).toBe(3);
    expect(() => new BoundedCache(0)).toThrow();
  });
});
