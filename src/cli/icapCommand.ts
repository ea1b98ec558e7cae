import { anchorRows, trustWarnings } from '../policy/trustReport.js';
import { tmpdir } from 'node:os';
import { readFileSync } from 'node:fs';
import { IcapService, ICAP_SERVICE_PATH } from '../icap/icapService.js';
import { squidConfigSnippet } from '../icap/squidConfig.js';
import { PACKAGE_ROOT } from './defaultPaths.js';
import { loadGateConfig, openAudit, parseHostPort, serveUntilSignal, sizeHeapForTransfers, type GateServiceArgs } from './gateService.js';
import { UsageError } from './usageError.js';
import { AllowedPeers, DEFAULT_ALLOWED_PEERS } from '../icap/allowedPeers.js';

export interface IcapArgs extends GateServiceArgs {
  listen: string;
  spoolDir?: string;
  maxConnections?: number;
  previewBytes?: number;
  printSquidConfig?: boolean;
  /** CIDR blocks of the ICAP clients allowed to connect (default DEFAULT_ALLOWED_PEERS: loopback). */
  allowPeer?: string[];
}

function packageVersion(): string {
  try { return (JSON.parse(readFileSync(`${PACKAGE_ROOT}package.json`, 'utf8')) as { version?: string }).version ?? '0'; } catch { return '0'; }
}

/** `patchgate icap`: the ICAP RESPMOD service; serves until SIGINT/SIGTERM. Resolves to the exit code. */
export async function runIcap(args: IcapArgs): Promise<number> {
  const listen = parseHostPort(args.listen, '--listen');
  if (args.maxConnections !== undefined && !(Number.isInteger(args.maxConnections) && args.maxConnections > 0)) throw new UsageError('--max-connections must be a positive integer');
  if (args.previewBytes !== undefined && !(Number.isInteger(args.previewBytes) && (args.previewBytes === 0 || (args.previewBytes >= 64 && args.previewBytes <= 65536)))) {
    throw new UsageError('--preview-bytes must be 0 (no previews) or an integer from 64 (enough to sniff the format) to 65536');
  }
  let allowedPeers: AllowedPeers;
  try {
    allowedPeers = new AllowedPeers(args.allowPeer?.length ? args.allowPeer : DEFAULT_ALLOWED_PEERS);
  } catch (e) {
    throw new UsageError(`--allow-peer: ${(e as Error).message}`);
  }
  const cfg = loadGateConfig(args);
  if (args.printSquidConfig) {
    const host = listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
    const uri = `icap://${host.includes(':') ? `[${host}]` : host}:${listen.port}${ICAP_SERVICE_PATH}`;
    process.stdout.write(squidConfigSnippet({ services: [uri], updateHosts: cfg.hostRules.patterns('inspect'), tailHosts: cfg.hostRules.tailPatterns() }));
    return 0;
  }
  sizeHeapForTransfers();
  const { audit, metrics } = openAudit(args, cfg.loaded.sha256);
  const service = new IcapService({
    listen, policy: cfg.policy, trustFor: (h, p) => cfg.channels.trustFor(h, p), hostRules: cfg.hostRules, rulesSha256: cfg.loaded.sha256, audit, limits: cfg.limits,
    auditOnError: cfg.auditOnError, nonPayload: cfg.nonPayload, unsignedDeltas: cfg.unsignedDeltas, unverifiable: cfg.unverifiable, spoolBase: args.spoolDir ?? tmpdir(),
    maxConnections: args.maxConnections, previewBytes: args.previewBytes, observer: metrics, version: packageVersion(), allowedPeers,
  });
  metrics.watch(service);
  await service.start();
  const { host, port } = service.address;
  const say = (s: string) => process.stderr.write(s + '\n');
  say(`patchgate: ICAP RESPMOD service on icap://${host.includes(':') ? `[${host}]` : host}:${port}${ICAP_SERVICE_PATH} (ISTag ${service.istag}; rules ${cfg.loaded.path}, sha256 ${cfg.loaded.sha256.slice(0, 16)}…)`);
  say(`patchgate: ICAP clients allowed from ${allowedPeers.blocks.join(', ')} (--allow-peer); others are closed unanswered`);
  for (const w of trustWarnings(anchorRows(cfg.loaded, cfg.policy, new Date(), cfg.channels))) say(`patchgate: warning: ${w}`);
  say(`patchgate: ${cfg.policy.anchors.length} approved anchor(s), ${cfg.hostRules.patterns('inspect').length} inspected host pattern(s); audit to ${args.audit === '-' ? 'stdout' : args.audit}`);
  return serveUntilSignal({ args, audit, metrics, gauges: service, rulesSha256: cfg.loaded.sha256, stop: () => service.stop() });
}
