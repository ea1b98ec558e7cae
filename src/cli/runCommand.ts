import type http from 'node:http';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { format } from 'node:util';
import { loadRulesFile } from '../policy/rulesFile.js';
import { buildPolicy } from '../policy/buildPolicy.js';
import { HostRules } from '../policy/hostRules.js';
import type { HostRule } from '../policy/rulesFile.js';
import { AuditLog } from '../audit/auditLog.js';
import { UpdateGate } from '../proxy/updateGate.js';
import { GateMetrics } from '../metrics/gateMetrics.js';
import { startAdminServer } from '../metrics/adminServer.js';
import { UsageError } from './usageError.js';

export interface RunArgs {
  rules: string;
  listen: string;
  admin: string;
  upstreamProxy?: string;
  updateHost?: string[];
  anchor?: string[];
  tsaAnchor?: string[];
  distrust?: string;
  allowSha1?: boolean;
  ekuMode?: 'strict' | 'nested';
  signatureMode?: 'primary' | 'best' | 'all';
  audit: string;
  caDir?: string;
  spoolDir?: string;
  upstreamCa?: string;
}

export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${flag}: "${text}" is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export const DEFAULT_CA_DIR = join(homedir(), '.patchgate', 'ca');

/**
 * http-mitm-proxy prints on its own (console.log/debug/info): that would corrupt JSON-lines audit
 * output on stdout. Route it to stderr, and drop debug chatter unless PATCHGATE_DEBUG is set.
 */
function quietLibraryConsole(): void {
  const toStderr = (...a: unknown[]) => process.stderr.write(format(...a) + '\n');
  console.log = toStderr;
  console.info = process.env.PATCHGATE_DEBUG ? toStderr : () => {};
  console.debug = process.env.PATCHGATE_DEBUG ? toStderr : () => {};
  console.error = process.env.PATCHGATE_DEBUG ? toStderr : () => {};
}

/** `patchgate run`: starts the gate and serves until SIGINT/SIGTERM. Resolves to the exit code. */
export async function runGate(args: RunArgs): Promise<number> {
  const listen = parseHostPort(args.listen, '--listen');
  const admin = args.admin === 'off' ? undefined : parseHostPort(args.admin, '--admin');
  let upstream: URL | undefined;
  if (args.upstreamProxy) {
    try { upstream = new URL(args.upstreamProxy); } catch { throw new UsageError(`--upstream-proxy: "${args.upstreamProxy}" is not a URL`); }
    if (upstream.protocol !== 'http:') throw new UsageError('--upstream-proxy must be an http:// proxy URL');
  }
  const loaded = loadRulesFile(args.rules);
  const policy = buildPolicy(loaded, { anchorFiles: args.anchor, tsaAnchorFiles: args.tsaAnchor, distrustFile: args.distrust, allowSha1: args.allowSha1, ekuMode: args.ekuMode, signatureMode: args.signatureMode });
  const extra: HostRule[] = (args.updateHost ?? []).map((pattern) => ({ pattern, mode: 'inspect', source: '--update-host' }));
  const hostRules = new HostRules([...extra, ...(loaded.rules.hosts ?? [])]);
  const l = loaded.rules.limits ?? {};
  quietLibraryConsole();
  const audit = new AuditLog(args.audit);
  const metrics = new GateMetrics({ rulesSha256: loaded.sha256, defaultMetrics: true });
  audit.subscribe((r) => metrics.observeRecord(r));
  const gate = new UpdateGate({
    listen, policy, hostRules, rulesSha256: loaded.sha256, audit, caDir: args.caDir ?? DEFAULT_CA_DIR, upstreamProxy: upstream,
    limits: {
      maxPayloadBytes: l.maxPayloadBytes ?? 8 * 1024 ** 3,
      idleTimeoutMs: l.upstreamIdleTimeoutMs ?? 30_000,
      totalTimeoutMs: l.totalTimeoutMs ?? 30 * 60_000,
      memoryHoldBytes: l.memoryHoldBytes ?? 2 * 1024 * 1024,
      cacheTtlMs: l.cacheTtlMs ?? 60_000,
    },
    nonPayload: loaded.rules.nonPayload ?? 'pass',
    unsignedDeltas: loaded.rules.unsignedDeltas ?? 'block',
    spoolBase: args.spoolDir ?? tmpdir(),
    upstreamCaFile: args.upstreamCa,
    observer: metrics,
  });
  metrics.watch(gate);
  await gate.start();
  let adminServer: (http.Server & { port: number }) | undefined;
  if (admin) {
    adminServer = await startAdminServer({
      host: admin.host, port: admin.port, metrics,
      health: () => ({ status: 'ok', inFlight: gate.inFlight, rulesSha256: loaded.sha256, audit: audit.head }),
    });
  }
  const { host, port } = gate.address;
  const shown = host.includes(':') ? `[${host}]` : host;
  const say = (s: string) => process.stderr.write(s + '\n');
  say(`patchgate: gating update downloads on http://${shown}:${port} (rules ${loaded.path}, sha256 ${loaded.sha256.slice(0, 16)}…)`);
  say(`patchgate: clients must trust the interception CA ${gate.caCertificatePath}`);
  say(`patchgate: PAC file http://${shown}:${port}/wpad.dat`);
  if (adminServer) {
    const shownAdmin = admin!.host.includes(':') ? `[${admin!.host}]` : admin!.host;
    say(`patchgate: health http://${shownAdmin}:${adminServer.port}/healthz, metrics http://${shownAdmin}:${adminServer.port}/metrics`);
  }
  // The chain's head goes to stderr (the journal under systemd) at start, on SIGHUP and at stop:
  // a copy outside the log that `audit verify --head` can check the log against.
  const sayHead = (when: string) => {
    const h = audit.head;
    say(`patchgate: audit head ${h.hash} (${when}; ${h.written} records written by this process${h.resumedFrom ? `, chain resumed from ${h.resumedFrom}` : ''})`);
  };
  if (args.audit !== '-') sayHead('start');
  say(`patchgate: ${policy.anchors.length} approved anchor(s), ${hostRules.patterns('inspect').length} inspected host pattern(s); audit to ${args.audit === '-' ? 'stdout' : args.audit}`);

  // SIGHUP (logrotate's postrotate, systemctl reload): reopen the audit file by its name.
  const onHup = () => {
    if (args.audit === '-') return;
    audit.flush();
    sayHead('SIGHUP: reopening the audit log; the new file links to this');
    audit.reopen();
  };
  process.on('SIGHUP', onHup);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      say(`patchgate: ${signal}: finishing in-flight transfers`);
      adminServer?.close();
      await gate.stop();
      await audit.close();
      process.off('SIGHUP', onHup);
      if (args.audit !== '-') sayHead('stop');
      resolve(0);
      // Pooled keep-alive sockets to upstreams must not keep a stopped gate alive.
      setTimeout(() => process.exit(0), 200);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });
}
