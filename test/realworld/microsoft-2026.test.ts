/**
 * Genuinely signed Windows binaries from npm (fetched by fetch-realworld-npm.sh) under the bundled
 * rules: Microsoft's 2026 PCA rotation must not block genuine Microsoft files, and a third party
 * signing through Azure Trusted Signing (a Microsoft-operated CA, but not a Microsoft payload CA)
 * must stay blocked.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadRulesFile } from '../../src/policy/rulesFile.js';
import { buildPolicy } from '../../src/policy/buildPolicy.js';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { emptyPolicy } from '../../src/verify/approvedCaPolicy.js';
import { IncrementalVerifier, verifyBytes } from '../../src/verify/incrementalVerifier.js';
import type { Verdict } from '../../src/verify/verdict.js';
import { REPO, codes } from '../support/fixtures.js';

const HERE = join(REPO, 'test', 'realworld');
const cache = (f: string) => join(HERE, 'cache', f);
const MS = (f: string) => join(REPO, 'certs', 'microsoft', f);
const defaultPolicy = () => buildPolicy(loadRulesFile(join(REPO, 'rules', 'default.yaml')));
const PCA_2024 = '3dadfaf812dd1bbaef45834ccbd188f3cd97139e2ed1aca69c2dd63082142f8f';
const PCA_2011 = '56da8722afd94066ffe1e4595473a4854892b843a0827d53fb7d8f4aeed1e18b';
const NOW = new Date('2026-12-03T00:00:00Z');

let tsgo: Buffer;
let conpty: Buffer;

/** deno.exe (97 MB) streamed out of its npm tarball into the verifier: never stored on disk. */
function verifyDeno(policy = defaultPolicy()): Promise<Verdict> {
  return new Promise((resolve, reject) => {
    const v = new IncrementalVerifier(policy, { now: NOW });
    const tar = spawn('tar', ['-xzOf', cache('deno-win32-x64.tgz'), 'package/deno.exe']);
    tar.stdout.on('data', (c: Buffer) => v.update(c));
    tar.on('error', reject);
    tar.on('close', (code) => (code === 0 ? resolve(v.finish()) : reject(new Error(`tar exited ${code}`))));
  });
}

beforeAll(() => {
  execFileSync('bash', [join(HERE, 'fetch-realworld-npm.sh')], { stdio: 'inherit', timeout: 300_000 });
  tsgo = readFileSync(cache('tsgo.exe'));
  conpty = readFileSync(cache('conpty.dll'));
}, 320_000);

describe('Microsoft Code Signing PCA 2024 (tsgo.exe, signed 2026-07-07)', () => {
  it('is allowed under the bundled rules, its chain ending at the pinned PCA 2024', () => {
    const v = verifyBytes(tsgo, defaultPolicy(), { now: NOW });
    expect(v.reasons).toEqual([]);
    expect(v.verdict).toBe('allow');
    expect(v.chain?.at(-1)?.sha256).toBe(PCA_2024);
    expect(v.timestamp?.authority).toMatch(/Microsoft Time-Stamp Service/);
  });
  it('is blocked UNTRUSTED_ROOT when only the 2011 PCAs are pinned (the gate before issue #14)', () => {
    const old = emptyPolicy({ anchors: [...pinCertificateFile(MS('code-signing-pca-2011.pem')), ...pinCertificateFile(MS('windows-production-pca-2011.pem'))], tsaAnchors: pinCertificateFile(MS('time-stamp-pca-2010-reissue.pem')) });
    expect(codes(verifyBytes(tsgo, old, { now: NOW }))).toContain('UNTRUSTED_ROOT');
  });
  it('the committed PEM is the certificate the signature carries, with the facts certs/README.md states', () => {
    const pem = pinCertificateFile(MS('code-signing-pca-2024.pem'))[0]!;
    expect(pem.sha256).toBe(PCA_2024);
    const r = spawnSync('openssl', ['x509', '-in', MS('code-signing-pca-2024.pem'), '-noout', '-text'], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/Public-Key: \(4096 bit\)/);
    expect(r.stdout).toMatch(/Signature Algorithm: sha384WithRSAEncryption/);
    expect(r.stdout).toMatch(/X509v3 Key Usage: critical/);
    expect(r.stdout).not.toMatch(/Extended Key Usage/);
    expect(r.stdout).toMatch(/Not After : Mar 22 22:13:04 2036 GMT/);
  });
  it('osslsigncode computes the same Authenticode digest', () => {
    const v = verifyBytes(tsgo, defaultPolicy(), { now: NOW });
    const r = spawnSync('osslsigncode', ['verify', '-in', cache('tsgo.exe')], { encoding: 'utf8', timeout: 120_000 });
    const calc = /Calculated message digest\s*:\s*([0-9A-Fa-f]+)/.exec(r.stdout)?.[1]?.toLowerCase();
    expect(calc).toBe(v.digest?.actual);
  });
});

describe('Microsoft Code Signing PCA 2011, expired 2026-07-08 (conpty.dll, timestamped 2025-10-09)', () => {
  it('is allowed under the bundled rules at the time its timestamp proves', () => {
    const v = verifyBytes(conpty, defaultPolicy(), { now: NOW });
    expect(v.reasons).toEqual([]);
    expect(v.chain?.at(-1)?.sha256).toBe(PCA_2011);
    expect(v.verifiedAt).toMatch(/^2025-10-09/);
  });
  it('is blocked CERT_EXPIRED without the timestamp anchor (nothing proves it was signed in time)', () => {
    const p = defaultPolicy();
    expect(codes(verifyBytes(conpty, { ...p, tsaAnchors: [] }, { now: NOW }))).toContain('CERT_EXPIRED');
  });
  it('osslsigncode agrees the signature is intact and computes the same digest', () => {
    const v = verifyBytes(conpty, defaultPolicy(), { now: NOW });
    const r = spawnSync('osslsigncode', ['verify', '-in', cache('conpty.dll')], { encoding: 'utf8', timeout: 60_000 });
    const calc = /Calculated message digest\s*:\s*([0-9A-Fa-f]+)/.exec(r.stdout)?.[1]?.toLowerCase();
    expect(calc).toBe(v.digest?.actual);
  });
});

describe('Azure Trusted Signing (deno.exe: Deno Land Inc. <- Microsoft ID Verified CS EOC CA 04)', () => {
  it('is blocked UNTRUSTED_ROOT under the bundled rules: a Microsoft-run CA for third parties is not a payload CA', async () => {
    const v = await verifyDeno();
    expect(v.verdict).toBe('block');
    expect(v.reasons[0]?.code).toBe('UNTRUSTED_ROOT');
    expect(v.reasons[0]?.message).toMatch(/Microsoft Identity Verification Root Certificate Authority 2020/);
    expect(v.chain?.map((c) => c.subject).join(' | ')).toMatch(/Microsoft ID Verified CS EOC CA 04/);
    // Its digest is intact: the block is the CA, not a damaged file.
    expect(v.digest && v.digest.expected === v.digest.actual).toBe(true);
    expect(codes(v)).not.toContain('DIGEST_MISMATCH');
  }, 120_000);
});
