/**
 * The Flame lab end to end, every scenario: the naive victim installs the forged update; behind
 * patchgate the same download is blocked with the scenario's reason codes and the genuine update
 * passes byte-identical; afterwards nothing listens and no temp file is left.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFlameLab } from '../../src/lab/flameLab.js';
import { SCENARIO_NAMES } from '../../src/lab/flameScenarios.js';

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(true));
  });
}

describe('patchgate lab flame', () => {
  it.each(SCENARIO_NAMES)('%s: naive client fooled, patchgate blocks with the scenario codes, genuine update intact', async (scenario) => {
    const out = mkdtempSync(join(tmpdir(), 'pg-labout-'));
    try {
      const r = await runFlameLab({ scenario, outDir: out });
      expect(r.naive.accepted).toBe(true);
      expect(r.gate.status).toBe(403);
      expect([...new Set(r.gate.reasons)].sort()).toEqual([...r.expectedCodes].sort());
      expect(r.genuine.identical).toBe(true);
      // The block is in the audit log with the same id the victim saw, and the genuine download is audited allow.
      const blocked = r.audit.find((a) => a.id === r.gate.auditId);
      expect(blocked?.verdict).toBe('block');
      expect(r.audit.some((a) => a.verdict === 'allow' && a.url.endsWith('KB1000-cumulative-update.exe'))).toBe(true);
      // The report and the audit log are in --out.
      const html = readFileSync(join(out, 'report.html'), 'utf8');
      expect(html).toContain(r.expectedCodes[0]!);
      expect(html).toContain('Lab Vendor Update Signing CA');
      // Nothing left listening, no temp folder left.
      for (const p of r.ports) expect(await refused(p)).toBe(true);
      expect(existsSync(r.tempDir)).toBe(false);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it('the forged-md5 report marks the MD5 leaf and the intermediate without codeSigning', async () => {
    const out = mkdtempSync(join(tmpdir(), 'pg-labout-'));
    try {
      await runFlameLab({ scenario: 'forged-md5', outDir: out });
      const html = readFileSync(join(out, 'report.html'), 'utf8');
      expect(html).toMatch(/class="fail">✗ signed with md5WithRSA/);
      expect(html).toMatch(/Licensing Intermediate PCA[\s\S]*?class="fail">✗ EKU: none/);
      expect(html).toMatch(/expected: the approved anchor/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});
