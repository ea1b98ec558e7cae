// Child of bench/ab-pass-through.mjs: one UpdateGate from the compiled tree given (argv[2]) that
// passes localhost through. Prints its port; each line on stdin gets the CPU (user + system, µs)
// the process used since the previous line.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { reportCpuOnStdin } from './abRounds.mjs';

const dist = process.argv[2];
const load = (p) => import(pathToFileURL(join(dist, p)).href);
const { UpdateGate } = await load('proxy/updateGate.js');
const { HostRules } = await load('policy/hostRules.js');
const { AuditLog } = await load('audit/auditLog.js');
const { defaultAccessRules } = await load('policy/accessPolicy.js');
const base = mkdtempSync(join(tmpdir(), 'patchgate-ab-'));
console.error = () => {}; // a proxy library's own error lines
const gate = new UpdateGate({
  // No payload is verified here (only passed through): an empty trust is enough.
  listen: { host: '127.0.0.1', port: 0 }, policy: { anchors: [], tsaAnchors: [], distrust: [], fileDigests: ['sha256'], limits: {} },
  hostRules: new HostRules([{ pattern: 'localhost', mode: 'pass', ports: 'any' }, { pattern: '127.0.0.1', mode: 'inspect', ports: 'any' }]),
  rulesSha256: 'ab', audit: new AuditLog(join(base, 'audit.jsonl')), caDir: join(base, 'ca'), spoolBase: base, digestThreads: 0,
  limits: { maxPayloadBytes: 1e9, idleTimeoutMs: 30_000, totalTimeoutMs: 60_000, memoryHoldBytes: 1 << 20, cacheTtlMs: 60_000 },
  nonPayload: 'pass', unsignedDeltas: 'block', access: defaultAccessRules(),
});
await gate.start();
reportCpuOnStdin(gate.address.port);
