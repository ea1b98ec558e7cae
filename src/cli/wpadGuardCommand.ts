import { isIP } from 'node:net';
import type { Registry } from 'prom-client';
import { AuditLog } from '../audit/auditLog.js';
import { loadRulesFile, type HostRule } from '../policy/rulesFile.js';
import { HostRules } from '../policy/hostRules.js';
import { startAdminServer } from '../metrics/adminServer.js';
import { WpadGuard, NAME_PROTOCOLS, escapeForTerminal, probeInterfaces, readResolvConf, updateUrlsFor } from '../wpad/wpadGuard.js';
import { WpadMetrics } from '../wpad/wpadMetrics.js';
import type { NameAnswer, NameProtocol } from '../wpad/nameProbes.js';
import type { WpadAuditRecord } from '../audit/auditRecord.js';
import { UsageError } from './usageError.js';
import { parseHostPort } from './gateService.js';

/** The options `wpad-guard` and `run --wpad-guard` share. */
export interface WpadGuardArgs {
  interface?: string[];
  expect?: string[];
  gate?: string[];
  every?: string;
  window?: string;
  dnsServer?: string[];
  searchDomain?: string[];
  protocol?: string[];
  pacPort?: number;
}

/** One answer heard, for a stderr line (the addresses come from our own parsers: dotted or colon-hex). */
export const describeAnswer = (a: NameAnswer) =>
  `${a.protocol}${a.interface ? ` on ${a.interface}` : ''}: ${a.responder} answered ${escapeForTerminal(a.asked)} with ${a.addresses.map((x) => escapeForTerminal(x)).join(', ')}`;

/** "60s", "5m", "1h", "500ms", or a number of seconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag}: "${text}" is not a duration (60s, 5m, 500ms)`);
  const n = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag}: "${text}" must be more than 0`);
  return n;
}

/** The guard as configured by the flags (usage errors before anything starts). */
export function buildWpadGuard(args: WpadGuardArgs, o: {
  record: (r: WpadAuditRecord) => void; onAnswer?: (a: NameAnswer) => void; registry?: Registry; updatePatterns: string[]; defaultGates?: (ifaceAddresses: string[]) => { host: string; port: number }[]; defaultExpect?: (ifaceAddresses: string[]) => string[];
}): { guard: WpadGuard; metrics: WpadMetrics; everyMs: number; describe: string } {
  const everyMs = parseDuration(args.every ?? '60s', '--every');
  const windowMs = parseDuration(args.window ?? '2s', '--window');
  if (windowMs > 30_000) throw new UsageError('--window: at most 30s');
  if (everyMs < windowMs) throw new UsageError('--every must be at least --window');
  const protocols = (args.protocol?.length ? args.protocol : NAME_PROTOCOLS) as NameProtocol[];
  for (const p of protocols) if (!NAME_PROTOCOLS.includes(p)) throw new UsageError(`--protocol: "${p}" is not one of ${NAME_PROTOCOLS.join(', ')}`);
  const resolv = readResolvConf();
  for (const s of args.dnsServer ?? []) if (!isIP(s)) throw new UsageError(`--dns-server: "${s}" is not an IP address`);
  const dns = { servers: args.dnsServer?.length ? args.dnsServer : resolv.servers, searchDomains: args.searchDomain?.length ? args.searchDomain : resolv.searchDomains };
  const gates = (args.gate ?? []).map((g) => parseHostPort(g, '--gate'));
  let interfaces;
  try { interfaces = probeInterfaces(args.interface); } catch (e) { throw new UsageError(`--interface: ${(e as Error).message}`); }
  if (!interfaces.length) throw new UsageError('no interface with an IPv4 address to probe (name one with --interface)');
  const expect = args.expect?.length ? args.expect : o.defaultExpect?.(interfaces.map((i) => i.address)) ?? [];
  const metrics = new WpadMetrics(o.registry);
  const updateUrls = updateUrlsFor(o.updatePatterns);
  const guardGates = gates.length ? gates : o.defaultGates?.(interfaces.map((i) => i.address)) ?? [];
  const guard = new WpadGuard({
    interfaces, dns, expect, gates: guardGates, updateUrls, record: o.record, metrics, windowMs, protocols,
    pacPort: args.pacPort, warn: (l) => process.stderr.write(l + '\n'), onAnswer: o.onAnswer,
  });
  const describe = `interfaces ${interfaces.map((i) => `${i.name} (${i.address})`).join(', ')}; ${protocols.join('/')}; ` +
    `DNS ${dns.searchDomains.length && dns.servers.length ? `${dns.servers.join(',')} for ${dns.searchDomains.join(',')}` : 'skipped (no server or search domain)'}; ` +
    `expected wpad host(s) ${expect.join(', ') || '(none: every wpad answer is a finding)'}; ` +
    `gate(s) a PAC must name: ${guardGates.length ? guardGates.map((g) => `${g.host}:${g.port}`).join(', ') : 'any port of an expected host'}; ${updateUrls.length} update URL(s) checked in PAC files`;
  return { guard, metrics, everyMs, describe };
}

/**
 * `patchgate wpad-guard`: probes until SIGINT/SIGTERM, or one round with --once (exit 1 when the
 * round found anything, 0 when it did not).
 */
export async function runWpadGuard(args: WpadGuardArgs & { rules: string; updateHost?: string[]; audit: string; admin: string; once?: boolean }): Promise<number> {
  const loaded = loadRulesFile(args.rules);
  const extra: HostRule[] = (args.updateHost ?? []).map((pattern) => ({ pattern, mode: 'inspect', source: '--update-host' }));
  const hostRules = new HostRules([...extra, ...(loaded.rules.hosts ?? [])]);
  const admin = args.admin === 'off' ? undefined : parseHostPort(args.admin, '--admin');
  let audit: AuditLog | undefined;
  // Usage errors first; records are written only by rounds, which start after the log is open.
  // Every answer: on stderr with --once (the operator asked for one look), else a debug line (PATCHGATE_DEBUG).
  const onAnswer = (a: NameAnswer) => {
    if (args.once) process.stderr.write(`patchgate: wpad-guard: answer: ${describeAnswer(a)}\n`);
    else audit?.debug({ wpadAnswer: a }, 'wpad-guard answer');
  };
  const { guard, metrics, everyMs, describe } = buildWpadGuard(args, { record: (r) => audit!.record(r), onAnswer, updatePatterns: hostRules.patterns('inspect') });
  audit = new AuditLog(args.audit);
  const say = (s: string) => process.stderr.write(s + '\n');
  say(`patchgate: wpad-guard: ${describe}; audit to ${args.audit === '-' ? 'stdout' : args.audit}`);
  if (args.once) {
    const found = await guard.round();
    await audit.close();
    say(`patchgate: wpad-guard: round done, ${found.length} finding(s)`);
    return found.length ? 1 : 0;
  }
  const adminServer = admin ? await startAdminServer({ host: admin.host, port: admin.port, metrics, health: () => ({ status: 'ok', audit: audit!.head }) }) : undefined;
  if (adminServer) say(`patchgate: wpad-guard: metrics http://${admin!.host}:${adminServer.port}/metrics`);
  guard.start(everyMs);
  return new Promise<number>((resolve) => {
    const stop = async (signal: string) => {
      say(`patchgate: wpad-guard: ${signal}: stopping`);
      adminServer?.close();
      await guard.stop();
      await audit!.close();
      resolve(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });
}
