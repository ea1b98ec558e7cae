import { beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { manifest, REPO } from '../support/fixtures.js';

const run = promisify(execFile);
const SCRIPT = join(REPO, 'test', 'support', 'stream-1gib.mjs');
const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;

interface StreamReport {
  verdict: 'allow' | 'block';
  reasons: string[];
  messages: string[];
  format: string;
  size: number;
  bytes: number;
  textOffset: number;
  textSize: number;
  corruptedAt: number | null;
  seconds: Record<string, number | null>;
  mbPerSecond: Record<string, number | null>;
  peakRssMiB: number;
}

/** The child imports dist/: refuse to measure stale compiled code (npm test builds first). */
function assertDistFresh(): void {
  const stale: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        const js = join(REPO, 'dist', relative(join(REPO, 'src'), p)).replace(/\.ts$/, '.js');
        if (!existsSync(js) || statSync(js).mtimeMs < statSync(p).mtimeMs) stale.push(relative(REPO, p));
      }
    }
  };
  walk(join(REPO, 'src', 'verify'));
  walk(join(REPO, 'src', 'lab'));
  walk(join(REPO, 'src', 'policy'));
  if (stale.length) throw new Error(`dist/ is older than ${stale.join(', ')}: run \`npm run build\` (npm test does it first)`);
}

async function stream(args: string[]): Promise<StreamReport> {
  const { stdout } = await run(process.execPath, [SCRIPT, ...args], { cwd: REPO, maxBuffer: 1024 * 1024 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as StreamReport;
}

describe('streaming verification of a generated 1 GiB signed PE', () => {
  beforeAll(() => {
    manifest();
    assertDistFresh();
  });

  it('allows it with the child process peak RSS under 150 MiB', async () => {
    const r = await stream(['--size', String(GiB)]);
    console.log(`1 GiB streaming run: ${JSON.stringify(r)}`);
    expect(r.reasons).toEqual([]);
    expect(r.verdict).toBe('allow');
    expect(r.format).toBe('pe');
    expect(r.size).toBe(r.bytes);
    expect(r.bytes).toBeGreaterThanOrEqual(GiB);
    expect(r.peakRssMiB).toBeLessThan(150);
  }, 300_000);

  it('a 1-byte change in the middle of the stream gives DIGEST_MISMATCH', async () => {
    const r = await stream(['--size', String(64 * MiB), '--corrupt-middle', '--no-baselines']);
    expect(r.corruptedAt).not.toBeNull();
    expect(r.corruptedAt!).toBeGreaterThan(r.textOffset);
    expect(r.corruptedAt!).toBeLessThan(r.textOffset + r.textSize);
    expect(r.verdict).toBe('block');
    expect(r.reasons).toEqual(['DIGEST_MISMATCH']);
    expect(r.peakRssMiB).toBeLessThan(150);
  }, 120_000);
});
