/**
 * A real Squid (Debian's package, installed by .ci/run) on 127.0.0.1 with a generated
 * configuration: no disk cache, ICAP enabled, a RESPMOD service (or a set of them) at patchgate
 * instances, bypass=off so that Squid fails closed. Its temp folder is removed by stop().
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './gateHarness.js';
import { squidConfigSnippet } from '../../src/icap/squidConfig.js';

export function squidBinary(): string | undefined {
  for (const p of ['/usr/sbin/squid', '/usr/bin/squid']) if (existsSync(p)) return p;
  try { return execFileSync('sh', ['-c', 'command -v squid'], { encoding: 'utf8' }).trim() || undefined; } catch { return undefined; }
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface SquidHandle {
  port: number;
  dir: string;
  child: ChildProcess;
  config: string;
  cacheLog(): string;
  stop(): Promise<void>;
}

/**
 * A lab squid.conf: loopback only, no cache, no DNS beyond 127.0.0.1, logs in `dir`, and the
 * ICAP part exactly as `patchgate icap --print-squid-config` prints it (src/icap/squidConfig.ts).
 */
export function squidConfig(o: { port: number; dir: string; icapPorts: number[]; updateHosts: string[]; user?: string }): string {
  return [
    `http_port 127.0.0.1:${o.port}`,
    'pid_filename none',
    ...(o.user ? [`cache_effective_user ${o.user}`] : []),
    `cache_log ${join(o.dir, 'cache.log')}`,
    `access_log stdio:${join(o.dir, 'access.log')}`,
    `coredump_dir ${o.dir}`,
    'cache deny all',
    'cache_mem 8 MB',
    'pinger_enable off',
    'netdb_filename none',
    'dns_nameservers 127.0.0.1',
    'shutdown_lifetime 0 seconds',
    'http_access allow localhost',
    'http_access deny all',
    squidConfigSnippet({ services: o.icapPorts.map((p) => `icap://127.0.0.1:${p}/respmod`), updateHosts: o.updateHosts }),
  ].join('\n');
}

export async function startSquid(o: { icapPorts: number[]; updateHosts: string[] }): Promise<SquidHandle> {
  const bin = squidBinary();
  if (!bin) throw new Error('squid is not installed: .ci/run installs Debian\'s squid (apt-get install squid)');
  const dir = mkdtempSync(join(tmpdir(), 'patchgate-squid-'));
  const port = await freePort();
  // Started as root, Squid drops to the `proxy` user, which must be able to write its logs.
  let user: string | undefined;
  if (process.getuid?.() === 0) {
    user = 'proxy';
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }));
    chownSync(dir, uid, gid);
  }
  const config = squidConfig({ port, dir, icapPorts: o.icapPorts, updateHosts: o.updateHosts, user });
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, config);
  const child = spawn(bin, ['-N', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const cacheLog = () => (existsSync(join(dir, 'cache.log')) ? readFileSync(join(dir, 'cache.log'), 'utf8') : '');
  const up = await waitFor(() => /Accepting HTTP Socket connections/.test(cacheLog()) || child.exitCode !== null, 20_000);
  if (!up || child.exitCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`squid did not start:\n${out}\n${cacheLog().slice(-3000)}`);
  }
  return {
    port, dir, child, config, cacheLog,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
