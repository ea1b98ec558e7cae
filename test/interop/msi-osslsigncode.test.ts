/**
 * Interop for MSI/MSP: osslsigncode 2.9 verifies every MSI fixture, and patchgate (pinning the same
 * root osslsigncode is given) must compute the same MSI digest (and MsiDigitalSignatureEx pre-hash),
 * read the same signed digest, and reach the same verdict, except for the listed policy differences.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import type { ReasonCode } from '../../src/verify/reasonCodes.js';
import { FIXTURES, codes, fx, labPolicy, manifest, verifyMsiFixture } from '../support/fixtures.js';

/** Where patchgate blocks what osslsigncode accepts, and why (its policy is stricter). */
const EXPECTED_DIFFERENCES: Record<string, { codes: ReasonCode[]; why: string }> = {
  'flame-msi': { codes: ['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], why: 'Flame-like chain: OpenSSL accepts the MD5 certificate signature and absent EKUs; patchgate refuses both.' },
  'appended-msi': { codes: ['TRAILING_DATA'], why: 'Bytes after the compound file (GlueBall, CVE-2020-1464): osslsigncode ignores them; patchgate refuses what no signature covers.' },
  'sha1-digest-msi': { codes: ['WEAK_ALGORITHM'], why: 'osslsigncode accepts a SHA-1 digest; patchgate only where the rules allow SHA-1.' },
};

function osslsigncode(file: string, caFile: string, at: string | null) {
  const args = ['verify', '-CAfile', caFile, '-in', file];
  if (at) args.push('-time', String(Math.floor(new Date(at).getTime() / 1000)));
  const r = spawnSync('osslsigncode', args, { cwd: FIXTURES, encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status === null) throw new Error(`osslsigncode ${args.join(' ')}: ${r.error?.message ?? r.signal}`);
  const out = `${r.stdout}${r.stderr}`;
  const hex = (label: string) => out.match(new RegExp(`${label}\\s*:\\s*([0-9A-F]+)`))?.[1]?.toLowerCase();
  return {
    intact: r.status === 0, out,
    current: hex('Current DigitalSignature'), calculated: hex('Calculated DigitalSignature'),
    exCurrent: hex('Current MsiDigitalSignatureEx'), exCalculated: hex('Calculated MsiDigitalSignatureEx'),
  };
}

describe('MSI interop with osslsigncode', () => {
  const names = Object.keys(manifest().msiFixtures);

  it('covers every MSI fixture', () => {
    expect(names.length).toBeGreaterThanOrEqual(12);
  });

  it.each(names)('%s: same digests and verdict as osslsigncode (same root pinned)', async (name) => {
    const f = manifest().msiFixtures[name]!;
    const ref = osslsigncode(f.file, f.caFile, f.at);
    // SHA-1 is computed (to compare digests) but still refused: allowSha1 stays false.
    const v = await verifyMsiFixture(name, labPolicy({ anchors: pinCertificateFile(fx(f.caFile)), fileDigests: ['sha1', 'sha256', 'sha384', 'sha512'] }));
    if (ref.current) {
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
