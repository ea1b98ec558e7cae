/**
 * `patchgate wpad-guard --once` in a LAN made of two network namespaces (test/wpad/netnsLan.ts):
 * the guard in one, the honest PAC host / DNS server (10.66.0.2) and the attacker (10.66.0.66) in
 * the other, played by test/wpad/lanResponders.mjs. Each scenario gives exactly its findings, in
 * the audit file (hash chain intact, schema valid), on stderr, and in the exit code.
 *
 * Needs root (network namespaces). CI runs as root: there, a namespace that cannot be built fails
 * the suite. A developer without root sees the suite skipped with the reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pacFile } from '../../src/proxy/pacFile.js';
import { loadRulesFile } from '../../src/policy/rulesFile.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';
import type { WpadAuditRecord } from '../../src/audit/auditRecord.js';
import { ATTACKER_IP, GUARD_IP, HONEST_IP, createSegment, isRoot, nodeIn, runGuardOnce, spawnGateWithGuard, startResponders, type LanSegment, type Responders } from './netnsLan.js';
import { waitFor } from '../support/gateHarness.js';
import { REPO } from '../support/fixtures.js';

if (!isRoot) {
  console.warn('SKIPPED test/wpad/wpadGuard.netns.test.ts: the wpad-guard LAN tests create network namespaces and need root (CI runs them as root).');
}

const DOMAIN = 'lab.test';
const GATE = `${HONEST_IP}:8080`;
const patterns = (loadRulesFile(join(REPO, 'rules', 'default.yaml')).rules.hosts ?? []).filter((h) => h.mode === 'inspect').map((h) => h.pattern);
const HONEST_PAC = pacFile({ proxyHostPort: GATE, gatedPatterns: patterns });
// An honest DNS server: wpad.lab.test is patchgate's host; nothing else exists.
const HONEST_DNS = { bind: HONEST_IP, records: { [`wpad.${DOMAIN}`]: HONEST_IP, [`fileserver.${DOMAIN}`]: '10.66.0.10' } };
// Honest hosts answer LLMNR/NBNS/mDNS for their own names only.
const HONEST_NAMES = { reply_from: HONEST_IP, names: { patchgate: HONEST_IP } };
const HONEST_LAN = {
  dns: HONEST_DNS, llmnr: HONEST_NAMES, nbns: HONEST_NAMES, mdns: HONEST_NAMES,
  http: [{ bind: HONEST_IP, port: 80, pac: HONEST_PAC }],
};

type Seen = Pick<WpadAuditRecord, 'finding' | 'protocol' | 'responder'>;

describe.skipIf(!isRoot)('wpad-guard on a LAN of network namespaces', () => {
  let seg: LanSegment;
  let dir: string;
  let responders: Responders | undefined;
  let run = 0;

  beforeAll(async () => {
    seg = await createSegment(); // throws (fails the suite) when root cannot build namespaces
    dir = mkdtempSync(join(tmpdir(), 'pg-wpad-'));
  });

  afterAll(async () => {
    await responders?.stop();
    seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts the LAN, runs one guard round, stops the LAN; the findings from the audit file. */
  async function round(lan: unknown): Promise<{ code: number | null; stderr: string; findings: WpadAuditRecord[]; lanLog: string }> {
    responders = await startResponders(seg.lanNs, lan);
    const audit = join(dir, `audit-${++run}.jsonl`);
    try {
      const r = await runGuardOnce(seg, ['--expect', HONEST_IP, '--gate', GATE, '--dns-server', HONEST_IP, '--search-domain', DOMAIN, '--window', '1s', '--audit', audit]);
      const findings = existsSync(audit) ? readFileSync(audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as WpadAuditRecord) : [];
      if (findings.length) {
        const v = await verifyAuditFiles([audit]);
        expect(v.intact, JSON.stringify(v.break)).toBe(true);
        expect(v.records).toBe(findings.length);
      }
      return { code: r.code, stderr: r.stderr, findings, lanLog: responders.log() };
    } finally {
      await responders.stop();
      responders = undefined;
    }
  }

  const summary = (f: WpadAuditRecord[]): Seen[] =>
    f.map((r) => ({ finding: r.finding, protocol: r.protocol, responder: r.responder }))
      .sort((a, b) => `${a.finding}${a.protocol}`.localeCompare(`${b.finding}${b.protocol}`));

  it('an honest segment: every protocol asked, patchgate\'s PAC checked, no finding', async () => {
    const r = await round({ ...HONEST_LAN, llmnr6: { iface: seg.lanIf, reply_from: seg.lanLinkLocal, names: { patchgate: HONEST_IP } } });
    expect(r.findings, r.stderr).toEqual([]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('FINDING');
    // --once lists every answer heard, findings or not.
    expect(r.stderr).toContain(`patchgate: wpad-guard: answer: dns: ${HONEST_IP} answered wpad.${DOMAIN} with ${HONEST_IP}`);
    // The questions did reach the LAN, by every protocol, and the PAC was fetched.
    expect(r.lanLog).toMatch(new RegExp(`dns: ${GUARD_IP} asked wpad\\.${DOMAIN}, answered ${HONEST_IP}`));
    expect(r.lanLog).toMatch(/dns: 10\.66\.0\.1 asked [a-z]{12}\.lab\.test, NXDOMAIN/);
    expect(r.lanLog).toMatch(/http 10\.66\.0\.2:80: GET \/wpad\.dat Host: wpad\.lab\.test/);
    for (const [kind, wpad, from] of [['llmnr', 'wpad', GUARD_IP], ['llmnr6', 'wpad', seg.guardLinkLocal], ['nbns', 'WPAD', GUARD_IP], ['mdns', 'wpad.local', GUARD_IP]]) {
      expect(r.lanLog, r.lanLog).toContain(`${kind}: ${from} asked ${wpad}, no answer`);
      expect(r.lanLog).toMatch(new RegExp(`${kind}: ${from!.replace(/\./g, '\\.')} asked [a-zA-Z]{12}(\\.local)?, no answer`));
    }
  });

  it('a Responder-style poisoner answering LLMNR and NBNS for every name: random names and wpad, by both protocols', async () => {
    const poisoner = { reply_from: ATTACKER_IP, all: ATTACKER_IP };
    const r = await round({ ...HONEST_LAN, llmnr: poisoner, nbns: poisoner });
    expect(summary(r.findings), r.stderr).toEqual([
      { finding: 'random-name-answered', protocol: 'llmnr', responder: ATTACKER_IP },
      { finding: 'random-name-answered', protocol: 'nbns', responder: ATTACKER_IP },
      { finding: 'unexpected-wpad-responder', protocol: 'llmnr', responder: ATTACKER_IP },
      { finding: 'unexpected-wpad-responder', protocol: 'nbns', responder: ATTACKER_IP },
    ]);
    for (const f of r.findings) {
      expect(f.addresses).toEqual([ATTACKER_IP]);
      expect(f.interface).toBe(seg.guardIf);
      expect(f.kind).toBe('wpad');
    }
    expect(r.findings.find((f) => f.finding === 'unexpected-wpad-responder' && f.protocol === 'nbns')!.asked).toBe('wpad');
    expect(r.code).toBe(1);
    expect(r.stderr.match(/FINDING/g)).toHaveLength(4);
    // No PAC at the poisoner's address: a note, not a finding.
    expect(r.stderr).toContain(`no PAC file at http://${ATTACKER_IP}/wpad.dat`);
  });

  it('a poisoner flooding each answer 500 times: the guard reads at most 64 datagrams a query and reports each responder once', async () => {
    const r = await round({ ...HONEST_LAN, llmnr: { reply_from: ATTACKER_IP, all: ATTACKER_IP, repeat: 500 } });
    expect(summary(r.findings), r.stderr).toEqual([
      { finding: 'random-name-answered', protocol: 'llmnr', responder: ATTACKER_IP },
      { finding: 'unexpected-wpad-responder', protocol: 'llmnr', responder: ATTACKER_IP },
    ]);
    const heard = (r.stderr.match(/answer: llmnr on /g) ?? []).length;
    console.log(`[flood] llmnr answers read: ${heard}`);
    expect(heard).toBeGreaterThan(2);
    expect(heard).toBeLessThanOrEqual(2 * 64);
  });

  it('a poisoner answering LLMNR over IPv6 only (ff02::1:3): found from the interface\'s link-local address', async () => {
    const r = await round({ ...HONEST_LAN, llmnr6: { iface: seg.lanIf, reply_from: seg.lanLinkLocal, all: ATTACKER_IP } });
    expect(summary(r.findings), r.stderr).toEqual([
      { finding: 'random-name-answered', protocol: 'llmnr', responder: seg.lanLinkLocal },
      { finding: 'unexpected-wpad-responder', protocol: 'llmnr', responder: seg.lanLinkLocal },
    ]);
    expect(r.lanLog).toContain(`llmnr6: ${seg.guardLinkLocal}`);
  });

  it('a poisoner answering mDNS for every .local name: found by the legacy-unicast mDNS probe', async () => {
    const r = await round({ ...HONEST_LAN, mdns: { reply_from: ATTACKER_IP, all: ATTACKER_IP } });
    expect(summary(r.findings), r.stderr).toEqual([
      { finding: 'random-name-answered', protocol: 'mdns', responder: ATTACKER_IP },
      { finding: 'unexpected-wpad-responder', protocol: 'mdns', responder: ATTACKER_IP },
    ]);
    expect(r.findings.find((f) => f.finding === 'unexpected-wpad-responder')!.asked).toBe('wpad.local');
  });

  it('a rogue DNS wpad record: one finding, the DNS answer pointing at the attacker', async () => {
    const r = await round({ ...HONEST_LAN, dns: { bind: HONEST_IP, records: { [`wpad.${DOMAIN}`]: ATTACKER_IP } } });
    expect(summary(r.findings), r.stderr).toEqual([{ finding: 'unexpected-wpad-responder', protocol: 'dns', responder: HONEST_IP }]);
    expect(r.findings[0]).toMatchObject({ asked: `wpad.${DOMAIN}`, addresses: [ATTACKER_IP], interface: '' });
    expect(r.code).toBe(1);
  });

  it('a PAC on the expected host that sends update hosts to the attacker: one finding, control characters escaped on stderr', async () => {
    const roguePac = [
      'function FindProxyForURL(url, host) {',
      '  if (shExpMatch(host, "*.windowsupdate.com")) return "PROXY 10.66.0.66:8080; \\u001b[2J";',
      `  return "PROXY ${GATE}";`,
      '}',
    ].join('\n');
    const r = await round({ ...HONEST_LAN, http: [{ bind: HONEST_IP, port: 80, pac: roguePac }] });
    expect(summary(r.findings), r.stderr).toEqual([{ finding: 'pac-diverts-updates', protocol: 'http', responder: HONEST_IP }]);
    expect(r.findings[0]).toMatchObject({
      pacUrl: `http://${HONEST_IP}/wpad.dat`, updateUrl: 'http://download.windowsupdate.com/', pacResult: 'PROXY 10.66.0.66:8080; \u001b[2J',
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('PROXY 10.66.0.66:8080; \\x1b[2J');
    expect(r.stderr).not.toContain('\u001b');
  });

  it('Flame\'s move: a rogue NBNS wpad answer and the attacker\'s PAC making it everyone\'s proxy', async () => {
    const snack = { reply_from: ATTACKER_IP, names: { wpad: ATTACKER_IP } };
    const pac = 'function FindProxyForURL(url, host) { return "PROXY 10.66.0.66:8080"; }';
    const r = await round({ ...HONEST_LAN, nbns: snack, http: [...HONEST_LAN.http, { bind: ATTACKER_IP, port: 80, pac }] });
    expect(summary(r.findings), r.stderr).toEqual([
      { finding: 'pac-diverts-updates', protocol: 'http', responder: ATTACKER_IP },
      { finding: 'unexpected-wpad-responder', protocol: 'nbns', responder: ATTACKER_IP },
    ]);
    expect(r.code).toBe(1);
  });

  it('patchgate run --wpad-guard: the gate serves, the guard reports the poisoner into the same audit chain and /metrics, SIGTERM stops both', async () => {
    responders = await startResponders(seg.lanNs, { llmnr: { reply_from: ATTACKER_IP, all: ATTACKER_IP } });
    const audit = join(dir, 'run-audit.jsonl');
    const gate = spawnGateWithGuard(seg, [
      '--listen', `${GUARD_IP}:8080`, '--admin', '127.0.0.1:0', '--audit', audit, '--ca-dir', join(dir, 'ca'), '--spool-dir', dir,
      '--wpad-every', '2s', '--wpad-window', '500ms', '--wpad-search-domain', DOMAIN, '--wpad-dns-server', HONEST_IP,
    ]);
    try {
      expect(await waitFor(() => (gate.stderr().match(/FINDING/g) ?? []).length >= 2, 20_000), gate.stderr()).toBe(true);
      expect(gate.stderr()).toContain(`expected wpad host(s) ${GUARD_IP}`);
      expect(gate.stderr()).toContain(`gate(s) a PAC must name: ${GUARD_IP}:8080`);
      const adminPort = /metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(gate.stderr())![1];
      const metrics = await nodeIn(seg.guardNs, 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))', `http://127.0.0.1:${adminPort}/metrics`);
      expect(metrics).toMatch(/patchgate_wpad_findings_total\{finding="random-name-answered",protocol="llmnr"\} [1-9]/);
      expect(metrics).toMatch(/patchgate_wpad_findings_total\{finding="unexpected-wpad-responder",protocol="llmnr"\} [1-9]/);
      expect(metrics).toContain('patchgate_transfers_total{verdict="allow",reason="none"} 0');
      // The gate still serves its PAC beside the guard.
      const pac = await nodeIn(seg.guardNs, 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))', `http://${GUARD_IP}:8080/wpad.dat`);
      expect(pac).toContain(`PROXY ${GUARD_IP}:8080`);
    } finally {
      gate.child.kill('SIGTERM');
    }
    expect(await gate.exited).toBe(0);
    await responders.stop();
    responders = undefined;
    const v = await verifyAuditFiles([audit]);
    expect(v.intact).toBe(true);
    const kinds = readFileSync(audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as WpadAuditRecord);
    expect(kinds.length).toBeGreaterThanOrEqual(2);
    expect(new Set(kinds.map((k) => `${k.finding}/${k.protocol}`))).toEqual(new Set(['random-name-answered/llmnr', 'unexpected-wpad-responder/llmnr']));
  });
});
