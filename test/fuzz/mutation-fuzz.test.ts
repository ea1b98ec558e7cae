/**
 * Mutation fuzzing of the verification core, short and deterministic (fixed seed, fixed case
 * count, a wall-clock cap as a safety net). The long run is `npm run fuzz -- --minutes N`
 * (scripts/fuzz.mjs, same oracle in test/fuzz/lib/).
 *
 * Every signed fixture (PE, PE32+, CAB, detached CMS signature and its content; the certificates
 * inside them are aimed at on purpose) is mutated: bit flips, interesting bytes, truncations,
 * insertions, deletions, duplicated slices (whole certificates), DER lengths of 2^31, 2^32-1,
 * 2^64-1 and indefinite, PE and CAB size fields set to huge or off-by-a-few values.
 *
 * Properties: verifyBytes never throws; each case returns within CASE_BOUND_MS; memory stays
 * bounded; and a mutated file is allowed only if the fixture was, its size is unchanged and every
 * changed byte is one the Authenticode digest excludes by specification (the PE CheckSum, computed
 * here from the PE headers by the test's own parser). Changes in legitimately unsigned bytes (the
 * SignerInfo's unsigned attributes, bag certificates off the verified path, the WIN_CERTIFICATE
 * header) that still verify are printed as a "closer look" list with the offset and ASN.1 element.
 */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { emptyPolicy, fileDigestsFor } from '../../src/verify/approvedCaPolicy.js';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { AT, FIXTURES, manifest } from '../support/fixtures.js';
// Plain-JS oracle shared with scripts/fuzz.mjs.
import { buildTargets, groupCloser, judge, makeVerify, runCase, structuralMutations, tally } from './lib/fuzzCore.mjs';

const SEED = 0x5eed2026;
const RANDOM_CASES = 1500;
const CASE_BOUND_MS = 2000;
const WALL_CAP_MS = 20_000;
const RSS_GROWTH_BOUND = 300 * 1024 * 1024;

type Result = ReturnType<typeof judge>;
const verify = makeVerify({ verifyBytes, emptyPolicy, fileDigestsFor, pinCertificateFile }, join(FIXTURES, 'pki'));
const fmt = (r: Result) => `${r.target} [${r.op}] ${r.desc} -> ${r.outcome}${r.codes.length ? ` ${r.codes.join(',')}` : ''}${r.where ? `\n      ${r.where.join('\n      ')}` : ''}${r.error ? `\n      ${r.error.split('\n').slice(0, 4).join('\n      ')}` : ''}`;

function report(name: string, results: Result[]): void {
  const closer = groupCloser(results);
  const file = join(tmpdir(), `patchgate-fuzz-${name}.json`);
  writeFileSync(file, JSON.stringify({ tally: tally(results), closer, notable: results.filter((r) => !['block', 'noop'].includes(r.outcome)) }, null, 2));
  if (closer.length) {
    console.log(`[${name}] closer look (allowed after a change in legitimately unsigned bytes; full list ${file}):\n` +
      closer.map((g) => `  ${g.count}x ${g.key}\n    e.g. ${g.examples[0]}`).join('\n'));
  }
}

describe('mutation fuzzing of the core (seeded)', () => {
  it(`${RANDOM_CASES} random mutations over every signed fixture, two policies: no throw, bounded time and memory, no false accept`, () => {
    const targets = buildTargets(FIXTURES, manifest(), verify, AT, { policies: ['updateca', 'root'] });
    expect(targets.filter((t) => t.baseAllowed).length).toBeGreaterThan(10);
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const results: Result[] = [];
    const started = Date.now();
    for (let i = 0; i < RANDOM_CASES && Date.now() - started < WALL_CAP_MS; i++) {
      const t = targets[i % targets.length]!;
      results.push(runCase(t, SEED, i, verify));
      if (i % 100 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    report('random', results);
    const s = tally(results);
    console.log(`[random] ${JSON.stringify(s)} in ${Date.now() - started} ms`);
    expect(results.length, 'the wall-clock cap cut the run short').toBe(RANDOM_CASES);
    expect(results.filter((r) => r.outcome === 'crash').map(fmt)).toEqual([]);
    expect(results.filter((r) => r.ms > CASE_BOUND_MS).map(fmt)).toEqual([]);
    expect(peak - rss0).toBeLessThan(RSS_GROWTH_BOUND);
    expect(results.filter((r) => r.outcome === 'false-accept').map(fmt)).toEqual([]);
    // The fuzzer must reach the deep checks, not only the header parsers.
    const reached = new Set(results.flatMap((r) => r.codes));
    for (const c of ['MALFORMED', 'DIGEST_MISMATCH', 'SIGNATURE_INVALID', 'TRAILING_DATA']) expect(reached).toContain(c);
  });

  it('structural sweep: every CMS/X.509 tag, length and small field outside the signed bytes, every CheckSum/CAB header byte', () => {
    // Root pinned: every bag certificate is on the verified path, so none of its bytes is free.
    const targets = buildTargets(FIXTURES, manifest(), verify, AT, { policies: ['root'], only: ['good', 'good-cab', 'payload'] })
      .concat(buildTargets(FIXTURES, manifest(), verify, AT, { policies: ['updateca'], only: ['good-ts'] }));
    const results: Result[] = [];
    for (const t of targets) {
      expect(t.baseAllowed, t.name).toBe(true);
      let i = 0;
      for (const m of structuralMutations(t)) results.push(judge(t, m, SEED, i++, verify));
    }
    report('sweep', results);
    console.log(`[sweep] ${JSON.stringify(tally(results))}`);
    expect(results.filter((r) => r.outcome === 'crash').map(fmt)).toEqual([]);
    expect(results.filter((r) => r.ms > CASE_BOUND_MS).map(fmt)).toEqual([]);
    // One line per element that still verifies after a change it should not survive, with the
    // fixtures it was seen in and one example mutation.
    const byElement = new Map<string, { targets: Set<string>; example: string }>();
    for (const r of results.filter((x) => x.outcome === 'false-accept')) {
      const key = (r.where ?? []).join('; ').replace(/@\d+: /g, '').replace(/, element at \d+\.\.\d+/g, '');
      const e = byElement.get(key) ?? { targets: new Set<string>(), example: `${r.target}: ${r.desc}` };
      e.targets.add(r.target);
      byElement.set(key, e);
    }
    expect([...byElement].map(([k, e]) => `${k}  [${[...e.targets].join(', ')}] e.g. ${e.example}`)).toEqual([]);
  });
});
