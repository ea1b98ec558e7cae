/**
 * parseSignedData keeps parses by the SHA-256 of the exact signature bytes: the same blob is
 * parsed once, a blob that differs in one byte is parsed (and judged) on its own, and a shared
 * parse cannot be changed by a caller.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { parsePeLayout } from '../../src/verify/pe/peLayout.js';
import { parseCertificateTable } from '../../src/verify/pe/winCertificate.js';
import { parseSignedData } from '../../src/verify/cms/signedDataParts.js';
import { AT, codes, fx, labPolicy } from '../support/fixtures.js';

const good = () => Buffer.from(readFileSync(fx('good.exe')));
function signatureSpan(b: Buffer): { at: number; der: Uint8Array } {
  const r = parsePeLayout(b, 1 << 20);
  if (r.kind !== 'layout') throw new Error('no layout');
  const table = b.subarray(r.layout.certTableOffset, r.layout.certTableOffset + r.layout.certTableSize);
  const der = parseCertificateTable(table).entries[0]!;
  return { at: b.indexOf(Buffer.from(der)), der };
}

describe('the signature parse cache', () => {
  it('gives the same frozen parse for the same bytes, and a fresh one for a copy that differs in one byte', () => {
    const { der } = signatureSpan(good());
    const a = parseSignedData(new Uint8Array(der));
    const b = parseSignedData(new Uint8Array(der));
    expect(b).toBe(a);
    expect(Object.isFrozen(a) && Object.isFrozen(a.certificates) && Object.isFrozen(a.signers)).toBe(true);
    expect(() => (a.certificates as unknown[]).push(a.certificates[0])).toThrow();
    const changed = new Uint8Array(der);
    changed[changed.length - 1] ^= 1; // inside the signer's signature value
    expect(parseSignedData(changed)).not.toBe(a);
  });

  it('a file whose signature differs from a cached one in one byte is blocked, before and after the good one', () => {
    const policy = labPolicy();
    const tampered = good();
    const { at, der } = signatureSpan(tampered);
    tampered[at + der.length - 1] ^= 1; // last byte of the signature value: the signer's signature no longer verifies
    const first = verifyBytes(tampered, policy, { now: AT });
    expect(first.verdict).toBe('block');
    expect(verifyBytes(good(), policy, { now: AT }).verdict).toBe('allow');
    const again = verifyBytes(tampered, policy, { now: AT });
    expect(again.verdict).toBe('block');
    expect(codes(again)).toEqual(codes(first));
    expect(verifyBytes(good(), policy, { now: AT }).verdict).toBe('allow');
  });
});
