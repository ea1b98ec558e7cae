import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as asn1js from 'asn1js';
import {
  buildAuthenticodeSignature,
  compareDerForSetOf,
  embedPeSignature,
  OID_SPC_SP_OPUS_INFO,
  peChecksum,
  signCab,
  signPe,
  type AuthenticodeSigner,
} from '../../src/lab/authenticodeSigner.js';
import { createSyntheticSignedPe } from '../../src/lab/syntheticPe.js';
import { OID } from '../../src/verify/oids.js';
import { parsePeLayout } from '../../src/verify/pe/peLayout.js';
import { parseCertificateTable } from '../../src/verify/pe/winCertificate.js';
import { parseSignedData } from '../../src/verify/cms/signedDataParts.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { AT, codes, fx, labPolicy, manifest, REPO } from '../support/fixtures.js';

const PKI = fx('pki');
const ROOT = join(PKI, 'root.pem');
const certDer = (name: string) => new Uint8Array(new X509Certificate(readFileSync(join(PKI, `${name}.pem`))).raw);
const key = (name: string) => createPrivateKey(readFileSync(join(PKI, `${name}.key`)));

function signerFor(leaf: string, intermediates: string[], extra: Partial<AuthenticodeSigner> = {}): AuthenticodeSigner {
  return { signerCertDer: certDer(leaf), signerKey: key(leaf), extraCertsDer: intermediates.map(certDer), ...extra };
}

