import type http from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { loadRulesFile, type HoldMode, type HostRule, type LoadedRules, type UnverifiableRule } from '../policy/rulesFile.js';
import { buildPolicy } from '../policy/buildPolicy.js';
import { HostRules } from '../policy/hostRules.js';
import { buildTrustChannels, type TrustChannels } from '../policy/trustChannels.js';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import { AuditLog } from '../audit/auditLog.js';
import { GateMetrics } from '../metrics/gateMetrics.js';
import { startAdminServer } from '../metrics/adminServer.js';
import type { GateGauges } from '../metrics/gateMetrics.js';
import { UsageError } from './usageError.js';
import { DEFAULT_CLIENTS, DEFAULT_CONNECT_PORTS, DEFAULT_HTTP_PORTS, cidrList, type AccessRules } from '../policy/accessPolicy.js';

/** The trust and host options `run` and `icap` share. */
export interface GateServiceArgs {
  rules: string;
  admin: string;
  updateHost?: string[];
  /** Hold mode of the --update-host hosts (rules hosts[].hold). */
  hold?: HoldMode;
  anchor?: string[];
  tsaAnchor?: string[];
  distrust?: string;
  allowSha1?: boolean;
  ekuMode?: 'strict' | 'nested';
  signatureMode?: 'primary' | 'best' | 'all';
  audit: string;
  /** Client address ranges added to the rules' `clients` (run only). */
  allowClient?: string[];
}

export interface GateServiceConfig {
  loaded: LoadedRules;
  policy: ApprovedCaPolicy;
  /** Per-channel trust: the proxy and the ICAP service ask it for each request's policy. */
  channels: TrustChannels;
  hostRules: HostRules;
  limits: { maxPayloadBytes: number; idleTimeoutMs: number; totalTimeoutMs: number; memoryHoldBytes: number; cacheTtlMs: number; maxSpoolBytes?: number; maxSpoolBytesPerClient?: number; tunnelIdleTimeoutMs?: number; requestHeadTimeoutMs?: number };
  nonPayload: 'pass' | 'block';
  unsignedDeltas: 'pass' | 'block';
  unverifiable: UnverifiableRule[];
  access: AccessRules;
  auditOnError: 'block' | 'serve';
}

export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${flag}: "${text}" is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** Rules file, command-line trust material and host patterns, limits with their defaults. */
export function loadGateConfig(args: GateServiceArgs): GateServiceConfig {
  const loaded = loadRulesFile(args.rules);
  const policy = buildPolicy(loaded, { anchorFiles: args.anchor, tsaAnchorFiles: args.tsaAnchor, distrustFile: args.distrust, allowSha1: args.allowSha1, ekuMode: args.ekuMode, signatureMode: args.signatureMode });
  // A host named on the command line is the operator's explicit destination: any port (the lab, tests, a WSUS server).
  const extra: HostRule[] = (args.updateHost ?? []).map((pattern) => ({ pattern, mode: 'inspect', ports: 'any', source: '--update-host', ...(args.hold ? { hold: args.hold } : {}) }));
  const r = loaded.rules;
  const access: AccessRules = {
    clients: [...(r.clients ?? DEFAULT_CLIENTS), ...(args.allowClient ?? [])],
    passThrough: r.passThrough ?? 'forward',
    connectPorts: r.ports?.connect ?? DEFAULT_CONNECT_PORTS,
    httpPorts: r.ports?.http ?? DEFAULT_HTTP_PORTS,
    inspectAddresses: r.inspectAddresses ?? false,
  };
  try { cidrList(access.clients); } catch (e) { throw new UsageError(`--allow-client: ${(e as Error).message}`); }
  const hostRules = new HostRules([...extra, ...(loaded.rules.hosts ?? [])]);
  const l = loaded.rules.limits ?? {};
  return {
    loaded, policy, hostRules, channels: buildTrustChannels(loaded, policy),
    limits: {
      maxPayloadBytes: l.maxPayloadBytes ?? 8 * 1024 ** 3,
      idleTimeoutMs: l.upstreamIdleTimeoutMs ?? 30_000,
      totalTimeoutMs: l.totalTimeoutMs ?? 30 * 60_000,
      memoryHoldBytes: l.memoryHoldBytes ?? 2 * 1024 * 1024,
      cacheTtlMs: l.cacheTtlMs ?? 60_000,
      maxSpoolBytes: l.maxSpoolBytes,
      maxSpoolBytesPerClient: l.maxSpoolBytesPerClient,
      tunnelIdleTimeoutMs: l.tunnelIdleTimeoutMs,
      requestHeadTimeoutMs: l.requestHeadTimeoutMs,
    },
    nonPayload: loaded.rules.nonPayload ?? 'pass',
    unsignedDeltas: loaded.rules.unsignedDeltas ?? 'block',
    unverifiable: loaded.rules.unverifiable ?? [],
    access,
    auditOnError: r.audit?.onError ?? 'block',
  };
}

