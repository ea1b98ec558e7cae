import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP, isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { WpadAuditRecord, WpadFinding } from '../audit/auditRecord.js';
import { probeDns, probeLlmnr, probeLlmnr6, probeMdns, probeNbns, randomProbeName, type NameAnswer, type NameProtocol, type ProbeInterface } from './nameProbes.js';
import { evaluatePacFor, fetchPac, sendsOnlyToGate } from './pacCheck.js';
import type { WpadMetrics } from './wpadMetrics.js';
import { forTerminal } from '../display/terminalText.js';

export const NAME_PROTOCOLS: readonly NameProtocol[] = ['dns', 'llmnr', 'nbns', 'mdns'];

export interface WpadGuardOptions {
  interfaces: ProbeInterface[];
  /** DNS servers and search domains (`wpad.<domain>`); no domain, no DNS probe. */
  dns: { servers: string[]; searchDomains: string[]; port?: number };
  /** The hosts allowed to answer `wpad` (names or addresses): patchgate's own, normally. */
  expect: string[];
  /** The proxies a PAC may send update hosts to; when empty, any port of an expected host. */
  gates: { host: string; port: number }[];
  /** Update URLs evaluated against every PAC found (from the rules' inspected hosts). */
  updateUrls: string[];
  /** Where findings go: the audit chain. */
  record: (r: WpadAuditRecord) => void;
  metrics?: WpadMetrics;
  /** How long to listen for answers to each query. */
  windowMs: number;
  /** Port the PAC files are fetched from (80, as WPAD clients do). */
  pacPort?: number;
  protocols?: readonly NameProtocol[];
  /** One line per finding and per problem (stderr). */
  warn: (line: string) => void;
  /** Every answer heard, finding or not (the CLI logs them at debug level, or on stderr with --once). */
  onAnswer?: (a: NameAnswer) => void;
}

/** Bounds of one round. */
const MAX_PAC_HOSTS_PER_ROUND = 8;
const MAX_FINDINGS_PER_ROUND = 64;
const MAX_TEXT = 200;

/** Network text for an stderr line: escaped as everywhere else (forTerminal), and cut to `max` characters. */
export function escapeForTerminal(s: string, max = MAX_TEXT): string {
  return forTerminal(s.length > max ? s.slice(0, max) + '…' : s);
}

/** The interfaces to probe: the ones named (each must have an IPv4 address), or every non-loopback one with IPv4. */
export function probeInterfaces(names?: string[]): ProbeInterface[] {
  const all = networkInterfaces();
  const pick = (name: string): ProbeInterface | undefined => {
    const a = (all[name] ?? []).find((x) => x.family === 'IPv4' && !x.internal);
    if (!a) return undefined;
    const addr = a.address.split('.').map(Number);
    const mask = a.netmask.split('.').map(Number);
    const v6 = (all[name] ?? []).filter((x) => x.family === 'IPv6' && !x.internal);
    const linkLocal = v6.find((x) => /^fe80:/i.test(x.address));
    const address6 = linkLocal ? `${linkLocal.address}%${name}` : v6[0]?.address;
    return { name, address: a.address, broadcast: addr.map((o, i) => (o | (~mask[i]! & 0xff)) & 0xff).join('.'), ...(address6 ? { address6 } : {}) };
  };
  if (names && names.length) {
    return names.map((n) => {
      const p = pick(n);
      if (!p) throw new Error(`interface ${n} does not exist, is loopback, or has no IPv4 address`);
      return p;
    });
  }
  return Object.keys(all).map(pick).filter((p): p is ProbeInterface => !!p);
}

/** Name servers (IPv4 and IPv6) and search domains of a resolv.conf. */
export function readResolvConf(path = '/etc/resolv.conf'): { servers: string[]; searchDomains: string[] } {
  let text = '';
  try { text = readFileSync(path, 'utf8'); } catch { return { servers: [], searchDomains: [] }; }
  const servers: string[] = [];
  let searchDomains: string[] = [];
  for (const line of text.split('\n')) {
    const [key, ...rest] = line.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (key === 'nameserver' && rest[0] && isIP(rest[0])) servers.push(rest[0]);
    if (key === 'search' || key === 'domain') searchDomains = rest.filter((d) => d && d !== '.');
  }
  return { servers: servers.slice(0, 3), searchDomains: searchDomains.slice(0, 6) };
}

