/**
 * wpad-guard's command-line contract that needs no network: usage errors exit 2 with a message and
 * before anything is sent or written (also under `run --wpad-guard`), and --help lists the flags.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';

const BIN = join(REPO, 'bin', 'patchgate.js');
const pg = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });

describe('patchgate wpad-guard: usage', () => {
  it('--help lists every flag', () => {
    const r = pg('wpad-guard', '--help');
    expect(r.status).toBe(0);
    for (const f of ['--interface', '--expect', '--gate', '--every', '--window', '--once', '--dns-server', '--search-domain', '--protocol', '--rules', '--update-host', '--audit', '--admin']) expect(r.stdout).toContain(f);
    expect(pg('run', '--help').stdout).toContain('--wpad-guard');
  });

  it.each([
    [['--interface', 'pgnosuchif0'], /--interface: interface pgnosuchif0 does not exist/],
    [['--interface', 'lo', '--every', '0s'], /--every: "0s" must be more than 0/],
    [['--interface', 'lo', '--every', 'soon'], /--every: "soon" is not a duration/],
    [['--interface', 'lo', '--window', '5s', '--every', '1s'], /--every must be at least --window/],
    [['--interface', 'lo', '--protocol', 'smb'], /--protocol: "smb" is not one of/],
    [['--interface', 'lo', '--dns-server', 'dns.example'], /--dns-server: "dns.example" is not an IP address/],
    [['--interface', 'lo', '--gate', 'nohostport'], /--gate: "nohostport" is not HOST:PORT/],
  ])('%j exits 2 before writing anything', (args, message) => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-wpad-cli-'));
    try {
      const r = pg('wpad-guard', '--once', '--audit', join(dir, 'a.jsonl'), ...args);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(existsSync(join(dir, 'a.jsonl'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('run --wpad-guard with a bad guard option exits 2 before the gate listens', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-wpad-cli-'));
    try {
      const r = pg('run', '--listen', '127.0.0.1:0', '--admin', 'off', '--audit', join(dir, 'a.jsonl'), '--ca-dir', join(dir, 'ca'), '--wpad-guard', '--wpad-every', 'never');
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/--every: "never" is not a duration/);
      expect(r.stderr).not.toContain('gating update downloads');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
