/** The command-line contract of `patchgate verify` and `patchgate rules check`, run as a real process. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, fx, pki } from '../support/fixtures.js';

const BIN = join(REPO, 'bin', 'patchgate.js');
function pg(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, cwd: REPO });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const LAB = ['--anchor', pki('updateca'), '--tsa-anchor', pki('tsaroot'), '--at', '2026-06-01T00:00:00Z'];

describe('patchgate verify', () => {
  it('exit 0 and one JSON line with the Verdict plus "file" for an allowed file', () => {
    const r = pg('verify', '--json', ...LAB, fx('good.exe'));
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!);
    expect(j).toMatchObject({ file: fx('good.exe'), verdict: 'allow', reasons: [], format: 'pe' });
    expect(j.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(j.chain.length).toBe(2);
  });
  it('exit 1 when any file is blocked; one line per file, in order', () => {
    const r = pg('verify', '--json', ...LAB, fx('good.exe'), fx('flame.exe'), fx('tampered.exe'));
    expect(r.code).toBe(1);
    const v = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(v.map((x) => x.verdict)).toEqual(['allow', 'block', 'block']);
    expect(v[2].reasons[0].code).toBe('DIGEST_MISMATCH');
  });
  it('MSI and MSP packages: read back at random from the file, same contract (format msi)', () => {
    const r = pg('verify', '--json', ...LAB, fx('good.msi'), fx('good-big.msi'), fx('good.msp'), fx('tampered.msi'), fx('appended.msi'));
    expect(r.code).toBe(1);
    const v = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(v.map((x) => [x.format, x.verdict])).toEqual([['msi', 'allow'], ['msi', 'allow'], ['msi', 'allow'], ['msi', 'block'], ['msi', 'block']]);
    expect(v[3].reasons.map((x: { code: string }) => x.code)).toEqual(['DIGEST_MISMATCH']);
    expect(v[4].reasons.map((x: { code: string }) => x.code)).toEqual(['TRAILING_DATA']);
  });
  it('APPX/MSIX packages: format msix, allow and block', () => {
    const r = pg('verify', '--json', ...LAB, fx('good.appx'), fx('rogue.appx'));
    expect(r.code).toBe(1);
    const v = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(v.map((x) => [x.format, x.verdict])).toEqual([['msix', 'allow'], ['msix', 'block']]);
    expect(v[1].reasons.map((x: { code: string }) => x.code)).toEqual(['UNTRUSTED_ROOT']);
  });
  it('the readable table names verdict, signer and reasons', () => {
    const r = pg('verify', ...LAB, fx('flame.exe'));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^BLOCK /);
    expect(r.out).toMatch(/UNTRUSTED_ROOT/);
    expect(r.out).toMatch(/CN=MS/);
  });
  it('--anchor replaces the rules\' anchors: the default rules alone block the lab file', () => {
    expect(pg('verify', '--json', '--at', '2026-06-01T00:00:00Z', fx('good.exe')).code).toBe(1);
  });
  it('--allow-sha1 accepts a SHA-1 digest', () => {
    expect(pg('verify', ...LAB, fx('sha1-digest.exe')).code).toBe(1);
    expect(pg('verify', ...LAB, '--allow-sha1', fx('sha1-digest.exe')).code).toBe(0);
  });
  it('--distrust blocks a distrusted CA', () => {
    const r = pg('verify', '--json', ...LAB, '--distrust', fx('distrust-updateca.txt'), fx('good.exe'));
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out).reasons[0].code).toBe('DISTRUSTED_CERT');
  });
  it('--at: the expired signature is fine in 2020 and expired in 2026', () => {
    expect(pg('verify', '--anchor', pki('updateca'), '--at', '2020-06-01T00:00:00Z', fx('expired.exe')).code).toBe(0);
    expect(pg('verify', '--anchor', pki('updateca'), '--at', '2026-06-01T00:00:00Z', fx('expired.exe')).code).toBe(1);
  });
  it('--detached verifies a CMS signature over a file', () => {
    expect(pg('verify', ...LAB, '--detached', fx('payload.bin.p7s'), fx('payload.bin')).code).toBe(0);
    const r = pg('verify', '--json', ...LAB, '--detached', fx('payload.bin.p7s'), fx('payload-tampered.bin'));
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({ format: 'cms-detached', reasons: [{ code: 'DIGEST_MISMATCH' }] });
  });
  it('--eku-mode and --signature-mode are honoured', () => {
    expect(pg('verify', '--anchor', pki('root'), '--at', '2026-06-01T00:00:00Z', fx('noekuca.exe')).code).toBe(1);
    expect(pg('verify', '--anchor', pki('root'), '--at', '2026-06-01T00:00:00Z', '--eku-mode', 'nested', fx('noekuca.exe')).code).toBe(0);
    expect(pg('verify', ...LAB, '--signature-mode', 'all', fx('nested-forged-inner.exe')).code).toBe(1);
  });
  it.each([
    ['a missing anchor file', ['verify', '--json', '--anchor', '/nonexistent/a.pem', fx('good.exe')], /cannot read certificate/],
    ['an anchor that is not a certificate', ['verify', '--anchor', fx('payload.bin'), fx('good.exe')], /not a valid PEM or DER/],
    ['an unknown flag', ['verify', '--no-such-flag', fx('good.exe')], /Unknown argument/],
    ['a bad --at', ['verify', '--at', 'yesterday', fx('good.exe')], /--at/],
    ['a missing FILE', ['verify', '/nonexistent/file.exe'], /no such file/],
    ['no FILE at all', ['verify'], /Not enough/],
    ['--detached with two files', ['verify', '--detached', fx('payload.bin.p7s'), fx('payload.bin'), fx('payload.bin')], /exactly one FILE/],
    ['a bad distrust file', ['verify', '--distrust', fx('payload.bin.p7s'), fx('good.exe')], /not a SHA-256 fingerprint/],
  ])('exit 2 with a message and nothing on stdout: %s', (_what, args, message) => {
    const r = pg(...args);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(message);
  });
  it('--help lists every flag of the contract', () => {
    const r = pg('verify', '--help');
    expect(r.code).toBe(0);
    for (const flag of ['--rules', '--anchor', '--tsa-anchor', '--distrust', '--allow-sha1', '--at', '--detached', '--json']) expect(r.out).toContain(flag);
  });
});

describe('patchgate rules check', () => {
  it('accepts the bundled default rules', () => {
    const r = pg('rules', 'check', join(REPO, 'rules', 'default.yaml'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/ok/);
  });
  it('names the key and the line of a schema error, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-rules-'));
    try {
      const f = join(dir, 'bad.yaml');
      writeFileSync(f, 'version: 1\nanchors: []\npolicy:\n  allowSha1: false\n  ekuMode: lenient\n');
      const r = pg('rules', 'check', f);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/bad\.yaml:5: policy\.ekuMode/);
      writeFileSync(f, 'version: 1\nanchors: []\nlimits:\n  maxPayloadBytes: 10\n  maxPayloadByte: 3\n');
      const r2 = pg('rules', 'check', f);
      expect(r2.err).toMatch(/bad\.yaml:5: limits\.maxPayloadByte: unknown key/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
