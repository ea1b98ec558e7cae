/**
 * What is read from a cached signature parse is kept on that parse's own objects (the
 * SpcIndirectDataContent read, the signer certificate lookup): the same signature bytes give the
 * same answer, other bytes (one byte of the signed file digest) a fresh one, and a caller's own
 * (unfrozen) certificate list is never answered from memory.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parsePeLayout } from '../../src/verify/pe/peLayout.js';
import { parseCertificateTable } from '../../src/verify/pe/winCertificate.js';
import { findSignerCertificate, parseSignedData } from '../../src/verify/cms/signedDataParts.js';
import { parseSpcIndirectDataContent } from '../../src/verify/cms/spcIndirectDataContent.js';
import { Verifier } from '../../src/verify/verifier.js';
import { AT, codes, fx, labPolicy } from '../support/fixtures.js';

const good = () => Buffer.from(readFileSync(fx('good.exe')));
function signature(b: Buffer): { at: number; der: Uint8Array } {
  const r = parsePeLayout(b, 1 << 20);
  if (r.kind !== 'layout') throw new Error('no layout');
  const der = parseCertificateTable(b.subarray(r.layout.certTableOffset, r.layout.certTableOffset + r.layout.certTableSize)).entries[0]!;
  return { at: b.indexOf(Buffer.from(der)), der };
}

describe('reads kept on a cached signature parse', () => {
  it('SpcIndirectDataContent: the same parse gives the same frozen read; one byte of the signed digest changed gives its own', () => {
    const { der } = signature(good());
    const parts = parseSignedData(new Uint8Array(der));
    const a = parseSpcIndirectDataContent(parts.eContentElement);
    expect(parseSpcIndirectDataContent(parseSignedData(new Uint8Array(der)).eContentElement)).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    // The digest is the last element of SpcIndirectDataContent: flip its last byte inside the blob.
    const changed = new Uint8Array(der);
    const at = Buffer.from(der).indexOf(Buffer.from(a.digest));
    changed[at + a.digest.byteLength - 1] ^= 1;
    const b = parseSpcIndirectDataContent(parseSignedData(changed).eContentElement);
    expect(b).not.toBe(a);
    expect(Buffer.from(b.digest).equals(Buffer.from(a.digest))).toBe(false);
    expect(Buffer.from(b.digest).subarray(0, -1).equals(Buffer.from(a.digest).subarray(0, -1))).toBe(true);
  });

  it('a PE whose signed file digest differs in one byte is blocked after the good one, through one Verifier', () => {
    const v = new Verifier(labPolicy());
    const verify = (b: Buffer) => { const s = v.stream({ now: AT }); s.update(b); return s.finish(); };
    const bad = good();
    const { at, der } = signature(bad);
    const expected = parseSpcIndirectDataContent(parseSignedData(new Uint8Array(der)).eContentElement).digest;
    const d = Buffer.from(der).indexOf(Buffer.from(expected));
    bad[at + d + expected.byteLength - 1] ^= 1;
    expect(verify(good()).verdict).toBe('allow');
    const r = verify(bad);
    expect(r.verdict).toBe('block');
    expect(codes(r)).toContain('DIGEST_MISMATCH');
    expect(verify(good()).verdict).toBe('allow');
    expect(codes(verify(bad))).toEqual(codes(r));
  });

  it('the signer lookup: kept for a parse\'s frozen bag, never for a caller\'s own list', () => {
    const parts = parseSignedData(new Uint8Array(signature(good()).der));
    const info = parts.signers[0]!.info;
    const signer = findSignerCertificate(info, parts.certificates);
    expect(signer).toBeDefined();
    expect(findSignerCertificate(info, parts.certificates)).toBe(signer);
    const mine = [...parts.certificates];
    expect(findSignerCertificate(info, mine)).toBe(signer);
    mine.splice(mine.indexOf(signer!), 1);
    expect(findSignerCertificate(info, mine)).toBeUndefined();
    expect(findSignerCertificate(info, [])).toBeUndefined();
    expect(findSignerCertificate(info, parts.certificates)).toBe(signer);
  });
});
