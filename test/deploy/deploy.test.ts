/**
 * deploy/: the systemd unit (hardening, a dedicated user, paths that agree with its writable
 * directories, flags `patchgate run` accepts) and the logrotate snippet, run for real by Debian's
 * logrotate against a running gate: two rotations, and the files verify as one chain.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';
import { proxyRequest, waitFor } from '../support/gateHarness.js';
import { BIN, auditHeads, startRunProcess, useRunTestBed } from '../support/runProcess.js';
import { verifyAuditFiles } from '../../src/audit/verifyAudit.js';

const unitText = readFileSync(join(REPO, 'deploy', 'patchgate.service'), 'utf8');
const logrotateText = readFileSync(join(REPO, 'deploy', 'patchgate.logrotate'), 'utf8');

/** The unit's [Service] settings: key -> values (repeatable keys keep every value), continuations joined. */
function serviceSettings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  const joined = text.replace(/\\\n\s*/g, ' ');
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) { section = s[1]!; continue; }
    if (section !== 'Service') continue;
    const i = line.indexOf('=');
    const k = line.slice(0, i);
    out.set(k, [...(out.get(k) ?? []), line.slice(i + 1)]);
  }
  return out;
}

describe('deploy/patchgate.service', () => {
  const svc = serviceSettings(unitText);
  const one = (k: string) => svc.get(k)?.at(-1);

  it('runs as a dedicated user with the hardening options', () => {
    expect(one('User')).toBe('patchgate');
    expect(one('DynamicUser')).toBeUndefined();
    for (const [k, v] of [['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['PrivateDevices', 'yes'],
      ['ProtectKernelTunables', 'yes'], ['ProtectKernelModules', 'yes'], ['ProtectControlGroups', 'yes'], ['RestrictSUIDSGID', 'yes'], ['LockPersonality', 'yes'],
      ['CapabilityBoundingSet', ''], ['UMask', '0077']] as const) expect(one(k), k).toBe(v);
    expect(one('RestrictAddressFamilies')).toBe('AF_INET AF_INET6 AF_UNIX');
    expect(readFileSync(join(REPO, 'deploy', 'patchgate.sysusers.conf'), 'utf8')).toMatch(/^u patchgate /m);
  });

  it('writes only where systemd made room: the audit log, the CA and the spool', () => {
    const exec = one('ExecStart')!;
    const flag = (f: string) => new RegExp(`${f} (\\S+)`).exec(exec)?.[1];
    expect(flag('--audit')).toMatch(new RegExp(`^/var/log/${one('LogsDirectory')}/`));
    expect(flag('--ca-dir')).toMatch(new RegExp(`^/var/lib/${one('StateDirectory')}/`));
    expect(flag('--spool-dir')).toBe(`/var/cache/${one('CacheDirectory')}`);
    expect(flag('--admin')).toMatch(/^127\.0\.0\.1:/);
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
  });

  it('every flag of ExecStart is one `patchgate run` knows', () => {
    const help = execFileSync(process.execPath, [BIN, 'run', '--help'], { encoding: 'utf8' });
    const flags = [...one('ExecStart')!.matchAll(/\s(--[a-z-]+)/g)].map((m) => m[1]!);
    expect(flags.length).toBeGreaterThan(4);
    for (const f of flags) expect(help, f).toContain(f);
  });

  it('systemd-analyze verify accepts it (where systemd-analyze exists)', () => {
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.error) return; // not a systemd machine: the static checks above still hold
    const dir = mkdtempSync(join(tmpdir(), 'patchgate-unit-'));
    try {
      const unit = join(dir, 'patchgate.service');
      writeFileSync(unit, unitText.replace('/usr/bin/node', process.execPath)); // node lives where this machine has it
      const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr.trim()).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/patchgate-icap@.service', () => {
  const text = readFileSync(join(REPO, 'deploy', 'patchgate-icap@.service'), 'utf8');
  const svc = serviceSettings(text);
  const one = (k: string) => svc.get(k)?.at(-1);
  const main = serviceSettings(unitText);

  it('has the hardening of patchgate.service, setting for setting', () => {
    for (const k of ['User', 'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'ProtectKernelTunables', 'ProtectKernelModules',
      'ProtectControlGroups', 'RestrictSUIDSGID', 'LockPersonality', 'CapabilityBoundingSet', 'UMask', 'RestrictAddressFamilies', 'SystemCallFilter', 'MemoryDenyWriteExecute']) {
      expect(svc.get(k), k).toEqual(main.get(k));
    }
  });

  it('gives each instance its own port, audit chain and spool, in the places systemd made writable', () => {
    const exec = one('ExecStart')!;
    const flag = (f: string) => new RegExp(`${f} (\\S+)`).exec(exec)?.[1];
    expect(flag('--listen')).toBe('${LISTEN_HOST}:%i');
    expect(flag('--audit')).toBe(`/var/log/${one('LogsDirectory')}/icap-%i.jsonl`);
    expect(flag('--spool-dir')).toBe(`/var/cache/${one('CacheDirectory')}`);
    expect(one('CacheDirectory')).toContain('%i');
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    const logrotate = readFileSync(join(REPO, 'deploy', 'patchgate-icap.logrotate'), 'utf8');
    expect(logrotate).toContain('/var/log/patchgate/icap-*.jsonl');
    expect(logrotate).not.toMatch(/^\s*copytruncate/m);
  });

  it('every flag of ExecStart is one `patchgate icap` knows', () => {
    const help = execFileSync(process.execPath, [BIN, 'icap', '--help'], { encoding: 'utf8' });
    const flags = [...one('ExecStart')!.matchAll(/\s(--[a-z-]+)/g)].map((m) => m[1]!);
    expect(flags.length).toBeGreaterThan(4);
    for (const f of flags) expect(help, f).toContain(f);
  });

  it('systemd-analyze verify accepts an instance of it (where systemd-analyze exists)', () => {
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.error) return;
    const dir = mkdtempSync(join(tmpdir(), 'patchgate-unit-'));
    try {
      writeFileSync(join(dir, 'patchgate-icap@.service'), text.replace('/usr/bin/node', process.execPath));
      const r = spawnSync('systemd-analyze', ['verify', join(dir, 'patchgate-icap@1344.service')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr.trim()).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/patchgate.logrotate', () => {
  const bed = useRunTestBed('patchgate-logrotate-');

  it('renames and reopens (create + reload), never copytruncate; numbered, delaycompress', () => {
    const directives = logrotateText.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(directives).not.toContain('copytruncate');
    expect(directives).not.toContain('dateext');
    expect(directives).toContain('delaycompress');
    expect(directives.some((d) => d.startsWith('create '))).toBe(true);
    expect(logrotateText).toMatch(/postrotate\s+systemctl reload patchgate\.service/);
  });

  it('two real logrotate runs against a running gate: FILE.2.gz FILE.1 FILE verify as one chain', async () => {
    const logrotate = ['/usr/sbin/logrotate', '/sbin/logrotate'].find(existsSync);
    expect(logrotate, 'logrotate is needed (apt-get install logrotate; .ci/run installs it)').toBeDefined();
    const audit = join(bed.dir, 'audit.jsonl');
    const gate = await startRunProcess({ audit, dir: bed.dir });
    // The snippet as shipped, with this test's file, no user switch (the test runs as itself) and
    // the reload aimed at this process instead of the systemd unit.
    const conf = join(bed.dir, 'patchgate.logrotate');
    writeFileSync(conf, logrotateText
      .replace('/var/log/patchgate/audit.jsonl', audit)
      .replace(/^\s*su patchgate patchgate\n/m, '')
      .replace('create 0640 patchgate patchgate', 'create 0640')
      .replace(/systemctl reload patchgate\.service[^\n]*/, `kill -HUP ${gate.child.pid}`));
    const rotate = async () => {
      const before = auditHeads(gate.stderr()).length;
      execFileSync(logrotate!, ['--force', '--state', join(bed.dir, 'logrotate.state'), conf], { encoding: 'utf8' });
      expect(await waitFor(() => auditHeads(gate.stderr()).length > before, 5000), 'the gate saw SIGHUP').toBe(true);
    };
    try {
      for (const round of [1, 2, 3]) {
        expect((await proxyRequest(gate.port, bed.origin.url('/good.exe'))).status).toBe(200);
        expect((await proxyRequest(gate.port, bed.origin.url('/flame.exe'))).status).toBe(403);
        if (round < 3) await rotate();
      }
    } finally {
      expect(await gate.stop()).toBe(0);
    }
    expect(readdirSync(bed.dir).filter((f) => f.startsWith('audit.jsonl')).sort()).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2.gz']);
    const r = await verifyAuditFiles([`${audit}.2.gz`, `${audit}.1`, audit]);
    expect(r).toMatchObject({ intact: true, records: 6, fromGenesis: true });
    expect(r.files.map((f) => f.lines)).toEqual([2, 2, 2]);
    expect(r.head).toBe(auditHeads(gate.stderr()).find((h) => h.when === 'stop')!.hash);
  });
});
