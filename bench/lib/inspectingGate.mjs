// Child of bench/ab-small-inspected.mjs: one UpdateGate from the compiled tree given (argv[2]), set
// up as `patchgate run --update-host 127.0.0.1 --anchor <lab Update CA>` sets it up (the bundled
// rules, their trust channels, the audit log and its metrics). Prints its port; each line on stdin
// gets the CPU (user + system, µs, all threads) the process used since the previous line.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { reportCpuOnStdin } from './abRounds.mjs';

const [dist, repo] = process.argv.slice(2);
const load = (p) => import(pathToFileURL(join(dist, p)).href);
const { UpdateGate } = await load('proxy/updateGate.js');
const { loadGateConfig, openAudit } = await load('cli/gateService.js');
const base = mkdtempSync(join(tmpdir(), 'patchgate-ab-'));
const args = {
  rules: join(repo, 'rules', 'default.yaml'), admin: 'off', updateHost: ['127.0.0.1'],
  anchor: [join(repo, 'test', 'fixtures', 'out', 'pki', 'updateca.pem')], audit: join(base, 'audit.jsonl'),
};
const cfg = loadGateConfig(args);
const { audit, metrics } = openAudit(args, cfg.loaded.sha256);
const gate = new UpdateGate({
  listen: { host: '127.0.0.1', port: 0 }, policy: cfg.policy, trustFor: (h, p) => cfg.channels.trustFor(h, p), hostRules: cfg.hostRules,
  rulesSha256: cfg.loaded.sha256, audit, caDir: join(base, 'ca'), limits: cfg.limits, nonPayload: cfg.nonPayload, unsignedDeltas: cfg.unsignedDeltas,
  unverifiable: cfg.unverifiable, spoolBase: base, observer: metrics, access: cfg.access, auditOnError: cfg.auditOnError,
});
metrics.watch(gate);
await gate.start();
reportCpuOnStdin(gate.address.port);