/** A concrete host for a rules pattern: `*.windowsupdate.com` -> `download.windowsupdate.com`. */
export function updateUrlsFor(patterns: string[]): string[] {
  const hosts = patterns.map((p) => p.toLowerCase().replace(/^\*\./, 'download.').replace(/\*/g, 'x'));
  return [...new Set(hosts)].map((h) => `http://${h.includes(':') && !h.startsWith('[') ? `[${h}]` : h}/`);
}

interface Finding {
  finding: WpadFinding;
  answer: NameAnswer | { protocol: 'http'; interface: string; asked: string; responder: string; addresses: string[] };
  pacUrl?: string;
  updateUrl?: string;
  pacResult?: string;
  message: string;
}

/**
 * The WPAD guard: each round, on each interface, asks for `wpad` and for a random name by LLMNR,
 * NBNS and mDNS, and by DNS for `wpad.<domain>` and `<random>.<domain>`; judges every answer;
 * fetches and evaluates the PAC file of every host a `wpad` answer points at; writes one audit
 * record, one metric increment and one stderr line per finding. Rounds never overlap.
 */
export class WpadGuard {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly o: WpadGuardOptions) {}

  /** Runs a round now and then every `everyMs` until stop(). */
  start(everyMs: number): void {
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.round().catch((e) => this.o.warn(`patchgate: wpad-guard: round failed: ${escapeForTerminal((e as Error).message)}`));
      await this.running;
      if (!this.stopped) this.timer = setTimeout(() => void tick(), everyMs);
    };
    void tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One round: the findings written (also returned). */
  async round(): Promise<WpadAuditRecord[]> {
    const o = this.o;
    const protocols = new Set(o.protocols ?? NAME_PROTOCOLS);
    const random = randomProbeName();
    const expected = await this.expectedAddresses();
    const w = o.windowMs;
    const probes: Promise<NameAnswer[]>[] = [];
    for (const iface of o.interfaces) {
      for (const name of ['wpad', random]) {
        if (protocols.has('llmnr')) probes.push(probeLlmnr({ name, iface, windowMs: w }));
        if (protocols.has('llmnr') && iface.address6) probes.push(probeLlmnr6({ name, iface: { ...iface, address6: iface.address6 }, windowMs: w }));
        if (protocols.has('nbns')) probes.push(probeNbns({ name, iface, windowMs: w }));
        if (protocols.has('mdns')) probes.push(probeMdns({ name: `${name}.local`, iface, windowMs: w }));
      }
    }
    if (protocols.has('dns')) {
      for (const server of o.dns.servers) {
        for (const domain of o.dns.searchDomains) {
          for (const name of ['wpad', random]) probes.push(probeDns({ name: `${name}.${domain}`, server, port: o.dns.port, windowMs: w }));
        }
      }
    }
    const answers = (await Promise.all(probes)).flat();
    const findings: Finding[] = [];
    const seen = new Set<string>();
    const once = (key: string) => (seen.has(key) ? false : (seen.add(key), true));
    const isRandom = (a: NameAnswer) => a.asked.split('.')[0]!.toLowerCase() === random;
    const pacHosts = new Map<string, NameAnswer>();
    for (const a of answers) {
      o.metrics?.answer(a.protocol, isRandom(a) ? 'random' : 'wpad');
      o.onAnswer?.(a);
      const where = `${a.protocol}${a.interface ? ` on ${a.interface}` : ''}`;
      if (isRandom(a)) {
        if (once(`random|${a.protocol}|${a.interface}|${a.responder}`)) {
          findings.push({ finding: 'random-name-answered', answer: a, message: `${where}: ${a.responder} answered the never-existing name ${a.asked} with ${a.addresses.join(', ')} (a poisoner answers every name)` });
        }
        continue;
      }
      for (const addr of a.addresses) if (!pacHosts.has(addr) && pacHosts.size < MAX_PAC_HOSTS_PER_ROUND) pacHosts.set(addr, a);
      // A DNS answer comes from the configured server: what matters is where it points. A multicast
      // or broadcast answer comes from the host itself: the responder must be expected too.
      const unexpected = a.addresses.filter((x) => !expected.has(x));
      if (a.protocol !== 'dns' && !expected.has(a.responder)) unexpected.unshift(a.responder);
      if (unexpected.length && once(`wpad|${a.protocol}|${a.interface}|${a.responder}|${a.addresses.join(',')}`)) {
        findings.push({ finding: 'unexpected-wpad-responder', answer: a, message: `${where}: ${a.responder} answered ${a.asked} with ${a.addresses.join(', ')}; expected ${[...o.expect].join(', ') || '(no one)'}` });
      }
    }
    await Promise.all([...pacHosts].map(async ([host, a]) => {
      const f = await this.checkPac(host, a, expected);
      if (f) findings.push(f);
    }));
    const records: WpadAuditRecord[] = [];
    for (const f of findings.slice(0, MAX_FINDINGS_PER_ROUND)) {
      const r: WpadAuditRecord = {
        id: randomUUID(), kind: 'wpad', finding: f.finding, protocol: f.answer.protocol, interface: f.answer.interface, asked: f.answer.asked,
        responder: f.answer.responder, addresses: f.answer.addresses,
        ...(f.pacUrl ? { pacUrl: f.pacUrl } : {}), ...(f.updateUrl ? { updateUrl: f.updateUrl } : {}), ...(f.pacResult !== undefined ? { pacResult: f.pacResult.slice(0, 1000) } : {}),
        message: f.message,
      };
      o.record(r);
      o.metrics?.finding(r.finding, r.protocol);
      // The message's only network text (a PAC's answer) is already cut to MAX_TEXT: escape it all.
      o.warn(`patchgate: wpad-guard: FINDING ${r.finding}: ${escapeForTerminal(f.message, 4 * MAX_TEXT)} (audit id ${r.id})`);
      records.push(r);
    }
    if (findings.length > MAX_FINDINGS_PER_ROUND) o.warn(`patchgate: wpad-guard: ${findings.length - MAX_FINDINGS_PER_ROUND} more findings this round not recorded (bound ${MAX_FINDINGS_PER_ROUND})`);
    o.metrics?.roundDone();
    return records;
  }

  /** Fetches the PAC file `host` serves and evaluates the update URLs: a finding when one goes anywhere but to patchgate. */
  private async checkPac(host: string, a: NameAnswer, expected: Set<string>): Promise<Finding | undefined> {
    const o = this.o;
    const port = o.pacPort ?? 80;
    const shownHost = isIPv4(host) || !host.includes(':') ? host : `[${host}]`;
    const pacUrl = `http://${shownHost}${port === 80 ? '' : `:${port}`}/wpad.dat`;
    const pac = await fetchPac({ host, port, hostHeader: a.asked.replace(/\.local$/, '') });
    if (!pac.ok) {
      o.warn(`patchgate: wpad-guard: no PAC file at ${escapeForTerminal(pacUrl)} (${escapeForTerminal(pac.why)})`);
      return undefined;
    }
    const iface = o.interfaces.find((i) => i.name === a.interface) ?? o.interfaces[0];
    const results = await evaluatePacFor(pac.text, o.updateUrls, iface?.address ?? '127.0.0.1');
    const isGate = (h: string, p: number | undefined) => (o.gates.length
      ? o.gates.some((g) => g.host.toLowerCase() === h && g.port === p)
      : expected.has(h) || o.expect.some((e) => e.toLowerCase() === h));
    const diverted = o.updateUrls.map((u, i) => ({ url: u, result: results[i]! })).filter((x) => !sendsOnlyToGate(x.result, isGate));
    if (!diverted.length) return undefined;
    const first = diverted[0]!;
    return {
      finding: 'pac-diverts-updates',
      answer: { protocol: 'http', interface: a.interface, asked: a.asked, responder: host, addresses: a.addresses },
      pacUrl, updateUrl: first.url, pacResult: first.result,
      message: `${pacUrl} (${a.protocol} answer for ${a.asked}) sends ${diverted.length} of ${o.updateUrls.length} update URL(s) elsewhere than patchgate: FindProxyForURL("${first.url}") = "${first.result.length > MAX_TEXT ? first.result.slice(0, MAX_TEXT) + '…' : first.result}"`,
    };
  }

  /** The expected hosts as addresses: literals as given, names looked up (bounded; a failure is reported). */
  private async expectedAddresses(): Promise<Set<string>> {
    const out = new Set<string>();
    await Promise.all(this.o.expect.map(async (h) => {
      if (isIP(h)) return void out.add(h);
      try {
        const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('lookup timed out')), 2000).unref());
        for (const a of await Promise.race([lookup(h, { all: true }), timeout])) out.add(a.address);
      } catch (e) {
        this.o.warn(`patchgate: wpad-guard: --expect ${escapeForTerminal(h)}: ${escapeForTerminal((e as Error).message)}`);
      }
    }));
    return out;
  }
}
