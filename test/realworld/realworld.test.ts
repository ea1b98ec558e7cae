/**
 * Genuinely third-party-signed PE files from Debian's archive (fetched with apt-get by
 * fetch-realworld.sh): Microsoft's dual-signed UEFI shim and Debian's grub. patchgate allows each
 * only when its real issuing CA is pinned, and blocks it UNTRUSTED_ROOT otherwise.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { loadRulesFile } from '../../src/policy/rulesFile.js';
import { buildPolicy } from '../../src/policy/buildPolicy.js';
import { emptyPolicy } from '../../src/verify/approvedCaPolicy.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { REPO, codes } from '../support/fixtures.js';

const HERE = join(REPO, 'test', 'realworld');
const cache = (f: string) => join(HERE, 'cache', f);
const anchor = (f: string) => pinCertificateFile(join(HERE, 'anchors', f));
const MS_TSA = pinCertificateFile(join(REPO, 'certs', 'microsoft', 'time-stamp-pca-2010-reissue.pem'));
const UEFI_2011 = anchor('microsoft-corporation-uefi-ca-2011.pem');
const UEFI_2023 = anchor('microsoft-uefi-ca-2023.pem');
const DEBIAN = anchor('debian-secure-boot-ca.pem');

let shim: Buffer;
let grub: Buffer;

beforeAll(() => {
  execFileSync('bash', [join(HERE, 'fetch-realworld.sh')], { stdio: 'inherit', timeout: 300_000 });
  shim = readFileSync(cache('shimx64.efi.signed'));
  grub = readFileSync(cache('grubx64.efi.signed'));
}, 320_000);

describe("Microsoft-signed shim (two WIN_CERTIFICATE entries, RFC 3161 timestamps)", () => {
  it('is allowed when both UEFI CAs and the Time-Stamp PCA are pinned, at the time its timestamp proves', () => {
    const v = verifyBytes(shim, emptyPolicy({ anchors: [...UEFI_2011, ...UEFI_2023], tsaAnchors: MS_TSA, signatureMode: 'all' }));
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.signatures?.length).toBe(2);
    expect(v.timestamp?.authority).toMatch(/Microsoft Time-Stamp Service/);
    expect(v.signer?.subject).toMatch(/Microsoft/);
  });
  it('without the TSA anchor its expired certificates are not rescued', () => {
    const v = verifyBytes(shim, emptyPolicy({ anchors: [...UEFI_2011, ...UEFI_2023] }), { now: new Date('2026-11-25T00:00:00Z') });
    expect(codes(v)).toContain('CERT_EXPIRED');
  });
  it('primary mode evaluates the first entry (UEFI CA 2011); all mode needs the 2023 CA too', () => {
    expect(verifyBytes(shim, emptyPolicy({ anchors: UEFI_2011, tsaAnchors: MS_TSA })).verdict).toBe('allow');
    const all = verifyBytes(shim, emptyPolicy({ anchors: UEFI_2011, tsaAnchors: MS_TSA, signatureMode: 'all' }));
    expect(all.verdict).toBe('block');
    // The second entry's chain ends at UEFI CA 2023 (not pinned; no EKU extension, so under the strict rule it also lacks codeSigning).
    expect(all.reasons.filter((r) => r.code === 'UNTRUSTED_ROOT').map((r) => r.message).join()).toMatch(/^signature #1: .*UEFI CA 2023/);
  });
  it('is blocked UNTRUSTED_ROOT under the default rules (a different Microsoft CA is not the approved one)', () => {
    const v = verifyBytes(shim, buildPolicy(loadRulesFile(join(REPO, 'rules', 'default.yaml'))));
    expect(v.verdict).toBe('block');
    expect(v.reasons[0]?.code).toBe('UNTRUSTED_ROOT');
    expect(v.reasons[0]?.message).toMatch(/UEFI CA 2011/);
  });
});

describe('Debian-signed grub (leaf only in the bag, no timestamp)', () => {
  it('is allowed when the Debian Secure Boot CA is pinned by its certificate', () => {
    const v = verifyBytes(grub, emptyPolicy({ anchors: DEBIAN }), { now: new Date('2026-05-04T04:18:39Z') });
    expect(v.reasons).toEqual([]);
    expect(v.chain?.map((c) => c.subject)).toEqual(['CN=Debian Secure Boot Signer 2022 - grub2', 'CN=Debian Secure Boot CA']);
  });
  it('is blocked UNTRUSTED_ROOT when the CA is pinned by fingerprint only (the signature does not carry it)', () => {
    const v = verifyBytes(grub, emptyPolicy({ anchors: DEBIAN.map((p) => ({ sha256: p.sha256, label: 'fp' })) }), { now: new Date('2026-05-04T00:00:00Z') });
    expect(codes(v)).toEqual(['UNTRUSTED_ROOT']);
  });
  it('is blocked CERT_EXPIRED after its leaf expires', () => {
    expect(codes(verifyBytes(grub, emptyPolicy({ anchors: DEBIAN }), { now: new Date('2033-01-01T00:00:00Z') }))).toEqual(['CERT_EXPIRED']);
  });
  it('its Authenticode digest equals the one osslsigncode computes, and osslsigncode agrees it is intact', () => {
    const v = verifyBytes(grub, emptyPolicy({ anchors: DEBIAN }), { now: new Date('2026-05-04T04:18:39Z') });
    const r = spawnSync('osslsigncode', ['verify', '-in', cache('grubx64.efi.signed'), '-CAfile', join(HERE, 'anchors', 'debian-secure-boot-ca.pem')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const calc = /Calculated message digest\s*:\s*([0-9A-Fa-f]+)/.exec(r.stdout)?.[1]?.toLowerCase();
    expect(calc).toBe(v.digest?.actual);
  });
});
