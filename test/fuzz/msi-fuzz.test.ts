/**
 * Mutation fuzzing of MSI/MSP and APPX/MSIX verification, seeded and short (the long run: `npm run fuzz`, whose
 * MSI phase uses the same lib). Properties: the verifier never throws, each case returns within
 * CASE_BOUND_MS, memory stays bounded, and every allowed mutant is one osslsigncode also verifies
 * with the same digest (no false accept); hostile structures reach MALFORMED.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { verifyBuffer } from '../../src/verify/incrementalVerifier.js';
import { AT, fx, labPolicy, manifest } from '../support/fixtures.js';
// @ts-expect-error plain-JS lib shared with scripts/fuzz.mjs
import { msiLayout, runMsiCase, zipLayout } from './lib/msiFuzz.mjs';

const SEED = 0x5eed2026;
const CASES = 400;
const CASE_BOUND_MS = 2000;
const RSS_GROWTH_BOUND = 200 * 1024 * 1024;

interface Outcome { target: string; index: number; desc: string; outcome: string; codes: string[]; ms: number; error?: string }

describe('MSI and APPX mutation fuzzing (seeded)', () => {
  it(`${CASES} mutations of signed MSI/MSP and APPX packages: no throw, bounded time and memory, no false accept`, async () => {
    const policy = labPolicy();
    const verify = (b: Uint8Array) => verifyBuffer(b, policy, { now: AT });
    const targets = ['good-msi', 'good-ex-msi', 'good-msp', 'nested-good-msi', 'good-appx'].map((name) => {
      const f = manifest().randomAccessFixtures[name]!;
      const bytes = readFileSync(fx(f.file));
      return { name, bytes, layout: f.format === 'msix' ? zipLayout(bytes) : msiLayout(bytes) };
    });
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const results: Outcome[] = [];
    for (let i = 0; i < CASES; i++) {
      results.push(await runMsiCase(targets[i % targets.length], SEED, i, verify));
      if (i % 50 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
    const tally: Record<string, number> = {};
    for (const r of results) tally[r.outcome] = (tally[r.outcome] ?? 0) + 1;
    const closer = results.filter((r) => r.outcome === 'closer-look');
    console.log(`[msi] ${JSON.stringify(tally)}${closer.length ? `\n  closer look: ${closer.map((r) => `${r.target} ${r.desc}`).join('; ')}` : ''}`);
    const fmt = (r: Outcome) => `${r.target} #${r.index} ${r.desc} -> ${r.outcome} ${r.codes.join(',')} ${r.error ?? ''}`;
    expect(results.filter((r) => r.outcome === 'crash').map(fmt)).toEqual([]);
    expect(results.filter((r) => r.outcome === 'false-accept').map(fmt)).toEqual([]);
    expect(results.filter((r) => r.ms > CASE_BOUND_MS).map(fmt)).toEqual([]);
    expect(peak - rss0).toBeLessThan(RSS_GROWTH_BOUND);
    const reached = new Set(results.flatMap((r) => r.codes));
    for (const c of ['MALFORMED', 'DIGEST_MISMATCH']) expect(reached).toContain(c);
  }, 120_000);
});
