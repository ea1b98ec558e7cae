/**
 * Interop: patchgate against the reference tools, on every signature fixture.
 *
 * - PE / CAB / not-a-PE fixtures: `osslsigncode verify -in FILE -CAfile caFile -TSA-CAfile tsaCaFile
 *   [-time at]` (osslsigncode 2.9 supports `-time <unix>` for verify).
 * - Detached CMS fixtures: `openssl cms -verify -binary -inform DER -in SIG -content FILE -CAfile caFile
 *   -purpose any [-attime at] -out /dev/null` (`-purpose any`: openssl's default S/MIME purpose check
 *   is not the question here).
 *
 * "intact" means the reference tool exits 0. patchgate is run twice: pinning the root of the fixture's
 * chain (the manifest's caFile / tsaCaFile, i.e. exactly the trust the reference tool gets) and pinning
 * the Update CA as the fixtures intend (the manifest's anchors / tsaAnchors). osslsigncode itself cannot
 * pin the Update CA (OpenSSL builds the chain to a self-signed root; with `-CAfile updateca.pem` even
 * good.exe fails "unable to get issuer certificate"), so both patchgate runs are compared with the
 * reference tool given the root.
 *
 * Every disagreement must be listed in EXPECTED_DIFFERENCES (per pinning) with the side that accepts,
 * patchgate's exact reason-code set and why; an unlisted disagreement fails, and so does a listed one
 * that no longer disagrees. patchgate accepting what the reference rejects (a false accept) fails unless
 * listed — and none is.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { pinCertificateFile, readDistrustFile } from '../../src/policy/trustMaterial.js';
import type { ReasonCode } from '../../src/verify/reasonCodes.js';
import type { Verdict } from '../../src/verify/verdict.js';
import { FIXTURES, manifest, fx, labPolicy, verifyFixture, codes, type FixtureEntry } from '../support/fixtures.js';

const TOOL_TIMEOUT_MS = 10_000;

type Pinning = 'root' | 'updateCa';
type Tool = 'osslsigncode' | 'openssl cms';

interface ExpectedDifference {
  /** Which side calls the file intact/allowed. 'reference' = osslsigncode or openssl cms. */
  accepts: 'reference' | 'patchgate';
  /** patchgate's complete reason-code set for this fixture under this pinning (sorted). */
  codes: ReasonCode[];
  /** Why the two legitimately differ. */
  why: string;
}

// ---------------------------------------------------------------------------------------------------
// Expected differences by design. Derived by running both tools on the fixtures (osslsigncode 2.9 on
// OpenSSL 3.0, openssl 3.0 cms); each entry says what patchgate checks that the reference tool does not.
// ---------------------------------------------------------------------------------------------------

