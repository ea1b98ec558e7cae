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
