/** `patchgate trust list`, `trust import-ctl`, `verify X.cat` and `verify --catalog`, run as real processes on lab-made lists. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';
import { waitFor } from '../support/gateHarness.js';
import { signTrustList, singleFileCabinet } from '../../src/lab/trustListSigner.js';
import { memberDigest } from '../../src/verify/ctl/catalogMembership.js';
import { OID } from '../../src/verify/oids.js';
import { buildPE } from '../fixtures/build-unsigned.mjs';
import { makeTrustListPki, rootList, sha1, type TrustListPki } from '../support/trustListPki.js';

const BIN = join(REPO, 'bin', 'patchgate.js');
function pg(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, cwd: REPO });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let dir: string;
let pki: TrustListPki;
let rules: string;
const DISALLOWED_USAGE = '1.3.6.1.4.1.311.10.3.30';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-trust-cli-'));
  pki = makeTrustListPki();
  writeFileSync(join(dir, 'code-pca.pem'), pki.codePca.pem);
  writeFileSync(join(dir, 'list-ca.pem'), pki.listCa.pem);
  rules = join(dir, 'rules.yaml');
  writeFileSync(rules, [
    'version: 1',
    'anchors:',
    '  - { file: code-pca.pem, name: Lab Code Signing PCA }',
    `  - { file: ${join(REPO, 'certs', 'microsoft', 'code-signing-pca-2011.pem')}, name: Code Signing PCA 2011 }`,
    'ctlAnchors:',
    '  - { file: list-ca.pem, name: Lab Certificate List CA }',
    '',
  ].join('\n'));
  // A disallowed list naming two certificates, and one signed by the code-signing leaf.
  writeFileSync(join(dir, 'disallowedcert.stl'), rootList(pki.listPublisher, pki.listCa, [pki.codeLeaf.der, pki.root.der], DISALLOWED_USAGE));
  writeFileSync(join(dir, 'disallowedcertstl.cab'), singleFileCabinet('disallowedcert.stl', rootList(pki.listPublisher, pki.listCa, [pki.codeLeaf.der, pki.codePca.der], DISALLOWED_USAGE)));
  writeFileSync(join(dir, 'forged.stl'), rootList(pki.codeLeaf, pki.codePca, [pki.listCa.der], DISALLOWED_USAGE));
  const member = buildPE('pe64') as Uint8Array;
  writeFileSync(join(dir, 'member.sys'), member);
  writeFileSync(join(dir, 'other.sys'), buildPE('pe32') as Uint8Array);
  writeFileSync(join(dir, 'driver.cat'), signTrustList({
    usage: [OID.catalogList], thisUpdate: new Date(), entries: [{ identifier: Buffer.from('member.sys', 'utf16le'), member: { digest: 'sha256', value: memberDigest(member, 'sha256', 1 << 20), dataType: 'pe' } }],
    signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der],
  }));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('patchgate trust list', () => {
  it('lists every anchor with fingerprint, validity and what it may sign, and warns about expired ones', () => {
    const r = pg('trust', 'list', '--rules', rules, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.anchors.map((a: { role: string; name: string }) => `${a.role}:${a.name}`)).toEqual(['code:Lab Code Signing PCA', 'code:Code Signing PCA 2011', 'trust-list:Lab Certificate List CA']);
    expect(j.anchors[1]).toMatchObject({ sha256: '56da8722afd94066ffe1e4595473a4854892b843a0827d53fb7d8f4aeed1e18b', status: 'expired', notAfter: '2026-07-08T21:09:09.000Z' });
    expect(j.anchors[2].signs).toMatch(/1\.3\.6\.1\.4\.1\.311\.10\.3\.9/);
    expect(r.err).toMatch(/warning: code anchor "Code Signing PCA 2011".*expired 2026-07-08/);
  });
  it('warns about an anchor expiring within 90 days', () => {
    const r = pg('trust', 'list', '--rules', rules, '--at', '2026-05-01T00:00:00Z');
    expect(r.out).toMatch(/Code Signing PCA 2011\n.*\n.*\[expiring\]/);
    expect(r.err).toMatch(/expires 2026-07-08.*within 90 days/);
  });
  it('rules check warns when no code-signing anchor is valid now', () => {
    const expired = join(dir, 'expired.yaml');
    writeFileSync(expired, `version: 1\nanchors:\n  - file: ${join(REPO, 'certs', 'microsoft', 'windows-production-pca-2011.pem')}\n`);
    const r = pg('rules', 'check', expired);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/no approved code-signing anchor is valid now/);
    expect(pg('rules', 'check', rules).err).not.toMatch(/no approved code-signing anchor is valid now/);
  });
});

describe('patchgate run at startup', () => {
  it('warns when no code-signing anchor is valid now (here: only an expired PCA, given with --anchor)', async () => {
    const child = spawn(process.execPath, [BIN, 'run', '--listen', '127.0.0.1:0', '--admin', 'off', '--update-host', '127.0.0.1',
      '--anchor', join(REPO, 'certs', 'microsoft', 'windows-production-pca-2011.pem'), '--audit', join(dir, 'run-audit.jsonl'), '--ca-dir', join(dir, 'ca'), '--spool-dir', dir],
    { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    await waitFor(() => /approved anchor\(s\)/.test(err), 20_000); // printed after the warnings
    child.kill('SIGTERM');
    await exited;
    expect(err).toMatch(/warning: no approved code-signing anchor is valid now/);
    expect(err).toMatch(/warning: code anchor "Microsoft Windows Production PCA 2011".*expired 2026-10-19/);
  }, 30_000);
});

describe('patchgate trust import-ctl', () => {
  it('verifies a disallowed list under the CTL anchor and adds its thumbprints to a distrust file that the rules can load', () => {
    const out = join(dir, 'distrust-ctl.txt');
    const r = pg('trust', 'import-ctl', join(dir, 'disallowedcert.stl'), '--rules', rules, '--out', out);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.out).toMatch(/2 entries, 2 new/);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain(Buffer.from(sha1(pki.codeLeaf.der)).toString('hex'));
    // the cabinet form adds only what is new
    const again = pg('trust', 'import-ctl', join(dir, 'disallowedcertstl.cab'), '--rules', rules, '--out', out);
    expect(again.out).toMatch(/2 entries, 1 new/);
    // and the distrust list now blocks what the CTL distrusts: the code-signing leaf's catalog
    writeFileSync(rules + '.d.yaml', readFileSync(rules, 'utf8') + `distrustFiles: [${out}]\n`);
    const v = pg('verify', '--json', '--rules', rules + '.d.yaml', join(dir, 'driver.cat'));
    expect(v.code).toBe(1);
    expect(JSON.parse(v.out).reasons.map((x: { code: string }) => x.code)).toContain('DISTRUSTED_CERT');
  });
  it('refuses a list signed by a code-signing leaf, writing nothing', () => {
    const out = join(dir, 'never.txt');
    const r = pg('trust', 'import-ctl', join(dir, 'forged.stl'), '--rules', rules, '--out', out);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/UNTRUSTED_ROOT/);
    expect(() => readFileSync(out)).toThrow();
  });
});

describe('patchgate verify with catalogs', () => {
  it('verify X.cat verifies the catalog itself', () => {
    const r = pg('verify', '--json', '--rules', rules, join(dir, 'driver.cat'));
    expect(r.code, r.out).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ verdict: 'allow', format: 'catalog', trustList: { entries: 1 } });
  });
  it('verify --catalog X.cat FILE: a member passes, a non-member is blocked DIGEST_MISMATCH', () => {
    const r = pg('verify', '--json', '--rules', rules, '--catalog', join(dir, 'driver.cat'), join(dir, 'member.sys'), join(dir, 'other.sys'));
    expect(r.code).toBe(1);
    const [a, b] = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(a).toMatchObject({ verdict: 'allow', reasons: [], format: 'catalog' });
    expect(a.digest.algorithm).toBe('sha256');
    expect(b.verdict).toBe('block');
    expect(b.reasons[0].code).toBe('DIGEST_MISMATCH');
  });
  it('a member of a catalog the rules do not approve is blocked with the catalog\'s reason', () => {
    const r = pg('verify', '--json', '--rules', rules, '--anchor', join(dir, 'list-ca.pem'), '--catalog', join(dir, 'driver.cat'), join(dir, 'member.sys'));
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out).reasons[0].message).toMatch(/^catalog: /);
  });
});

describe('patchgate verify --url (the trust channel a URL selects)', () => {
  it('a trust list passes for a ctldl URL and is blocked for a payload-host URL under the same rules', () => {
    const chan = join(dir, 'channels.yaml');
    writeFileSync(chan, readFileSync(rules, 'utf8') + 'channels:\n  - { name: certificate-trust-lists, hosts: [ctldl.windowsupdate.com], anchors: none, ctlAnchors: rules }\n');
    const stl = join(dir, 'disallowedcert.stl');
    expect(pg('verify', '--rules', chan, '--url', 'http://ctldl.windowsupdate.com/msdownload/update/v3/static/trustedr/en/disallowedcert.stl', stl).code).toBe(0);
    const r = pg('verify', '--json', '--rules', chan, '--url', 'http://download.windowsupdate.com/d/disallowedcert.stl', stl);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out).reasons.map((x: { code: string }) => x.code)).toContain('UNTRUSTED_ROOT');
    expect(pg('verify', '--rules', chan, '--url', 'not a url', stl).code).toBe(2);
  });
});
