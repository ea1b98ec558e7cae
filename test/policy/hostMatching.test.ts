import { describe, expect, it } from 'vitest';
import { HostRules, hostMatches, isSafeHostName } from '../../src/policy/hostRules.js';
import { loadOrCreateInterceptionCa } from '../../src/proxy/interceptionCa.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('one host matcher for the rules and the interception CA', () => {
  it('an IP literal matches whatever its spelling; wildcards match strictly below their base', () => {
    expect(hostMatches('0:0:0:0:0:0:0:1', '::1')).toBe(true);
    expect(hostMatches('[::1]', '0:0::1')).toBe(true);
    expect(hostMatches('::1', '::2')).toBe(false);
    expect(hostMatches('*.Example.COM.', 'a.example.com')).toBe(true);
    expect(hostMatches('*.example.com', 'example.com')).toBe(false);
    expect(hostMatches('*.example.com', 'badexample.com')).toBe(false);
    expect(hostMatches('example.com', 'EXAMPLE.com.')).toBe(true);
  });

  it('a rule written in a long IPv6 spelling still applies to the canonical target (it was passed before)', () => {
    const rules = new HostRules([{ pattern: '0:0:0:0:0:0:0:1', mode: 'inspect' }]);
    expect(rules.decide('::1', '/x.exe').mode).toBe('inspect');
  });

  it('the CA covers exactly what the rules inspect, with the same matcher', () => {
    const dir = mkdtempSync(join(tmpdir(), 'patchgate-hostmatch-'));
    try {
      const patterns = ['*.windowsupdate.com', '0:0:0:0:0:0:0:1', 'download.example.org'];
      const ca = loadOrCreateInterceptionCa(join(dir, 'ca'), { permittedHosts: patterns });
      const rules = new HostRules(patterns.map((pattern) => ({ pattern, mode: 'inspect' as const })));
      for (const host of ['a.windowsupdate.com', 'windowsupdate.com', '::1', 'download.example.org', 'example.org', 'evil.com']) {
        expect(ca.covers(host), host).toBe(rules.decideConnect(host).mode === 'inspect' && isSafeHostName(host));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
