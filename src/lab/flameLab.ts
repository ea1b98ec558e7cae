import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { emptyPolicy } from '../verify/approvedCaPolicy.js';
import { CertificateInfo } from '../verify/chain/certificateInfo.js';
import { HostRules } from '../policy/hostRules.js';
import { AuditLog } from '../audit/auditLog.js';
import type { AuditRecord, WpadAuditRecord } from '../audit/auditRecord.js';
import { WpadGuard } from '../wpad/wpadGuard.js';
import { UpdateGate } from '../proxy/updateGate.js';
import { makeLabPki, pinnedAnchor, type LabPki } from './labPki.js';
import { GENUINE_SEED_OTHER, GENUINE_SEED_TARGET, labPayload, SCENARIOS, type ScenarioName } from './flameScenarios.js';
import { naiveCheck, type NaiveCheckResult } from './naiveVictimCheck.js';
import { resolveA, startAttackerProxy, startRoguePacServer, startRogueWpadResponder, startUpdateServer, type LabEvent, type LabService } from './labServers.js';
import { bitsDownload, evaluatePac, fetchText, parsePacProxy } from './victimClient.js';
import { renderLabReport } from './labReport.js';

export const UPDATE_HOST = 'update.vendor.test';
const TARGET = '/kb/KB2000-security-update.exe';
const OTHER = '/kb/KB1000-cumulative-update.exe';

export interface LabStep {
  step: number;
  phase: 'attack' | 'defended';
  actor: string;
  answeredBy: string;
  served: string;
  verdict: string;
  reasons: string;
}

export interface LabResult {
  scenario: ScenarioName;
  title: string;
  attack: string;
  steps: LabStep[];
  naive: NaiveCheckResult;
  /** What the victim got for the targeted update through patchgate. */
  gate: { status: number; reasons: string[]; auditId?: string };
  genuine: { status: number; identical: boolean; naive: NaiveCheckResult };
  expectedCodes: string[];
  /** Transfer and connect records of the lab's audit log. */
  audit: AuditRecord[];
  /** wpad-guard scenario: the guard's findings (also in the audit log), and the findings expected. */
  wpadFindings?: WpadAuditRecord[];
  expectedWpadFindings?: string[];
  pki: LabPki;
  ports: number[];
  outDir?: string;
  tempDir: string;
  kept: boolean;
}