const WHY = {
  flame:
    'Flame-style chain (licensing PCA without EKU > CN=MS leaf signed with md5WithRSAEncryption, v1, no extensions). ' +
    'osslsigncode/OpenSSL at the default auth level 0 accept the MD5 certificate signature, and OpenSSL treats an absent ' +
    'EKU as "any purpose" on the leaf and on CAs; patchgate refuses MD5 anywhere (WEAK_ALGORITHM) and strict mode requires ' +
    'codeSigning on the leaf and every CA below the anchor (NO_CODESIGN_EKU).',
  md5Digest: 'osslsigncode verifies an MD5 file digest and MD5 signer digest as valid; patchgate refuses MD5 (WEAK_ALGORITHM).',
  sha1Digest: 'osslsigncode accepts a SHA-1 file/signer digest; patchgate refuses SHA-1 unless the rules allow it (WEAK_ALGORITHM).',
  sha1Cert:
    'The publisher certificate is signed with sha1WithRSAEncryption, which OpenSSL accepts at the default security level; ' +
    'patchgate refuses SHA-1 unless the rules allow it (WEAK_ALGORITHM).',
  noeku:
    'The leaf has no EKU extension: OpenSSL (and Windows) read that as "any purpose"; patchgate strict mode requires codeSigning ' +
    'on the leaf (NO_CODESIGN_EKU; the nested EKU mode would accept it).',
  noekuca:
    'The intermediate CA has no EKU extension, which OpenSSL does not constrain — exactly the gap Flame used; patchgate strict ' +
    'mode requires codeSigning on every CA below the anchor (NO_CODESIGN_EKU).',
  lifetime:
    'The leaf carries the lifetime-signing EKU (1.3.6.1.4.1.311.10.3.13): Windows then ignores the timestamp and checks validity ' +
    'at verification time. osslsigncode ignores that EKU and validates at the (valid) timestamp time; patchgate honours it (CERT_EXPIRED).',
  padded:
    'CVE-2013-3900: 64 bytes appended inside the WIN_CERTIFICATE after the PKCS#7 blob (dwLength and directory Size grown). ' +
    'osslsigncode parses only the DER blob and ignores the padding (it merely warns "invalid PE checksum"); patchgate applies ' +
    'the EnableCertPaddingCheck rule (TRAILING_DATA).',
  distrusted:
    'good.exe checked against a distrust list naming the Update CA: osslsigncode has no distrust list; patchgate\'s distrust list ' +
    'beats everything (DISTRUSTED_CERT).',
  nestedForgedOuter:
    'The primary signature is flame.exe\'s (MD5 certificate, no EKU); the good publisher signature is only nested. osslsigncode ' +
    'accepts every signature under root.pem; patchgate judges the primary signature (signatureMode primary) and blocks it for ' +
    'the Flame reasons (WEAK_ALGORITHM, NO_CODESIGN_EKU).',
  payloadFlame:
    'Detached CMS by the Flame-style chain: `openssl cms -verify -purpose any` at the default auth level accepts the MD5 ' +
    'certificate and the missing EKUs (with -auth_level 1 it fails "CA signature digest algorithm too weak"); patchgate ' +
    'refuses MD5 and requires codeSigning (WEAK_ALGORITHM, NO_CODESIGN_EKU).',
  notUnderUpdateCa:
    'The reference tool is given the chain\'s own root as CAfile (that is the only pin OpenSSL can do); with the Update CA ' +
    'pinned, this chain does not pass through the Update CA, so patchgate also reports UNTRUSTED_ROOT.',
} as const;

const ref = (codes: ReasonCode[], why: string): ExpectedDifference => ({ accepts: 'reference', codes: [...codes].sort(), why });

const ROOT_PINNED: Record<string, ExpectedDifference> = {
  flame: ref(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], WHY.flame),
  // flame plus a SHA-1 file/signer digest: the same codes (WEAK_ALGORITHM covers both).
  'flame-sha1': ref(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], `${WHY.flame} ${WHY.sha1Digest}`),
  'md5-digest': ref(['WEAK_ALGORITHM'], WHY.md5Digest),
  'sha1-digest': ref(['WEAK_ALGORITHM'], WHY.sha1Digest),
  'sha1-cert': ref(['WEAK_ALGORITHM'], WHY.sha1Cert),
  noeku: ref(['NO_CODESIGN_EKU'], WHY.noeku),
  noekuca: ref(['NO_CODESIGN_EKU'], WHY.noekuca),
  'lifetime-ts': ref(['CERT_EXPIRED'], WHY.lifetime),
  padded: ref(['TRAILING_DATA'], WHY.padded),
  distrusted: ref(['DISTRUSTED_CERT'], WHY.distrusted),
  'nested-forged-outer': ref(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], WHY.nestedForgedOuter),
  'payload-flame': ref(['NO_CODESIGN_EKU', 'WEAK_ALGORITHM'], WHY.payloadFlame),
};

