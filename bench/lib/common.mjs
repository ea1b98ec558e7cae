// Shared helpers for the benchmark (bench/run.mjs and its child processes).
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPrivateKey, X509Certificate } from 'node:crypto';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DIST = join(REPO, 'dist');
export const PKI = join(REPO, 'test', 'fixtures', 'out', 'pki');

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Monotonic time in ms (CLOCK_MONOTONIC: comparable between processes on one machine). */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** The lab signer of test/fixtures: the Patchgate Test Publisher, with the Update CA in the bag. */
export function labSigner() {
  const der = (name) => new Uint8Array(new X509Certificate(readFileSync(join(PKI, `${name}.pem`))).raw);
  return {
    signerCertDer: der('publisher'),
    signerKey: createPrivateKey(readFileSync(join(PKI, 'publisher.key'))),
    extraCertsDer: [der('updateca')],
    digest: 'sha256',
  };
}

export function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}
export const median = (v) => percentile(v, 50);
export const round = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

/** Peak RSS, current RSS, open descriptors and CPU time of another process, from /proc. */
export class ProcSampler {
  constructor(pid, intervalMs = 20) {
    this.pid = pid;
    this.intervalMs = intervalMs;
    this.maxRssKiB = 0;
    this.maxFds = 0;
    this.timer = undefined;
  }
  status() {
    try {
      const s = readFileSync(`/proc/${this.pid}/status`, 'utf8');
      const kib = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
      return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
    } catch { return { rssKiB: NaN, hwmKiB: NaN }; }
  }
  fds() {
    try { return readdirSync(`/proc/${this.pid}/fd`).length; } catch { return NaN; }
  }
  /** { user, sys } CPU seconds so far. */
  cpuTimes() {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 }; // utime, stime in clock ticks (USER_HZ 100)
    } catch { return { user: NaN, sys: NaN }; }
  }
  /** CPU seconds (user + system) so far by thread (name:tid; /proc/<pid>/task/<tid>/stat: main, worker threads, libuv's pool, V8's helpers). */
  threadCpu() {
    const out = {};
    try {
      for (const tid of readdirSync(`/proc/${this.pid}/task`)) {
        try {
          const stat = readFileSync(`/proc/${this.pid}/task/${tid}/stat`, 'utf8');
          const name = tid === String(this.pid) ? 'main' : `${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}:${tid}`;
          const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
          out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / 100;
        } catch { /* the thread ended */ }
      }
    } catch { /* the process ended */ }
    return out;
  }
  /** user + system CPU seconds so far. */
  cpuSeconds() {
    const t = this.cpuTimes();
    return t.user + t.sys;
  }
  sample() {
    const { rssKiB } = this.status();
    if (rssKiB > this.maxRssKiB) this.maxRssKiB = rssKiB;
    const n = this.fds();
    if (n > this.maxFds) this.maxFds = n;
  }
  start() {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }
  /** Resets the sampled peaks. */
  reset() {
    this.maxRssKiB = 0;
    this.maxFds = 0;
    this.sample();
  }
  stop() {
    clearInterval(this.timer);
    this.sample();
  }
}
