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
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';

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

  it('wpad-guard: the guard reports the rogue responder and its PAC, in the lab\'s audit chain', async () => {
    const out = mkdtempSync(join(tmpdir(), 'pg-labout-'));
    try {
      const r = await runFlameLab({ scenario: 'wpad-guard', outDir: out });
      expect(r.wpadFindings!.map((f) => f.finding).sort()).toEqual(['pac-diverts-updates', 'unexpected-wpad-responder']);
      const rogue = r.wpadFindings!.find((f) => f.finding === 'unexpected-wpad-responder')!;
      expect(rogue).toMatchObject({ protocol: 'dns', asked: 'wpad.lab.test', addresses: ['127.0.0.1'] });
      const pac = r.wpadFindings!.find((f) => f.finding === 'pac-diverts-updates')!;
      expect(pac.pacResult).toMatch(/^PROXY 127\.0\.0\.1:\d+$/);
      expect(pac.pacResult).not.toContain(`:${r.ports[r.ports.length - 1]}`); // not the gate
      const lines = readFileSync(join(out, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string });
      expect(lines.filter((l) => l.kind === 'wpad')).toHaveLength(2);
      expect((await verifyAuditFiles([join(out, 'audit.jsonl')])).intact).toBe(true);
      expect(r.steps.filter((s) => s.actor === 'patchgate wpad-guard').map((s) => s.verdict).sort()).toEqual(['FINDING pac-diverts-updates', 'FINDING unexpected-wpad-responder']);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});
