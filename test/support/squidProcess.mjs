// A real Squid (Debian's package, installed by .ci/run) on 127.0.0.1 with a generated lab
// configuration, for the ICAP tests (test/support/squidHarness.ts) and the benchmark (bench/).
// Plain JavaScript so that both can load it; the ICAP lines come from the built
// dist/icap/squidConfig.js, exactly as `patchgate icap --print-squid-config` prints them.
import { spawn, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { squidConfigSnippet } = await import(pathToFileURL(join(REPO, 'dist', 'icap', 'squidConfig.js')).href);

/** @returns {string | undefined} */
export function squidBinary() {
  for (const p of ['/usr/sbin/squid', '/usr/bin/squid']) if (existsSync(p)) return p;
  return undefined;
}

/** @returns {Promise<number>} */
export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(() => r()));
  return port;
}

/**
 * Loopback only, no cache, no DNS beyond 127.0.0.1, logs in `dir`; with `icapPorts`, the ICAP part
 * as patchgate prints it (`tailHosts`: those of `updateHosts` held in tail mode; `extraLines`: more
 * squid.conf lines, before the http_access rules). Without, the same Squid (and the same delay pool) with no adaptation.
 */
export function labSquidConfig({ port, dir, icapPorts = [], updateHosts, tailHosts, user, squid5Workaround, cache = false, extraLines = [] }) {
  const base = [
    `http_port 127.0.0.1:${port}`,
    'pid_filename none',
    ...(user ? [`cache_effective_user ${user}`] : []),
    `cache_log ${join(dir, 'cache.log')}`,
    `access_log stdio:${join(dir, 'access.log')}`,
    `coredump_dir ${dir}`,
    // With `cache`: a memory cache, to see what Squid keeps of a response patchgate cut.
    ...(cache ? ['cache_mem 128 MB', 'maximum_object_size_in_memory 64 MB'] : ['cache deny all', 'cache_mem 8 MB']),
    'pinger_enable off',
    'netdb_filename none',
    'dns_nameservers 127.0.0.1',
    'shutdown_lifetime 0 seconds',
  ];
  // Where Debian's squid.conf includes conf.d/*.conf: before its `http_access allow` lines.
  if (icapPorts.length) {
    base.push(squidConfigSnippet({ services: icapPorts.map((p) => `icap://127.0.0.1:${p}/respmod`), updateHosts, tailHosts, squid5Workaround }));
  } else {
    const snippet = squidConfigSnippet({ services: ['icap://127.0.0.1:1/respmod'], updateHosts, tailHosts, squid5Workaround });
    base.push(...snippet.split('\n').filter((l) => /^(acl |range_offset_limit|delay_)/.test(l)));
  }
  base.push(...extraLines, 'http_access allow localhost', 'http_access deny all');
  return base.join('\n') + '\n';
}

/**
 * Starts Squid in the foreground (-N); resolves once it accepts connections.
 * @returns {Promise<{ port: number, dir: string, pid: number, child: import('node:child_process').ChildProcess, config: string, cacheLog: () => string, stop: () => Promise<void> }>}
 */
export async function startSquid({ icapPorts = [], updateHosts, tailHosts, squid5Workaround, cache, extraLines }) {
  const bin = squidBinary();
  if (!bin) throw new Error("squid is not installed: .ci/run installs Debian's squid (apt-get install squid)");
  const dir = mkdtempSync(join(tmpdir(), 'patchgate-squid-'));
  const port = await freePort();
  // Started as root, Squid drops to the `proxy` user, which must be able to write its logs.
  let user;
  if (process.getuid?.() === 0) {
    user = 'proxy';
    chownSync(dir, Number(execFileSync('id', ['-u', user], { encoding: 'utf8' })), Number(execFileSync('id', ['-g', user], { encoding: 'utf8' })));
  }
  const config = labSquidConfig({ port, dir, icapPorts, updateHosts, tailHosts, user, squid5Workaround, cache, extraLines });
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, config);
  const child = spawn(bin, ['-N', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((r) => child.once('exit', () => r()));
  const cacheLog = () => (existsSync(join(dir, 'cache.log')) ? readFileSync(join(dir, 'cache.log'), 'utf8') : '');
  const deadline = Date.now() + 20_000;
  while (!/Accepting HTTP Socket connections/.test(cacheLog()) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (child.exitCode !== null || !/Accepting HTTP Socket connections/.test(cacheLog())) {
    child.kill('SIGKILL');
    const log = cacheLog().slice(-3000);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`squid did not start:\n${out}\n${log}`);
  }
  return {
    port, dir, pid: child.pid, child, config, cacheLog,
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
