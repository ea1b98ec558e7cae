/**
 * `patchgate run` as a process: the rules' `clients` and `--allow-client` (issue 13 item 5), and
 * the gate's own admin port (its /metrics) never reachable through the proxy, even with
 * `--update-host 127.0.0.1` naming that address.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proxyRequest } from '../support/gateHarness.js';
import { BIN, startRunProcess } from '../support/runProcess.js';
import { REPO } from '../support/fixtures.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'patchgate-run-access-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('patchgate run: who may connect', () => {
  it("a client outside the rules' clients gets 403; --allow-client admits it", async () => {
    const rules = join(dir, 'lan-only.yaml');
    writeFileSync(rules, 'version: 1\nanchors: []\nclients: [10.0.0.0/8]\n');
    const closed = await startRunProcess({ audit: join(dir, 'a1.jsonl'), dir: join(dir, 'g1'), extra: ['--rules', rules] });
    try {
      const r = await proxyRequest(closed.port, `http://127.0.0.1:${closed.adminPort}/healthz`);
      expect(r.status).toBe(403);
      expect(r.body.toString()).toMatch(/client 127\.0\.0\.1 is not in the rules' clients/);
    } finally {
      await closed.stop();
    }
    const open = await startRunProcess({ audit: join(dir, 'a2.jsonl'), dir: join(dir, 'g2'), extra: ['--rules', rules, '--allow-client', '127.0.0.1/32'] });
    try {
      // Admitted now; and the admin port stays out of reach through the proxy.
      const r = await proxyRequest(open.port, `http://127.0.0.1:${open.adminPort}/metrics`);
      expect(r.status).toBe(403);
      expect(r.body.toString()).toMatch(/the gate's own listening or admin address/);
      expect(r.body.toString()).not.toMatch(/patchgate_transfers_total/);
    } finally {
      await open.stop();
    }
  }, 60_000);

  it('a bad --allow-client is a usage error (exit 2)', () => {
    const r = spawnSync(process.execPath, [BIN, 'run', '--allow-client', '10.0.0.0/99', '--listen', '127.0.0.1:0', '--admin', 'off'], { cwd: REPO, encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--allow-client: "10\.0\.0\.0\/99" is not an address range/);
  });
});
