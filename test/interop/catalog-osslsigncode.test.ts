/**
 * Interop: osslsigncode's `verify -catalog` and patchgate's `verify --catalog` judge the same
 * lab catalog and files the same way (member / not a member), and both read the catalog's signature.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signTrustList } from '../../src/lab/trustListSigner.js';
import { catalogFileVerdict, memberDigest } from '../../src/verify/ctl/catalogMembership.js';
import { emptyPolicy } from '../../src/verify/approvedCaPolicy.js';
import { OID } from '../../src/verify/oids.js';
import { buildPE } from '../fixtures/build-unsigned.mjs';
import { makeTrustListPki, pin, type TrustListPki } from '../support/trustListPki.js';

let dir: string;
let pki: TrustListPki;
let member: Uint8Array;
let other: Uint8Array;
let cat: Uint8Array;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-cat-interop-'));
  pki = makeTrustListPki();
  member = buildPE('pe64') as Uint8Array;
  other = buildPE('pe32') as Uint8Array;
  cat = signTrustList({
    usage: [OID.catalogList], thisUpdate: new Date(),
    entries: [{ identifier: Buffer.from('member', 'utf16le'), member: { digest: 'sha256', value: memberDigest(member, 'sha256', 1 << 20), dataType: 'pe' } }],
    signerCertDer: pki.codeLeaf.der, signerKey: pki.codeLeaf.keyObject, extraCertsDer: [pki.codePca.der],
  });
  writeFileSync(join(dir, 'member.exe'), member);
  writeFileSync(join(dir, 'other.exe'), other);
  writeFileSync(join(dir, 'driver.cat'), cat);
  writeFileSync(join(dir, 'root.pem'), pki.root.pem);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ossl = (file: string) => spawnSync('osslsigncode', ['verify', '-CAfile', join(dir, 'root.pem'), '-catalog', join(dir, 'driver.cat'), '-in', join(dir, file)], { encoding: 'utf8', timeout: 60_000 });

describe('catalog membership: osslsigncode -catalog and patchgate agree', () => {
  it('the listed file: both say it verifies', () => {
    const r = ossl('member.exe');
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const v = catalogFileVerdict(cat, member, emptyPolicy({ anchors: [pin(pki.codePca)] }), new Date());
    expect(v.verdict).toBe('allow');
  });
  it('a file the catalog does not list: both refuse it', () => {
    const r = ossl('other.exe');
    expect(r.status).not.toBe(0);
    const v = catalogFileVerdict(cat, other, emptyPolicy({ anchors: [pin(pki.codePca)] }), new Date());
    expect(v.verdict).toBe('block');
  });
});
