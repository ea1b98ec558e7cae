import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { emptyPolicy, fileDigestsFor, type ApprovedCaPolicy } from '../../src/verify/approvedCaPolicy.js';
import { verifyBuffer, verifyBytes } from '../../src/verify/incrementalVerifier.js';
import type { Verdict } from '../../src/verify/verdict.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = join(REPO, 'test', 'fixtures', 'out');

export interface FixtureEntry {
  file: string;
  format: string;
  detached: string | null;
  anchors: string[];
  tsaAnchors: string[];
  distrust: string | null;
  caFile: string;
  tsaCaFile: string;
  at: string | null;
  description: string;
}

export interface Manifest {
  pki: Record<string, string>;
  pkiKeys: Record<string, string>;
  pkiChains: Record<string, string>;
  pkiCertBags: Record<string, string>;
  fixtures: Record<string, FixtureEntry>;
  /** MSI/MSP: verified from the finished file (verifyRandomAccessFixture). */
  randomAccessFixtures: Record<string, FixtureEntry>;
}

let cached: Manifest | undefined;

/** The manifest written by test/fixtures/make-fixtures.sh (run by `npm test`'s pretest). */
export function manifest(): Manifest {
  if (!cached) {
    const path = join(FIXTURES, 'manifest.json');
    if (!existsSync(path)) throw new Error('fixtures missing: run `npm run fixtures` (npm test does it first)');
    cached = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  }
  return cached;
}

export const fx = (rel: string) => join(FIXTURES, rel);
export const pki = (name: string) => fx(manifest().pki[name] ?? `pki/${name}.pem`);

/** A policy pinning the lab PKI's Update CA and TSA root, as the fixtures intend; overrides on top. */
export function labPolicy(overrides: Partial<ApprovedCaPolicy> = {}): ApprovedCaPolicy {
  const allowSha1 = overrides.allowSha1 ?? false;
  return emptyPolicy({
    anchors: pinCertificateFile(pki('updateca')),
    tsaAnchors: pinCertificateFile(pki('tsaroot')),
    fileDigests: fileDigestsFor(allowSha1),
    ...overrides,
  });
}

export const AT = new Date('2026-06-01T00:00:00Z');

export function verifyFixture(name: string, policy: ApprovedCaPolicy = labPolicy(), now?: Date): Verdict {
  const f = manifest().fixtures[name];
  if (!f) throw new Error(`no fixture ${name}`);
  const detached = f.detached ? new Uint8Array(readFileSync(fx(f.detached))) : undefined;
  return verifyBytes(readFileSync(fx(f.file)), policy, { now: now ?? (f.at ? new Date(f.at) : new Date()), detachedSignature: detached });
}

/** An MSI/MSP fixture through the whole verifier (streamed, then read back at random). */
export function verifyRandomAccessFixture(name: string, policy: ApprovedCaPolicy = labPolicy(), now?: Date): Promise<Verdict> {
  const f = manifest().randomAccessFixtures[name];
  if (!f) throw new Error(`no MSI fixture ${name}`);
  return verifyBuffer(readFileSync(fx(f.file)), policy, { now: now ?? (f.at ? new Date(f.at) : new Date()) });
}

export const codes = (v: Verdict) => [...new Set(v.reasons.map((r) => r.code))].sort();
