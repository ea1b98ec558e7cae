/**
 * Interop for the random-access formats (MSI/MSP, APPX/MSIX): osslsigncode 2.9 verifies every such
 * fixture, and patchgate (pinning the same root osslsigncode is given) must compute the same digest
 * (MSI: the stream digest and the MsiDigitalSignatureEx pre-hash; APPX: the APPX/AXPC/AXCD/AXCT/AXBM
 * blob), read the same signed digest, and reach the same verdict, except for the listed policy differences.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import type { ReasonCode } from '../../src/verify/reasonCodes.js';
import { FIXTURES, codes, fx, labPolicy, manifest, verifyRandomAccessFixture } from '../support/fixtures.js';

/** Where patchgate blocks what osslsigncode accepts, and why (its policy is stricter). */
const EXPECTED_DIFFERENCES: Record<string, { codes: ReasonCode[]; why: string }> = {
  'flame-msi': { codes: ['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], why: 'Flame-like chain: OpenSSL accepts the MD5 certificate signature and absent EKUs; patchgate refuses both.' },
  'appended-msi': { codes: ['TRAILING_DATA'], why: 'Bytes after the compound file (GlueBall, CVE-2020-1464): osslsigncode ignores them; patchgate refuses what no signature covers.' },
  'rogue-inner-appxbundle': { codes: ['UNTRUSTED_ROOT'], why: 'osslsigncode verifies the bundle\'s own signature only; patchgate verifies each package inside as well, and one is signed by the rogue chain.' },
  'rogue-appxbundle': { codes: ['UNTRUSTED_ROOT'], why: 'Pinning the rogue root as osslsigncode is given it: the bundle verifies, its packages (signed by the publisher under the vendor root) do not; osslsigncode checks the bundle only.' },
  'flame-appx': { codes: ['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], why: 'Flame-like chain, as for flame-msi.' },
  'sha1-digest-msi': { codes: ['WEAK_ALGORITHM'], why: 'osslsigncode accepts a SHA-1 digest; patchgate only where the rules allow SHA-1.' },
  'sha1-digest-msp': { codes: ['WEAK_ALGORITHM'], why: 'As sha1-digest-msi.' },
  'sha1-cert-msi': { codes: ['WEAK_ALGORITHM'], why: 'osslsigncode accepts a leaf certificate signed with SHA-1; patchgate only where the rules allow SHA-1.' },
  'sha1-cert-appx': { codes: ['WEAK_ALGORITHM'], why: 'As sha1-cert-msi.' },
  'sha1-cert-appxbundle': { codes: ['WEAK_ALGORITHM'], why: 'As sha1-cert-msi.' },
  'flame-msp': { codes: ['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], why: 'Flame-like chain, as for flame-msi.' },
  'flame-appxbundle': { codes: ['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], why: 'Flame-like chain, as for flame-msi.' },
};

function osslsigncode(file: string, caFile: string, at: string | null) {
  const args = ['verify', '-verbose', '-CAfile', caFile, '-in', file];
  if (at) args.push('-time', String(Math.floor(new Date(at).getTime() / 1000)));
  const r = spawnSync('osslsigncode', args, { cwd: FIXTURES, encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status === null) throw new Error(`osslsigncode ${args.join(' ')}: ${r.error?.message ?? r.signal}`);
  const out = `${r.stdout}${r.stderr}`;
  const hex = (label: string) => out.match(new RegExp(`${label}\\s*:\\s*([0-9A-F]+)`))?.[1]?.toLowerCase();
  return {
    intact: r.status === 0, out,
    current: hex('Current DigitalSignature'), calculated: hex('Calculated DigitalSignature'),
    exCurrent: hex('Current MsiDigitalSignatureEx'), exCalculated: hex('Calculated MsiDigitalSignatureEx'),
    appxBlob: out.match(/Hash of file: :\s*([0-9A-F]+)/)?.[1]?.toLowerCase(),
  };
}

describe('MSI and APPX interop with osslsigncode', () => {
  const names = Object.keys(manifest().randomAccessFixtures);

  it('covers every MSI and APPX fixture', () => {
    expect(names.filter((n) => manifest().randomAccessFixtures[n]!.format === 'msi').length).toBeGreaterThanOrEqual(12);
    expect(names.filter((n) => manifest().randomAccessFixtures[n]!.format === 'msix').length).toBeGreaterThanOrEqual(6);
  });

  it.each(names)('%s: same digests and verdict as osslsigncode (same root pinned)', async (name) => {
    const f = manifest().randomAccessFixtures[name]!;
    const ref = osslsigncode(f.file, f.caFile, f.at);
    // SHA-1 is computed (to compare digests) but still refused: allowSha1 stays false.
    const v = await verifyRandomAccessFixture(name, labPolicy({ anchors: pinCertificateFile(fx(f.caFile)), fileDigests: ['sha1', 'sha256', 'sha384', 'sha512'] }));
    if (f.format === 'msix') {
      // The signed blob: osslsigncode's "Hash of file" is what patchgate computed.
      if (ref.appxBlob) expect(v.digest?.actual, ref.out).toBe(ref.appxBlob);
      else expect(v.verdict).toBe('block');
    } else if (ref.current) {
      // Both read the same signed digest and compute the same one over the streams.
      expect(v.digest?.expected, ref.out).toBe(ref.current);
      expect(v.digest?.actual, ref.out).toBe(ref.calculated);
    } else {
      expect(v.digest).toBeUndefined(); // unsigned: neither found a signature
    }
    if (ref.exCurrent) {
      // The same pre-hash: a mismatch for osslsigncode is patchgate's MsiDigitalSignatureEx DIGEST_MISMATCH.
      const exMismatch = v.reasons.some((r) => r.code === 'DIGEST_MISMATCH' && /MsiDigitalSignatureEx/.test(r.message));
      expect(exMismatch, ref.out).toBe(ref.exCurrent !== ref.exCalculated);
    }
    const diff = EXPECTED_DIFFERENCES[name];
    if (diff) {
      expect(ref.intact, ref.out).toBe(true);
      expect(v.verdict).toBe('block');
      expect(codes(v)).toEqual([...diff.codes].sort());
    } else {
      expect(v.verdict === 'allow', `${JSON.stringify(v.reasons)}\n${ref.out}`).toBe(ref.intact);
    }
  });
});
