import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRulesFile, parseRules, RulesError } from '../../src/policy/rulesFile.js';
import { buildPolicy } from '../../src/policy/buildPolicy.js';
import { parseDistrustList, pinEntry } from '../../src/policy/trustMaterial.js';
import { REPO, pki } from '../support/fixtures.js';

describe('rules file', () => {
  it('the default rules load, pin Microsoft\'s issuing PCAs and distrust Flame\'s chain', () => {
    const loaded = loadRulesFile(join(REPO, 'rules', 'default.yaml'));
    const p = buildPolicy(loaded);
    expect(p.anchors.map((a) => a.sha256)).toContain('e8e95f0733a55e8bad7be0a1413ee23c51fcea64b3c8fa6a786935fddcc71961');
    expect(p.anchors.map((a) => a.sha256)).toContain('56da8722afd94066ffe1e4595473a4854892b843a0827d53fb7d8f4aeed1e18b');
    expect(p.anchors.map((a) => a.sha256)).toContain('3dadfaf812dd1bbaef45834ccbd188f3cd97139e2ed1aca69c2dd63082142f8f');
    expect(p.distrust.has('2a83e9020591a55fc6ddad3fb102794c52b24e70')).toBe(true);
    expect(p.ekuMode).toBe('strict');
    expect(p.allowSha1).toBe(false);
    expect(loaded.sha256).toMatch(/^[0-9a-f]{64}$/);
  });
  it('a YAML syntax error names its line', () => {
    expect(() => parseRules('version: 1\nanchors: [\n', 'x.yaml')).toThrow(/x\.yaml:\d+: YAML error/);
  });
  it('duplicate keys are refused', () => {
    expect(() => parseRules('version: 1\nanchors: []\nanchors: []\n', 'x.yaml')).toThrow(RulesError);
  });
  it('a missing required key is named', () => {
    expect(() => parseRules('version: 1\n', 'x.yaml')).toThrow(/anchors/);
  });
  it('an anchor whose file and fingerprint disagree is refused', () => {
    expect(() => pinEntry({ file: pki('updateca'), sha256: '00'.repeat(32) }, 'anchors[0]')).toThrow(/does not match/);
  });
  it('--anchor replaces, --distrust adds, --allow-sha1 enables SHA-1 digests', () => {
    const loaded = loadRulesFile(join(REPO, 'rules', 'default.yaml'));
    const dir = mkdtempSync(join(tmpdir(), 'pg-'));
    try {
      writeFileSync(join(dir, 'd.txt'), '# x\nAA:' + 'bb'.repeat(31) + '\n');
      const p = buildPolicy(loaded, { anchorFiles: [pki('updateca')], distrustFile: join(dir, 'd.txt'), allowSha1: true });
      expect(p.anchors).toHaveLength(1);
      expect(p.distrust.has('aa' + 'bb'.repeat(31))).toBe(true);
      expect(p.distrust.size).toBeGreaterThan(1);
      expect(p.fileDigests).toContain('sha1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('access, content and spool keys (issue 13)', () => {
  const base = 'version: 1\nanchors: []\n';
  it('accepts every new key with its values', () => {
    const r = parseRules(base + [
      'clients: [10.0.0.0/8, "fd00::/8", 192.168.1.7]',
      'passThrough: deny',
      'ports: { connect: [443, 8531], http: [80, 8530] }',
      'inspectAddresses: true',
      'audit: { onError: serve }',
      'limits: { maxSpoolBytes: 1073741824, maxSpoolBytesPerClient: 268435456 }',
      'unverifiable:',
      '  - { name: esd, paths: ["*.esd"], action: pass, note: Windows images are not Authenticode-signed }',
      'hosts:',
      '  - { pattern: wsus.example, mode: inspect, ports: [8530] }',
      '  - { pattern: 127.0.0.1, mode: pass, ports: any }',
    ].join('\n') + '\n', 'x.yaml');
    expect(r).toMatchObject({ passThrough: 'deny', inspectAddresses: true, audit: { onError: 'serve' }, ports: { connect: [443, 8531] } });
    expect(r.hosts?.[1]?.ports).toBe('any');
  });
  it('refuses bad values, naming the key and line', () => {
    expect(() => parseRules(base + 'clients: [10.0.0.0/33]\n', 'x.yaml')).toThrow(/x\.yaml:3: clients\.0: "10\.0\.0\.0\/33" is not an address range/);
    expect(() => parseRules(base + 'clients: [example.com]\n', 'x.yaml')).toThrow(/not an address range/);
    expect(() => parseRules(base + 'passThrough: maybe\n', 'x.yaml')).toThrow(/passThrough/);
    expect(() => parseRules(base + 'ports: { connect: [0] }\n', 'x.yaml')).toThrow(/ports\.connect/);
    expect(() => parseRules(base + 'audit: { onError: ignore }\n', 'x.yaml')).toThrow(/audit\.onError/);
    expect(() => parseRules(base + 'unverifiable: [{ name: x, paths: [], action: pass }]\n', 'x.yaml')).toThrow(/unverifiable/);
  });
});

describe('distrust list format', () => {
  it('ignores colons, spaces, case and # comments; accepts SHA-1 thumbprints', () => {
    const text = '# comment\n\nAB CD' + 'ef'.repeat(30) + '  # trailing\n' + 'aa:'.repeat(19) + 'aa\n';
    expect(parseDistrustList(text, 'd')).toEqual(['abcd' + 'ef'.repeat(30), 'aa'.repeat(20)]);
  });
  it('names the line of a bad entry', () => {
    expect(() => parseDistrustList('# ok\nnot-hex\n', 'd.txt')).toThrow(/d\.txt:2/);
  });
});