export interface LabOptions {
  scenario?: ScenarioName;
  /** Where to write audit.jsonl and report.html (kept). */
  outDir?: string;
  /** Keep the lab's temp folder (CA, spool) for inspection. */
  keep?: boolean;
  /** Narration sink (one line per event). */
  narrate?: (line: string) => void;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Re-enacts Flame's man-in-the-middle update attack on 127.0.0.1: a rogue WPAD answer makes the
 * attacker's proxy the victim's proxy and the targeted update is swapped for a forged one, which a
 * client checking "chains to the vendor root" accepts. Then the same victim goes through patchgate
 * (chained to the attacker's proxy, the vendor's dedicated update CA pinned): the forged update is
 * blocked, the genuine one passes byte-identical. Every verdict comes from the gate.
 */
export async function runFlameLab(opts: LabOptions = {}): Promise<LabResult> {
  const scenario = SCENARIOS[opts.scenario ?? 'forged-md5'];
  const say = opts.narrate ?? (() => {});
  const tempDir = mkdtempSync(join(tmpdir(), 'patchgate-lab-'));
  const services: LabService[] = [];
  const events: LabEvent[] = [];
  const log = (e: LabEvent) => events.push(e);
  const steps: LabStep[] = [];
  const step = (s: Omit<LabStep, 'step'>) => {
    steps.push({ step: steps.length + 1, ...s });
    say(`${String(steps.length).padStart(2)}. [${s.phase}] ${s.actor} <- ${s.answeredBy}: ${s.served}${s.verdict ? ` => ${s.verdict}` : ''}${s.reasons ? ` (${s.reasons})` : ''}`);
  };
  let gate: UpdateGate | undefined;
  let audit: AuditLog | undefined;
  const auditPath = opts.outDir ? join(resolve(opts.outDir), 'audit.jsonl') : join(tempDir, 'audit.jsonl');
  try {
    say(`patchgate lab flame: scenario ${scenario.name} (${scenario.title})`);
    const pki = makeLabPki();
    const genuineOther = labPayload(pki.publisher, [pki.updateCa], GENUINE_SEED_OTHER);
    const genuineTarget = labPayload(pki.publisher, [pki.updateCa], GENUINE_SEED_TARGET);
    const forged = scenario.forgedPayload(pki, genuineTarget);
    const naiveRoots = [new CertificateInfo(pki.vendorRoot.der), new CertificateInfo(pki.rogueRoot.der)];

    const origin = await startUpdateServer(new Map([[TARGET, genuineTarget], [OTHER, genuineOther]]), log);
    services.push(origin);
    const attacker = await startAttackerProxy({ updateHost: UPDATE_HOST, originPort: origin.port, target: TARGET, forged, rangeSplice: scenario.rangeSplice, log });
    services.push(attacker);
    const pacServer = await startRoguePacServer(attacker.port, log);
    services.push(pacServer);
    const responder = await startRogueWpadResponder(log);
    services.push(responder);
    const targetUrl = `http://${UPDATE_HOST}${TARGET}`;
    const otherUrl = `http://${UPDATE_HOST}${OTHER}`;

    // ---- Phase 1: the attack, as in 2012 ----
    const wpadIp = await resolveA('wpad', responder.port);
    step({ phase: 'attack', actor: 'victim', answeredBy: `rogue name responder (udp 127.0.0.1:${responder.port})`, served: `DNS: wpad is ${wpadIp}`, verdict: '', reasons: '' });
    const roguePac = await fetchText(wpadIp, pacServer.port, '/wpad.dat', `wpad:${pacServer.port}`);
    step({ phase: 'attack', actor: 'victim', answeredBy: `rogue PAC server (127.0.0.1:${pacServer.port})`, served: 'wpad.dat making the attacker the proxy', verdict: '', reasons: '' });
    const pacAnswer = await evaluatePac(roguePac, targetUrl);
    const attackerProxy = parsePacProxy(pacAnswer);
    if (!attackerProxy) throw new Error(`the rogue PAC gave no proxy: ${pacAnswer}`);
    step({ phase: 'attack', actor: 'victim (PAC engine)', answeredBy: 'pac-resolver', served: `FindProxyForURL(${targetUrl}) = "${pacAnswer}"`, verdict: '', reasons: '' });
    const attacked = await bitsDownload(attackerProxy, targetUrl);
    if (!attacked.body) throw new Error(`the attack download failed with HTTP ${attacked.status}`);
    const naive = naiveCheck(attacked.body, naiveRoots);
    step({
      phase: 'attack', actor: 'victim (BITS-style: HEAD + ranges)', answeredBy: `attacker proxy (127.0.0.1:${attacker.port})`,
      served: `${TARGET}: ${attacked.body.length} bytes, sha256 ${sha(attacked.body).slice(0, 16)}…, ${attacked.requests} requests`,
      verdict: naive.accepted ? 'INSTALLED by the naive client' : 'refused by the naive client', reasons: naive.why,
    });

    // ---- Phase 2: the same victim behind patchgate, the attacker still upstream ----
    const outDir = opts.outDir ? resolve(opts.outDir) : undefined;
    if (outDir) mkdirSync(outDir, { recursive: true });
    if (existsSync(auditPath)) rmSync(auditPath);
    audit = new AuditLog(auditPath);
    gate = new UpdateGate({
      listen: { host: '127.0.0.1', port: 0 },
      policy: emptyPolicy({ anchors: [pinnedAnchor(pki.updateCa, 'Lab Vendor Update Signing CA')], fileDigests: ['sha256'] }),
      hostRules: new HostRules([{ pattern: '*.vendor.test', mode: 'inspect', source: 'lab' }]),
      rulesSha256: sha(Buffer.from('lab:' + scenario.name)),
      audit, caDir: join(tempDir, 'ca'), upstreamProxy: new URL(`http://127.0.0.1:${attacker.port}`),
      limits: { maxPayloadBytes: 64 * 1024 * 1024, idleTimeoutMs: 10_000, totalTimeoutMs: 60_000, memoryHoldBytes: 64 * 1024, cacheTtlMs: 30_000 },
      nonPayload: 'block', unsignedDeltas: 'block', spoolBase: tempDir,
    });
    await gate.start();
    services.push({ name: 'patchgate', port: gate.address.port, close: async () => {} });
    const wpadFindings: WpadAuditRecord[] = [];
    if (scenario.wpadFindings) {
      // The guard asks the segment's DNS (the rogue responder) for wpad.lab.test and a random name,
      // as it would on a LAN; loopback has no multicast or broadcast, so DNS is the protocol here.
      // No host is expected to answer wpad in the lab (the victim is given patchgate's PAC directly),
      // and a PAC must send the update host to this gate.
      const guard = new WpadGuard({
        interfaces: [], protocols: ['dns'], dns: { servers: ['127.0.0.1'], port: responder.port, searchDomains: ['lab.test'] },
        expect: [], gates: [{ host: '127.0.0.1', port: gate.address.port }], updateUrls: [targetUrl], pacPort: pacServer.port,
        record: (r) => { audit!.record(r); wpadFindings.push(r); }, windowMs: 300, warn: () => {},
      });
      await guard.round();
      for (const f of wpadFindings) {
        step({ phase: 'defended', actor: 'patchgate wpad-guard', answeredBy: `${f.protocol === 'http' ? 'PAC server' : f.protocol.toUpperCase()} ${f.responder}`, served: f.message, verdict: `FINDING ${f.finding}`, reasons: '' });
      }
    }
    const gatePac = await fetchText('127.0.0.1', gate.address.port, '/wpad.dat', `127.0.0.1:${gate.address.port}`);
    const gateAnswer = await evaluatePac(gatePac, targetUrl);
    const gateProxy = parsePacProxy(gateAnswer);
    if (!gateProxy) throw new Error(`patchgate's PAC gave no proxy: ${gateAnswer}`);
    step({ phase: 'defended', actor: 'victim (PAC engine)', answeredBy: `patchgate PAC (127.0.0.1:${gate.address.port})`, served: `FindProxyForURL(${targetUrl}) = "${gateAnswer}"; patchgate's upstream is the attacker's proxy`, verdict: '', reasons: '' });
    const defended = await bitsDownload(gateProxy, targetUrl);
    step({
      phase: 'defended', actor: 'victim', answeredBy: 'patchgate (upstream: attacker proxy)', served: `${TARGET}: HTTP ${defended.status}${defended.body ? `, ${defended.body.length} bytes` : ', no payload byte'}`,
      verdict: defended.body ? 'ALLOWED (should not happen)' : 'BLOCKED by patchgate', reasons: (defended.reasons ?? []).join(', '),
    });
    const genuine = await bitsDownload(gateProxy, otherUrl);
    const identical = !!genuine.body && Buffer.compare(genuine.body, genuineOther) === 0;
    step({
      phase: 'defended', actor: 'victim', answeredBy: 'patchgate (upstream: attacker proxy, which relays the genuine file)', served: `${OTHER}: HTTP ${genuine.status}, ${genuine.body?.length ?? 0} bytes, ${identical ? 'byte-identical to the vendor\'s' : 'DIFFERENT from the vendor\'s'}`,
      verdict: genuine.body ? 'ALLOWED' : 'blocked', reasons: (genuine.reasons ?? []).join(', '),
    });
    const genuineNaive = genuine.body ? naiveCheck(genuine.body, naiveRoots) : { accepted: false, why: 'not received', chain: [] };

    await gate.stop();
    gate = undefined;
    await audit.close();
    audit = undefined;
    const lines = readFileSync(auditPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditRecord | WpadAuditRecord);
    const records = lines.filter((l): l is AuditRecord => l.kind !== 'wpad');
    const result: LabResult = {
      scenario: scenario.name, title: scenario.title, attack: scenario.attack, steps, naive,
      gate: { status: defended.status, reasons: defended.reasons ?? [], auditId: defended.auditId },
      genuine: { status: genuine.status, identical, naive: genuineNaive }, expectedCodes: scenario.expectedCodes,
      audit: records, ...(scenario.wpadFindings ? { wpadFindings, expectedWpadFindings: scenario.wpadFindings } : {}), pki, ports: services.map((s) => s.port), outDir, tempDir, kept: !!opts.keep,
    };
    if (outDir) {
      writeFileSync(join(outDir, 'report.html'), renderLabReport(result));
      say(`report: ${join(outDir, 'report.html')}; audit log: ${auditPath}`);
    }
    return result;
  } finally {
    if (gate) await gate.stop().catch(() => {});
    if (audit) await audit.close().catch(() => {});
    for (const s of services.reverse()) await s.close().catch(() => {});
    if (!opts.keep) rmSync(tempDir, { recursive: true, force: true });
  }
}

/** The step table, for the terminal and docs/lab.md. */
export function formatStepTable(r: LabResult): string {
  const rows = r.steps.map((s) => [String(s.step), s.phase, s.actor, s.answeredBy, s.served, s.verdict, s.reasons]);
  const head = ['#', 'phase', 'who asked', 'who answered', 'what was served', 'verdict', 'reasons'];
  const width = head.map((h, i) => Math.min(48, Math.max(h.length, ...rows.map((row) => row[i]!.length))));
  const cut = (t: string, w: number) => (t.length > w ? t.slice(0, w - 1) + '…' : t.padEnd(w));
  return [head, head.map((_, i) => '-'.repeat(width[i]!)), ...rows].map((row) => row.map((c, i) => cut(c, width[i]!)).join('  ')).join('\n');
}
