/**
 * A two-namespace LAN segment for the wpad-guard tests: namespace "guard" (10.66.0.1) and
 * namespace "lan" (10.66.0.2, the honest PAC host and DNS server, and 10.66.0.66, the attacker),
 * joined by one veth pair created directly inside them. The namespaces have no other link, so
 * nothing the tests send (multicast, broadcast, DNS) can leave them. Names carry a random suffix;
 * destroy() deletes both namespaces (and with them the veth pair).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { REPO } from '../support/fixtures.js';

export const GUARD_IP = '10.66.0.1';
export const HONEST_IP = '10.66.0.2';
export const ATTACKER_IP = '10.66.0.66';
export const BIN = join(REPO, 'bin', 'patchgate.js');
const RESPONDERS = join(REPO, 'test', 'wpad', 'lanResponders.mjs');

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();

/** Root can create namespaces; a developer without root skips (CI runs as root, where a failure is loud). */
export const isRoot = process.getuid?.() === 0;

export interface LanSegment {
  guardNs: string;
  lanNs: string;
  guardIf: string;
  lanIf: string;
  /** The veth ends' IPv6 link-local addresses (no scope), once duplicate address detection is done. */
  guardLinkLocal: string;
  lanLinkLocal: string;
  destroy(): void;
}

/** The link-local address of `dev` in `ns` once it is no longer tentative (DAD takes about a second). */
async function linkLocal(ns: string, dev: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const out = ip('-n', ns, '-6', 'addr', 'show', 'dev', dev, 'scope', 'link');
    const m = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(out);
    if (m && !/tentative/.test(out)) return m[1]!;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no usable link-local address on ${dev} in ${ns}`);
}

export async function createSegment(): Promise<LanSegment> {
  const sfx = randomBytes(3).toString('hex');
  const seg: LanSegment = {
    guardNs: `pgwpad-g-${sfx}`, lanNs: `pgwpad-l-${sfx}`, guardIf: `pgwg${sfx}`, lanIf: `pgwl${sfx}`, guardLinkLocal: '', lanLinkLocal: '',
    destroy: () => {
      for (const ns of [seg.guardNs, seg.lanNs]) {
        try { ip('netns', 'del', ns); } catch { /* not created */ }
      }
    },
  };
  const lanIf = seg.lanIf;
  try {
    ip('netns', 'add', seg.guardNs);
    ip('netns', 'add', seg.lanNs);
    ip('link', 'add', seg.guardIf, 'netns', seg.guardNs, 'type', 'veth', 'peer', 'name', lanIf, 'netns', seg.lanNs);
    ip('-n', seg.guardNs, 'addr', 'add', `${GUARD_IP}/24`, 'dev', seg.guardIf);
    ip('-n', seg.lanNs, 'addr', 'add', `${HONEST_IP}/24`, 'dev', lanIf);
    ip('-n', seg.lanNs, 'addr', 'add', `${ATTACKER_IP}/24`, 'dev', lanIf);
    for (const [ns, dev] of [[seg.guardNs, seg.guardIf], [seg.lanNs, lanIf], [seg.guardNs, 'lo'], [seg.lanNs, 'lo']] as const) ip('-n', ns, 'link', 'set', dev, 'up');
    seg.guardLinkLocal = await linkLocal(seg.guardNs, seg.guardIf);
    seg.lanLinkLocal = await linkLocal(seg.lanNs, lanIf);
  } catch (e) {
    seg.destroy();
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`cannot build the network namespaces for the wpad-guard tests (root and iproute2 needed): ${err.stderr?.toString() || err.message}`);
  }
  return seg;
}

export interface Responders {
  child: ChildProcess;
  log: () => string;
  stop(): Promise<void>;
}

/** Starts test/wpad/lanResponders.mjs inside `ns` with this configuration, once it says ready. */
export async function startResponders(ns: string, config: unknown): Promise<Responders> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, RESPONDERS, JSON.stringify(config)], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => child.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('ready')) resolve(true); })),
    exited.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 15_000)),
  ]);
  if (!ready) {
    child.kill('SIGKILL');
    throw new Error(`the LAN responders did not start:\n${err}`);
  }
  return {
    child, log: () => err,
    stop: async () => {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** `patchgate wpad-guard --once` inside the guard namespace: exit code and stderr. */
export function runGuardOnce(seg: LanSegment, args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn('ip', ['netns', 'exec', seg.guardNs, process.execPath, BIN, 'wpad-guard', '--once', '--interface', seg.guardIf, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => child.once('exit', (code) => { clearTimeout(timer); resolve({ code, stderr, stdout }); }));
}

/** Runs a short node script inside `ns` (e.g. to read the admin address, which only the namespace reaches). */
export function nodeIn(ns: string, script: string, ...args: string[]): Promise<string> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve) => child.once('exit', () => { clearTimeout(timer); resolve(out); }));
}

/** `patchgate run --wpad-guard` inside the guard namespace; resolves once the first guard round is over. */
export function spawnGateWithGuard(seg: LanSegment, args: string[]): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn('ip', ['netns', 'exec', seg.guardNs, process.execPath, BIN, 'run', '--wpad-guard', '--wpad-interface', seg.guardIf, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}