/** The audit trail and the metrics fed from it. */
export function openAudit(args: GateServiceArgs, rulesSha256: string): { audit: AuditLog; metrics: GateMetrics } {
  const audit = new AuditLog(args.audit);
  const metrics = new GateMetrics({ rulesSha256, defaultMetrics: true, log: (line) => process.stderr.write(line + '\n') });
  audit.subscribe((r) => metrics.observeRecord(r));
  metrics.watchAudit(audit);
  return { audit, metrics };
}

/**
 * The body of /healthz. The audit's state is part of it: a gate whose records do not reach the file
 * is not healthy (`audit-failing`, answered 503), whatever audit.onError says.
 */
export function gateHealth(
  audit: AuditLog, gauges: GateGauges, rulesSha256: string,
  more: { auditReopenFailed?: string; spoolDegraded?: boolean; faults?: unknown } = {},
): Record<string, unknown> {
  const state = audit.state;
  // Worst first: records that cannot be written stop inspected payloads (audit.onError: block).
  const status = !state.writable ? 'audit-failing' : more.auditReopenFailed || more.spoolDegraded ? 'degraded' : 'ok';
  return {
    status, inFlight: gauges.inFlight, rulesSha256, audit: { ...audit.head, ...state },
    auditReopen: more.auditReopenFailed ? { ok: false, error: more.auditReopenFailed } : { ok: true },
    ...(more.faults !== undefined ? { faults: more.faults } : {}),
  };
}

const say = (s: string) => process.stderr.write(s + '\n');
const shown = (host: string) => (host.includes(':') ? `[${host}]` : host);

/**
 * Serves until SIGINT/SIGTERM: the admin address (/healthz, /metrics), the audit head printed at
 * start, on SIGHUP (which reopens the audit file after logrotate) and at stop. Resolves to the exit code.
 */
export async function serveUntilSignal(o: {
  args: GateServiceArgs; audit: AuditLog; metrics: GateMetrics; gauges: GateGauges; rulesSha256: string; stop: () => Promise<void>;
  /** Told the admin server's address once it listens. */
  onAdmin?: (address: { host: string; port: number }) => void;
}): Promise<number> {
  const admin = o.args.admin === 'off' ? undefined : parseHostPort(o.args.admin, '--admin');
  /** The last SIGHUP could not open the audit file: records go on to the file open before. */
  let auditReopenFailed: string | undefined;
  let adminServer: (http.Server & { port: number }) | undefined;
  if (admin) {
    adminServer = await startAdminServer({
      host: admin.host, port: admin.port, metrics: o.metrics, onFault: (e) => o.metrics.fault('admin', e),
      health: () => gateHealth(o.audit, o.gauges, o.rulesSha256, { auditReopenFailed, spoolDegraded: o.metrics.spoolDegraded, faults: o.metrics.faults }),
    });
    o.onAdmin?.({ host: admin.host, port: adminServer.port });
    say(`patchgate: health http://${shown(admin.host)}:${adminServer.port}/healthz, metrics http://${shown(admin.host)}:${adminServer.port}/metrics`);
  }
  // The chain's head goes to stderr (the journal under systemd): a copy outside the log that `audit verify --head` can check.
  const sayHead = (when: string) => {
    const h = o.audit.head;
    say(`patchgate: audit head ${h.hash} (${when}; ${h.written} records written by this process${h.resumedFrom ? `, chain resumed from ${h.resumedFrom}` : ''})`);
  };
  if (o.args.audit !== '-') sayHead('start');
  const onHup = () => {
    if (o.args.audit === '-') return;
    o.audit.flush();
    sayHead('SIGHUP: reopening the audit log; the new file links to this');
    if (o.audit.reopen()) {
      auditReopenFailed = undefined;
    } else {
      const err = o.audit.reopenError ?? new Error('reopen failed');
      auditReopenFailed = err.message;
      say(`patchgate: SIGHUP: cannot open the audit log ${o.args.audit} (${auditReopenFailed}): records go on to the file that was open (logrotate's ${o.args.audit}.1, if it renamed it); fix the path and send SIGHUP again`);
      o.metrics.fault('audit', err);
    }
  };
  process.on('SIGHUP', onHup);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      say(`patchgate: ${signal}: finishing in-flight transfers`);
      adminServer?.close();
      await o.stop();
      await o.audit.close();
      process.off('SIGHUP', onHup);
      if (o.args.audit !== '-') sayHead('stop');
      resolve(0);
      // Pooled keep-alive sockets must not keep a stopped service alive.
      setTimeout(() => process.exit(0), 200);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });
}

/**
 * Every 64 KiB socket read of a payload moving through the gate (or the ICAP service) counts as external memory against
 * V8's old-generation limit until a scavenge frees it; with the limit V8 sizes from the gate's small
 * live heap (about 18 MiB, so 40-50 MiB), a 1 GiB transfer set off about 70 full mark-compacts of
 * the whole heap, about 2 s of CPU per GiB (docs/performance.md, "Tail hold at 1 GiB"). A fixed
 * growing factor of 4, the top of V8's own range, leaves room for the reads. V8 reads this flag
 * each time it sizes the heap, so it takes effect when set here (NODE_OPTIONS does not accept it).
 */
export function sizeHeapForTransfers(): void {
  setFlagsFromString('--heap-growing-percent=300');
}
