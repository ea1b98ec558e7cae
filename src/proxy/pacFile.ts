import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HostRules } from '../policy/hostRules.js';
import { refuse } from './upstreamFetch.js';

/**
 * The PAC file served at /wpad.dat and /proxy.pac: update hosts through patchgate, everything else
 * DIRECT (or to the upstream proxy when one is configured, so clients keep their usual egress).
 */
export function pacFile(opts: { proxyHostPort: string; gatedPatterns: string[]; upstreamHostPort?: string }): string {
  const tests = opts.gatedPatterns.map((p) => {
    const pat = p.toLowerCase();
    return pat.includes('*') ? `shExpMatch(host, ${JSON.stringify(pat)})` : `host == ${JSON.stringify(pat)}`;
  });
  const other = opts.upstreamHostPort ? `PROXY ${opts.upstreamHostPort}` : 'DIRECT';
  return [
    '// patchgate: update hosts go through the gate; everything else does not.',
    'function FindProxyForURL(url, host) {',
    '  host = host.toLowerCase();',
    `  if (${tests.length ? tests.join(' ||\n      ') : 'false'}) return ${JSON.stringify(`PROXY ${opts.proxyHostPort}`)};`,
    `  return ${JSON.stringify(other)};`,
    '}',
    '',
  ].join('\n');
}

/**
 * The gate's answer to a request for itself (origin-form, or absolute-form naming its address):
 * the PAC file at /wpad.dat and /proxy.pac, 404 for anything else. Never proxied (no loop).
 */
export function answerGateRequest(req: IncomingMessage, res: ServerResponse, target: string, o: { listen: { host: string; port: number }; hostRules: HostRules; upstreamProxy?: URL }): void {
  req.resume();
  const path = target.split('?')[0];
  if (path !== '/wpad.dat' && path !== '/proxy.pac') return refuse(res, 404, 'patchgate serves /wpad.dat and /proxy.pac here');
  // The address the client used to reach us, with our port when its Host header has none (Host: wpad).
  const h = req.headers.host;
  const hostHeader = !h ? `${o.listen.host}:${o.listen.port}` : /:\d+$/.test(h) ? h : `${h}:${o.listen.port}`;
  const up = o.upstreamProxy;
  const body = pacFile({
    proxyHostPort: hostHeader,
    gatedPatterns: [...o.hostRules.patterns('inspect'), ...o.hostRules.patterns('pinned')],
    upstreamHostPort: up ? `${up.hostname}:${Number(up.port) || 80}` : undefined,
  });
  res.writeHead(200, { 'content-type': 'application/x-ns-proxy-autoconfig', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=300' });
  res.end(body);
}
