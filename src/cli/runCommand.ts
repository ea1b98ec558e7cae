import { anchorRows, trustWarnings } from '../policy/trustReport.js';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { format } from 'node:util';
import { UpdateGate } from '../proxy/updateGate.js';
import { UsageError } from './usageError.js';
import { loadGateConfig, openAudit, parseHostPort, serveUntilSignal, sizeHeapForTransfers, type GateServiceArgs } from './gateService.js';
import type { WpadGuardArgs } from './wpadGuardCommand.js';

export interface RunArgs extends GateServiceArgs {
  listen: string;
  upstreamProxy?: string;
  caDir?: string;
  spoolDir?: string;
  upstreamCa?: string;
  /** `--wpad-guard`: run the WPAD guard beside the gate, with these options (`--wpad-*`). */
  wpadGuard?: WpadGuardArgs;
}

export const DEFAULT_CA_DIR = join(homedir(), '.patchgate', 'ca');

/**
 * A dependency that prints on its own (console.log/debug/info) would corrupt JSON-lines audit
 * output on stdout. Route it to stderr, and drop debug chatter unless PATCHGATE_DEBUG is set.
 * console.error stays on stderr: since the proxy library went, nothing prints errors in bulk, and
 * an error someone prints is a real reason an operator must see.
 */
function keepStdoutForAudit(): void {
  const toStderr = (...a: unknown[]) => process.stderr.write(format(...a) + '\n');
  console.log = toStderr;
  console.info = process.env.PATCHGATE_DEBUG ? toStderr : () => {};
  console.debug = process.env.PATCHGATE_DEBUG ? toStderr : () => {};
}


/** `patchgate run`: starts the gate and serves until SIGINT/SIGTERM. Resolves to the exit code. */
export async function runGate(args: RunArgs): Promise<number> {
  const listen = parseHostPort(args.listen, '--listen');
  if (args.admin !== 'off') parseHostPort(args.admin, '--admin'); // a usage error before anything starts
  let upstream: URL | undefined;
  if (args.upstreamProxy) {
    try { upstream = new URL(args.upstreamProxy); } catch { throw new UsageError(`--upstream-proxy: "${args.upstreamProxy}" is not a URL`); }
    if (upstream.protocol !== 'http:') throw new UsageError('--upstream-proxy must be an http:// proxy URL');
  }
  const cfg = loadGateConfig(args);
  // The guard's usage errors come before anything starts; it is built for real once the gate listens.
  // Loaded only when asked for: its PAC engine is about 20 MiB of RSS.
  const buildWpadGuard = args.wpadGuard ? (await import('./wpadGuardCommand.js')).buildWpadGuard : undefined;
  if (args.wpadGuard) buildWpadGuard!(args.wpadGuard, { record: () => {}, updatePatterns: [] });
  keepStdoutForAudit();
  sizeHeapForTransfers();
  const { audit, metrics } = openAudit(args, cfg.loaded.sha256);
  const ownEndpoints: { host: string; port: number }[] = [];
  const gate = new UpdateGate({
    listen, policy: cfg.policy, trustFor: (h, p) => cfg.channels.trustFor(h, p), hostRules: cfg.hostRules, rulesSha256: cfg.loaded.sha256, audit, caDir: args.caDir ?? DEFAULT_CA_DIR, upstreamProxy: upstream,
    limits: cfg.limits, nonPayload: cfg.nonPayload, unsignedDeltas: cfg.unsignedDeltas, unverifiable: cfg.unverifiable, spoolBase: args.spoolDir ?? tmpdir(),
    upstreamCaFile: args.upstreamCa, observer: metrics, access: cfg.access, auditOnError: cfg.auditOnError,
    ownEndpoints, // the admin address, once it listens (its port may be chosen by the OS)
  });
  metrics.watch(gate);
  await gate.start();
  const { host, port } = gate.address;
  const shown = host.includes(':') ? `[${host}]` : host;
  const say = (s: string) => process.stderr.write(s + '\n');
  say(`patchgate: gating update downloads on http://${shown}:${port} (rules ${cfg.loaded.path}, sha256 ${cfg.loaded.sha256.slice(0, 16)}…)`);
  say(`patchgate: clients must trust the interception CA ${gate.caCertificatePath}`);
  say(`patchgate: PAC file http://${shown}:${port}/wpad.dat`);
  for (const w of trustWarnings(anchorRows(cfg.loaded, cfg.policy, new Date(), cfg.channels))) say(`patchgate: warning: ${w}`);
  say(`patchgate: ${cfg.policy.anchors.length} approved anchor(s), ${cfg.hostRules.patterns('inspect').length} inspected host pattern(s); audit to ${args.audit === '-' ? 'stdout' : args.audit}`);
  let stopGuard = async () => {};
  if (args.wpadGuard) {
    // Patchgate serves the PAC itself: by default this host answers wpad (its interfaces' addresses)
    // and a PAC must name the gate as it listens (each interface's address when it listens on all).
    const wildcard = host === '0.0.0.0' || host === '::';
    const wg = buildWpadGuard!(args.wpadGuard, {
      record: (r) => audit.record(r), onAnswer: (a) => audit.debug({ wpadAnswer: a }, 'wpad-guard answer'), registry: metrics.registry, updatePatterns: cfg.hostRules.patterns('inspect'),
      defaultExpect: (addresses) => addresses,
      defaultGates: (addresses) => (wildcard ? addresses : [host]).map((h) => ({ host: h, port })),
    });
    say(`patchgate: wpad-guard: ${wg.describe}`);
    wg.guard.start(wg.everyMs);
    stopGuard = () => wg.guard.stop();
  }
  return serveUntilSignal({ args, audit, metrics, gauges: gate, rulesSha256: cfg.loaded.sha256, stop: async () => { await Promise.all([gate.stop(), stopGuard()]); }, onAdmin: (a) => ownEndpoints.push(a) });
}