const UPDATE_CA_PINNED: Record<string, ExpectedDifference> = {
  // Chains that do not go through the Update CA: the policy differences above plus UNTRUSTED_ROOT.
  flame: ref(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'], `${WHY.flame} ${WHY.notUnderUpdateCa}`),
  'flame-sha1': ref(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'], `${WHY.flame} ${WHY.sha1Digest} ${WHY.notUnderUpdateCa}`),
  'nested-forged-outer': ref(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'], `${WHY.nestedForgedOuter} ${WHY.notUnderUpdateCa}`),
  'payload-flame': ref(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT', 'WEAK_ALGORITHM'], `${WHY.payloadFlame} ${WHY.notUnderUpdateCa}`),
  // root > noekuca > noekuca-pub: under the Vendor Root but not under the Update CA. With the Update CA pinned the chain
  // never reaches an anchor (UNTRUSTED_ROOT); the signature carries noekuca but not the root, so noekuca is an
  // intermediate on the path it built, and its missing EKU is reported too (NO_CODESIGN_EKU), as for Flame.
  noekuca: ref(['NO_CODESIGN_EKU', 'UNTRUSTED_ROOT'], `${WHY.noekuca} ${WHY.notUnderUpdateCa}`),
  // A complete, well-formed chain under another root: osslsigncode/openssl are given rogueroot.pem and accept it.
  rogue: ref(['UNTRUSTED_ROOT'], `Well-formed chain under rogueroot. ${WHY.notUnderUpdateCa}`),
  'payload-rogue': ref(['UNTRUSTED_ROOT'], `Well-formed chain under rogueroot. ${WHY.notUnderUpdateCa}`),
  // Under the Update CA: exactly the root-pinned differences.
  'md5-digest': ROOT_PINNED['md5-digest']!,
  'sha1-digest': ROOT_PINNED['sha1-digest']!,
  'sha1-cert': ROOT_PINNED['sha1-cert']!,
  noeku: ROOT_PINNED.noeku!,
  'lifetime-ts': ROOT_PINNED['lifetime-ts']!,
  padded: ROOT_PINNED.padded!,
  distrusted: ROOT_PINNED.distrusted!,
};

const EXPECTED_DIFFERENCES: Record<Pinning, Record<string, ExpectedDifference>> = { root: ROOT_PINNED, updateCa: UPDATE_CA_PINNED };

// ---------------------------------------------------------------------------------------------------

interface ReferenceResult {
  tool: Tool;
  args: string[];
  status: number;
  intact: boolean;
  output: string;
  /** Short reason when not intact. */
  why: string;
  /** osslsigncode's primary signature (index 0) digests, upper-case hex. */
  digestAlgorithm?: string;
  currentDigest?: string;
  calculatedDigest?: string;
}

interface Row {
  name: string;
  fixture: FixtureEntry;
  ref: ReferenceResult;
  patchgate: Record<Pinning, Verdict>;
}

function run(cmd: string, args: string[]): { status: number; output: string } {
  const r = spawnSync(cmd, args, { cwd: FIXTURES, encoding: 'utf8', timeout: TOOL_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status === null) throw new Error(`${cmd} ${args.join(' ')}: killed by ${r.signal}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

const unixTime = (iso: string | null) => (iso ? String(Math.floor(new Date(iso).getTime() / 1000)) : undefined);

function osslsigncodeWhy(out: string): string {
  const found: string[] = [];
  if (/MISMATCH!!!/.test(out)) found.push('message digest MISMATCH');
  for (const m of out.matchAll(/Unsupported Signer's certificate purpose (\S+)/g)) found.push(`purpose ${m[1]}`);
  for (const m of out.matchAll(/^\s*Error: (.+)$/gm)) found.push(m[1]!.trim());
  if (/Unable to extract existing signature/.test(out)) found.push('unable to extract signature');
  if (/unsupported input file type/.test(out)) found.push('unsupported file type');
  return [...new Set(found)].join('; ') || 'failed';
}

function runOsslsigncode(f: FixtureEntry): ReferenceResult {
  const args = ['verify', '-in', f.file, '-CAfile', f.caFile, '-TSA-CAfile', f.tsaCaFile];
  const t = unixTime(f.at);
  if (t) args.push('-time', t);
  const { status, output } = run('osslsigncode', args);
  // osslsigncode prints "Succeeded" iff it exits 0; keep the two in step so exit codes stay meaningful.
  if ((status === 0) !== /^Succeeded$/m.test(output)) throw new Error(`osslsigncode exit ${status} but output says otherwise:\n${output}`);
  // The primary signature (Signature Index: 0) comes first: its "Current/Calculated message digest" lines.
  const primary = output.split(/^Signature Index: 1\b/m)[0]!;
  const alg = /^Message digest algorithm\s+: (\S+)/m.exec(primary)?.[1];
  const current = /^Current message digest\s+: ([0-9A-F]+)/m.exec(primary)?.[1];
  const calculated = /^Calculated message digest : ([0-9A-F]+)/m.exec(primary)?.[1];
  return {
    tool: 'osslsigncode', args, status, intact: status === 0, output,
    why: status === 0 ? '' : osslsigncodeWhy(output),
    digestAlgorithm: alg, currentDigest: current, calculatedDigest: calculated,
  };
}

function runOpensslCms(f: FixtureEntry): ReferenceResult {
  const args = ['cms', '-verify', '-binary', '-inform', 'DER', '-in', f.detached!, '-content', f.file, '-CAfile', f.caFile, '-purpose', 'any'];
  const t = unixTime(f.at);
  if (t) args.push('-attime', t);
  args.push('-out', '/dev/null');
  const { status, output } = run('openssl', args);
  let why = '';
  if (status !== 0) {
    why = /Verify error: (.+)$/m.exec(output)?.[1]?.trim()
      ?? (/content verify error/.test(output) ? 'content verify error (digest)' : output.trim().split('\n').pop() ?? 'failed');
  }
  return { tool: 'openssl cms', args, status, intact: status === 0, output, why };
}

function patchgatePolicies(f: FixtureEntry) {
  const distrust = new Set(f.distrust ? readDistrustFile(fx(f.distrust)) : []);
  return {
    // The same trust the reference tool gets: the root of this fixture's chain, and the TSA root.
    root: labPolicy({ anchors: pinCertificateFile(fx(f.caFile)), tsaAnchors: pinCertificateFile(fx(f.tsaCaFile)), distrust }),
    // As the fixtures intend: the Update CA (manifest anchors) and the TSA root (manifest tsaAnchors).
    updateCa: labPolicy({
      anchors: f.anchors.flatMap((a) => pinCertificateFile(fx(a))),
      tsaAnchors: f.tsaAnchors.flatMap((a) => pinCertificateFile(fx(a))),
      distrust,
    }),
  } satisfies Record<Pinning, unknown>;
}

const isAuthenticode = (f: FixtureEntry) => f.format === 'pe' || f.format === 'cab' || f.format === 'unknown';
const isDetachedCms = (f: FixtureEntry) => f.format === 'cms-detached';

const rows: Row[] = [];
const row = (name: string) => {
  const r = rows.find((x) => x.name === name);
  if (!r) throw new Error(`no interop row for fixture ${name}`);
  return r;
};

function summary(v: Verdict): string {
  return v.verdict === 'allow' ? 'allow' : `block ${codes(v).join(',')}`;
}

describe('interop with osslsigncode / openssl cms', () => {
  beforeAll(() => {
    for (const [name, f] of Object.entries(manifest().fixtures)) {
      if (!isAuthenticode(f) && !isDetachedCms(f)) continue;
      const refResult = isDetachedCms(f) ? runOpensslCms(f) : runOsslsigncode(f);
      const p = patchgatePolicies(f);
      rows.push({ name, fixture: f, ref: refResult, patchgate: { root: verifyFixture(name, p.root), updateCa: verifyFixture(name, p.updateCa) } });
    }

    const lines = rows.map((r) => [
      r.name,
      `${r.ref.tool === 'osslsigncode' ? '' : 'cms: '}${r.ref.intact ? 'intact' : `FAIL (${r.ref.why})`}`,
      summary(r.patchgate.root),
      summary(r.patchgate.updateCa),
      [EXPECTED_DIFFERENCES.root[r.name] ? 'root' : '', EXPECTED_DIFFERENCES.updateCa[r.name] ? 'updateCa' : ''].filter(Boolean).join('+') || '-',
    ]);
    const head = ['fixture', 'osslsigncode / openssl cms', 'patchgate (root pinned)', 'patchgate (Update CA pinned)', 'by-design diff'];
    const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
    const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    console.log([fmt(head), fmt(widths.map((w) => '-'.repeat(w))), ...lines.map(fmt)].join('\n'));
  });

  it('covers every PE, CAB, non-PE and detached-CMS fixture of the manifest, and the tables name only real fixtures', () => {
    const all = Object.entries(manifest().fixtures).filter(([, f]) => isAuthenticode(f) || isDetachedCms(f)).map(([n]) => n);
    expect(rows.map((r) => r.name).sort()).toEqual(all.sort());
    expect(all.length).toBeGreaterThan(30);
    for (const pinning of ['root', 'updateCa'] as const) {
      for (const name of Object.keys(EXPECTED_DIFFERENCES[pinning])) expect(all, `${pinning} table names ${name}`).toContain(name);
    }
  });

  it('the reference tools accept the plain good fixtures (so a disagreement is not an environment problem)', () => {
    for (const name of ['good', 'good64', 'good-cab', 'good-ts', 'ec', 'payload']) {
      expect(row(name).ref.intact, `${name}: ${row(name).ref.output}`).toBe(true);
    }
  });

  for (const pinning of ['root', 'updateCa'] as const) {
    it(`agrees on intact vs not, or the difference is a documented policy check (${pinning === 'root' ? 'root' : 'Update CA'} pinned)`, () => {
      const problems: string[] = [];
      for (const r of rows) {
        const v = r.patchgate[pinning];
        const allowed = v.verdict === 'allow';
        const expected = EXPECTED_DIFFERENCES[pinning][r.name];
        const got = `${r.ref.tool} ${r.ref.intact ? 'intact' : `rejects (${r.ref.why})`}, patchgate ${summary(v)}`;
        if (allowed === r.ref.intact) {
          if (expected) problems.push(`${r.name}: listed as a difference but both tools now agree: ${got}`);
          continue;
        }
        if (!expected) {
          problems.push(`${r.name}: UNEXPECTED difference: ${got}${allowed ? '  <-- patchgate FALSE ACCEPT' : ''}`);
          continue;
        }
        const accepts = allowed ? 'patchgate' : 'reference';
        if (expected.accepts !== accepts) problems.push(`${r.name}: table says ${expected.accepts} accepts, but ${got}`);
        if (codes(v).join(',') !== expected.codes.join(',')) {
          problems.push(`${r.name}: table explains it with ${expected.codes.join(',')} but patchgate says ${codes(v).join(',')}`);
        }
      }
      expect(problems).toEqual([]);
    });
  }

  it('patchgate never allows what the reference tool rejects (no false accepts, documented or not)', () => {
    for (const pinning of ['root', 'updateCa'] as const) {
      // No documented exception exists; keep it that way.
      expect(Object.entries(EXPECTED_DIFFERENCES[pinning]).filter(([, d]) => d.accepts === 'patchgate')).toEqual([]);
      const falseAccepts = rows.filter((r) => !r.ref.intact && r.patchgate[pinning].verdict === 'allow')
        .map((r) => `${r.name}: ${r.ref.tool} rejects (${r.ref.why}) but patchgate (${pinning} pinned) allows`);
      expect(falseAccepts).toEqual([]);
    }
  });

  describe('tampering', () => {
    const pairs: [good: string, tampered: string, patchgateCode: ReasonCode][] = [
      ['good', 'tampered', 'DIGEST_MISMATCH'],
      ['good', 'appended', 'TRAILING_DATA'],
      ['good', 'truncated', 'MALFORMED'],
      ['good-cab', 'tampered-cab', 'DIGEST_MISMATCH'],
      ['payload', 'payload-tampered', 'DIGEST_MISMATCH'],
    ];
    it.each(pairs)('%s is intact and %s is not, for both tools', (good, bad, code) => {
      const g = row(good);
      const b = row(bad);
      expect(g.ref.intact, g.ref.output).toBe(true);
      expect(b.ref.intact, b.ref.output).toBe(false);
      for (const pinning of ['root', 'updateCa'] as const) {
        expect(g.patchgate[pinning].verdict, `${good} (${pinning})`).toBe('allow');
        expect(b.patchgate[pinning].verdict, `${bad} (${pinning})`).toBe('block');
        expect(codes(b.patchgate[pinning]), `${bad} (${pinning})`).toContain(code);
      }
    });

    it('osslsigncode says why: digest MISMATCH for the flipped bytes, no signature at the end for appended/truncated', () => {
      expect(row('tampered').ref.why).toContain('MISMATCH');
      expect(row('tampered-cab').ref.why).toContain('MISMATCH');
      expect(row('appended').ref.output).toContain('signature not at the end of the file');
      expect(row('truncated').ref.output).toContain('signature not at the end of the file');
      expect(row('payload-tampered').ref.why).toContain('content verify error');
    });

    it.each(['good', 'good64', 'good-cab', 'tampered', 'tampered-cab'])(
      '%s: patchgate\'s Authenticode digest equals osslsigncode\'s "Calculated message digest" (and the signed one its "Current")',
      (name) => {
        const r = row(name);
        const d = r.patchgate.root.digest;
        expect(r.ref.calculatedDigest, r.ref.output).toMatch(/^[0-9A-F]{64}$/);
        expect(d, JSON.stringify(r.patchgate.root)).toBeDefined();
        expect(d!.algorithm.replace(/-/g, '').toLowerCase()).toBe(r.ref.digestAlgorithm!.toLowerCase());
        expect(d!.actual.toLowerCase()).toBe(r.ref.calculatedDigest!.toLowerCase());
        expect(d!.expected.toLowerCase()).toBe(r.ref.currentDigest!.toLowerCase());
        expect(d!.actual === d!.expected).toBe(r.ref.intact);
      },
    );

    it('the digests agree wherever both tools compute one with the same algorithm', () => {
      const compared: string[] = [];
      const problems: string[] = [];
      for (const r of rows) {
        const d = r.patchgate.root.digest;
        if (r.ref.tool !== 'osslsigncode' || !d || !r.ref.calculatedDigest) continue;
        if (d.algorithm.replace(/-/g, '').toLowerCase() !== r.ref.digestAlgorithm?.toLowerCase()) continue;
        compared.push(r.name);
        if (d.actual.toLowerCase() !== r.ref.calculatedDigest.toLowerCase()) problems.push(`${r.name}: patchgate ${d.actual}, osslsigncode ${r.ref.calculatedDigest}`);
        if (d.expected.toLowerCase() !== r.ref.currentDigest?.toLowerCase()) problems.push(`${r.name}: signed digest patchgate ${d.expected}, osslsigncode ${r.ref.currentDigest}`);
      }
      expect(problems).toEqual([]);
      expect(compared.length).toBeGreaterThan(20);
    });
  });

  it('the detached payloads are what openssl cms was given (sanity: same bytes patchgate read)', () => {
    for (const name of ['payload', 'payload-tampered', 'payload-rogue', 'payload-flame']) {
      const r = row(name);
      expect(r.ref.tool).toBe('openssl cms');
      expect(r.patchgate.root.sha256).toBe(createHash('sha256').update(readFileSync(fx(r.fixture.file))).digest('hex'));
    }
  });
});