let dir: string;
beforeAll(() => {
  manifest(); // fails clearly when the fixtures were not generated
  dir = mkdtempSync(join(tmpdir(), 'patchgate-signer-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let seq = 0;
/** Runs `osslsigncode verify -CAfile root.pem` on the bytes (written to the tmp dir). */
function osslVerify(bytes: Uint8Array, ext: string): { ok: boolean; output: string } {
  const file = join(dir, `f${seq++}.${ext}`);
  writeFileSync(file, bytes);
  const r = spawnSync('osslsigncode', ['verify', '-CAfile', ROOT, '-in', file], { encoding: 'utf8' });
  if (r.error) throw r.error;
  const output = `${r.stdout}\n${r.stderr}`;
  return { ok: r.status === 0 && /^Succeeded/m.test(output), output };
}

const patchgate = (bytes: Uint8Array) => verifyBytes(bytes, labPolicy(), { now: AT });

function expectBothAccept(bytes: Uint8Array, ext: string): void {
  const o = osslVerify(bytes, ext);
  expect(o.ok, o.output).toBe(true);
  const v = patchgate(bytes);
  expect(v.reasons).toEqual([]);
  expect(v.verdict).toBe('allow');
}

const unsignedPe32 = () => new Uint8Array(readFileSync(fx('unsigned.exe')));
function unsignedPe64(): Uint8Array {
  const out = join(dir, 'unsigned64.exe');
  execFileSync(process.execPath, [join(REPO, 'test', 'fixtures', 'build-unsigned.mjs'), 'pe64', out, '--text-size', '0x3000']);
  return new Uint8Array(readFileSync(out));
}

/** File offset of the first section's raw data (.text in these files). */
function textOffset(pe: Uint8Array): number {
  const v = new DataView(pe.buffer, pe.byteOffset, pe.byteLength);
  const peOff = v.getUint32(0x3c, true);
  const sect = peOff + 24 + v.getUint16(peOff + 20, true);
  return v.getUint32(sect + 20, true);
}

function pkcs7Of(signedPe: Uint8Array): Uint8Array {
  const r = parsePeLayout(signedPe, signedPe.byteLength);
  if (r.kind !== 'layout') throw new Error('no layout');
  const { certTableOffset: o, certTableSize: s } = r.layout;
  const table = parseCertificateTable(signedPe.subarray(o, o + s));
  expect(table.problems).toEqual([]);
  expect(table.entries).toHaveLength(1);
  return table.entries[0]!;
}

const flip = (bytes: Uint8Array, at: number) => {
  const out = new Uint8Array(bytes);
  out[at]! ^= 0x01;
  return out;
};

describe('authenticodeSigner: signPe', () => {
  const publisher = () => signerFor('publisher', ['updateca'], { signingTime: new Date('2026-01-15T12:00:00Z') });

  it('a PE32 signed by the lab publisher passes osslsigncode and patchgate', () => {
    expectBothAccept(signPe(unsignedPe32(), publisher()), 'exe');
  });

  it('a PE32+ signed with SHA-512 passes both', () => {
    expectBothAccept(signPe(unsignedPe64(), { ...publisher(), digest: 'sha512' }), 'exe');
  });

  it('an ECDSA (P-256) signer with SHA-384 passes both', () => {
    expectBothAccept(signPe(unsignedPe32(), signerFor('ecpub', ['updateca'], { digest: 'sha384' })), 'exe');
  });

  it('pads a file whose length is not a multiple of 8 with hashed zeros, as osslsigncode', () => {
    const pe = unsignedPe32();
    const odd = new Uint8Array(pe.byteLength + 5);
    odd.set(pe);
    odd.set([1, 2, 3, 4, 5], pe.byteLength); // overlay data after the last section
    const signed = signPe(odd, publisher());
    const r = parsePeLayout(signed, signed.byteLength);
    if (r.kind !== 'layout') throw new Error('no layout');
    const { certTableOffset, certTableSize } = r.layout;
    expect(certTableOffset).toBe(pe.byteLength + 8);
    expect([...signed.subarray(pe.byteLength + 5, certTableOffset)]).toEqual([0, 0, 0]);
    expect(certTableOffset + certTableSize).toBe(signed.byteLength);
    const dwLength = new DataView(signed.buffer).getUint32(certTableOffset, true);
    expect(dwLength).toBe(certTableSize);
    expect(dwLength % 8).toBe(0);
    expectBothAccept(signed, 'exe');
    // The padding is covered: making it non-zero breaks the digest.
    expect(codes(patchgate(flip(signed, pe.byteLength + 6)))).toContain('DIGEST_MISMATCH');
  });

  it('writes the same SpcIndirectDataContent as osslsigncode, and a well-formed SignedData', () => {
    const signed = signPe(unsignedPe32(), publisher());
    const ours = parseSignedData(pkcs7Of(signed));
    const theirs = parseSignedData(pkcs7Of(new Uint8Array(readFileSync(fx('good.exe'))))); // osslsigncode, same input
    expect(Buffer.from(ours.eContentElement!.valueBeforeDecodeView)).toEqual(Buffer.from(theirs.eContentElement!.valueBeforeDecodeView));
    expect(ours.eContentType).toBe(OID.spcIndirectData);
    expect(ours.digestAlgorithmOids).toEqual(['2.16.840.1.101.3.4.2.1']);
    expect(ours.certificates.map((c) => Buffer.from(c.der))).toEqual([Buffer.from(certDer('publisher')), Buffer.from(certDer('updateca'))]);

    const ci = asn1js.fromBER(pkcs7Of(signed)).result as asn1js.Sequence;
    const sd = (ci.valueBlock.value[1] as asn1js.Constructed).valueBlock.value[0] as asn1js.Sequence;
    expect((sd.valueBlock.value[0] as asn1js.Integer).valueBlock.valueDec).toBe(1);

    expect(ours.signers).toHaveLength(1);
    const { info, signedAttrsDer } = ours.signers[0]!;
    expect(info.version).toBe(1);
    expect(info.signatureAlgorithm.algorithmId).toBe(OID.rsaEncryption);
    const types = info.signedAttrs!.attributes.map((a) => a.type);
    expect([...types].sort()).toEqual([OID.contentType, OID.messageDigest, OID.signingTime, OID_SPC_SP_OPUS_INFO].sort());
    // DER SET OF order, and the signature covers exactly that SET.
    const ders = info.signedAttrs!.attributes.map((a) => new Uint8Array(a.toSchema().toBER()));
    for (let i = 1; i < ders.length; i++) expect(compareDerForSetOf(ders[i - 1]!, ders[i]!)).toBeLessThan(0);
    expect(signedAttrsDer![0]).toBe(0x31);
    const md = info.signedAttrs!.attributes.find((a) => a.type === OID.messageDigest)!.values[0] as asn1js.OctetString;
    expect(Buffer.from(md.valueBlock.valueHexView)).toEqual(createHash('sha256').update(ours.eContentValue!).digest());
  });

  it('sets the PE CheckSum of the signed file', () => {
    const signed = signPe(unsignedPe32(), publisher());
    const r = parsePeLayout(signed, signed.byteLength);
    if (r.kind !== 'layout') throw new Error('no layout');
    expect(new DataView(signed.buffer).getUint32(r.layout.checksumOffset, true)).toBe(peChecksum(signed, r.layout.checksumOffset));
    expect(osslVerify(signed, 'exe').output).not.toMatch(/invalid PE checksum/i);
  });

  it('MD5 works: patchgate refuses it by policy (WEAK_ALGORITHM), osslsigncode accepts it', () => {
    const signed = signPe(unsignedPe32(), { ...publisher(), digest: 'md5' });
    expect(osslVerify(signed, 'exe').ok).toBe(true);
    const v = patchgate(signed);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['WEAK_ALGORITHM']);
  });

  it('re-enacts Flame: the MD5 "MS" leaf under the Licensing PCA chains to the vendor root, yet is blocked', () => {
    const signed = signPe(unsignedPe32(), signerFor('flameleaf', ['licensing'], { digest: 'md5' }));
    expect(osslVerify(signed, 'exe').ok).toBe(true); // the reference tool accepts the forged chain
    const v = patchgate(signed);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(expect.arrayContaining(['UNTRUSTED_ROOT', 'WEAK_ALGORITHM']));
  });

  it('flipping a byte in .text makes both reject', () => {
    const signed = signPe(unsignedPe32(), publisher());
    const tampered = flip(signed, textOffset(signed) + 0x100);
    const o = osslVerify(tampered, 'exe');
    expect(o.ok).toBe(false);
    expect(o.output).toMatch(/MISMATCH/);
    const v = patchgate(tampered);
    expect(v.verdict).toBe('block');
    expect(codes(v)).toEqual(['DIGEST_MISMATCH']);
  });

  it('refuses an already signed PE, and embedPeSignature needs an unsigned one too', () => {
    const signed = signPe(unsignedPe32(), publisher());
    expect(() => signPe(signed, publisher())).toThrow(/already signed/);
    expect(() => embedPeSignature(signed, pkcs7Of(signed))).toThrow(/already signed/);
  });

  it('checks the file digest length and the key type', () => {
    const base = { dataType: 'pe' as const, signerCertDer: certDer('publisher'), signerKey: key('publisher') };
    expect(() => buildAuthenticodeSignature({ ...base, digest: 'sha256', fileDigest: new Uint8Array(20) })).toThrow(/32 bytes/);
    expect(() => buildAuthenticodeSignature({ ...base, signerKey: key('ecpub'), digest: 'md5', fileDigest: new Uint8Array(16) })).toThrow(/ECDSA/);
  });
});

describe('authenticodeSigner: signCab', () => {
  const unsignedCab = () => new Uint8Array(readFileSync(fx('unsigned.cab')));

  it('a CAB signed by the lab publisher passes osslsigncode and patchgate', () => {
    const signed = signCab(unsignedCab(), signerFor('publisher', ['updateca']));
    expectBothAccept(signed, 'cab');
    // Same reserve layout as osslsigncode's good.cab (which differs only by its signature).
    const good = new Uint8Array(readFileSync(fx('good.cab')));
    expect(Buffer.from(signed.subarray(0, 48))).toEqual(Buffer.from(good.subarray(0, 48)));
    expect(Buffer.from(signed.subarray(52, 2151))).toEqual(Buffer.from(good.subarray(52, 2151)));
  });

  it('flipping a byte of the cabinet data makes both reject', () => {
    const signed = signCab(unsignedCab(), signerFor('publisher', ['updateca']));
    const tampered = flip(signed, 1000);
    expect(osslVerify(tampered, 'cab').ok).toBe(false);
    expect(codes(patchgate(tampered))).toEqual(['DIGEST_MISMATCH']);
  });
});

describe('syntheticPe', () => {
  const signer = () => signerFor('publisher', ['updateca']);
  const concat = (chunks: Iterable<Uint8Array>) => Buffer.concat([...chunks].map((c) => Buffer.from(c)));

  it('a 3 MiB generated PE is real Authenticode: osslsigncode and patchgate accept it', () => {
    const pe = createSyntheticSignedPe({ size: 3 * 1024 * 1024, signer: signer(), seed: 42 });
    const bytes = concat(pe.chunks());
    expect(bytes.byteLength).toBe(pe.totalSize);
    expect(Math.abs(pe.totalSize - 3 * 1024 * 1024)).toBeLessThan(8192);
    const o = osslVerify(bytes, 'exe');
    expect(o.ok, o.output).toBe(true);
    expect(o.output).not.toMatch(/invalid PE checksum/i);
    const v = patchgate(bytes);
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.digest?.actual).toBe(Buffer.from(pe.fileDigest).toString('hex'));
  });

  it('yields the same bytes whatever the chunk size or buffer reuse; seeds and MiB blocks differ', () => {
    const size = 2 * 1024 * 1024 + 777;
    const a = concat(createSyntheticSignedPe({ size, signer: signer(), seed: 3 }).chunks());
    const reused = createSyntheticSignedPe({ size, signer: signer(), seed: 3, chunkSize: 4093, reuseChunkBuffer: true });
    const parts: Buffer[] = [];
    for (const c of reused.chunks()) parts.push(Buffer.from(c)); // copy: the buffer is refilled
    expect(Buffer.concat(parts).equals(a)).toBe(true);
    const other = createSyntheticSignedPe({ size, signer: signer(), seed: 4 });
    expect(Buffer.from(other.fileDigest).equals(Buffer.from(createSyntheticSignedPe({ size, signer: signer(), seed: 3 }).fileDigest))).toBe(false);
    const MiB = 1024 * 1024;
    expect(a.subarray(512, 512 + 4096).equals(a.subarray(MiB + 512, MiB + 512 + 4096))).toBe(false);
  });

  it('corruptByteAt flips one byte after signing: both reject', () => {
    const pe = createSyntheticSignedPe({ size: 3 * 1024 * 1024, signer: signer(), seed: 42, corruptByteAt: 1_500_000 });
    const bytes = concat(pe.chunks());
    const o = osslVerify(bytes, 'exe');
    expect(o.ok).toBe(false);
    expect(o.output).toMatch(/MISMATCH/);
    expect(codes(patchgate(bytes))).toEqual(['DIGEST_MISMATCH']);
  });
});
