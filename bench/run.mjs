#!/usr/bin/env node
// patchgate benchmark: `npm run bench [-- --quick] [-- --profile] [-- --only 1,3]`.
// Everything runs on 127.0.0.1: an origin child (bench/lib/origin.mjs) serving signed PEs made by
// the lab generator, the gate as a child (`node bin/patchgate.js run`, so that its RSS, open files
// and CPU are its own), and the clients here. Every ratio is against the same origin in the same
// run: direct download (client -> origin, no proxy) and node:crypto SHA-256 over the same bytes.
// Prints a table and the targets, writes bench/results.json (one object per scenario row) and
// bench/results.meta.json (environment, targets). See bench/README.md.
import { spawn, execFileSync } from 'node:child_process';
import { openSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, mkdirSync, statfsSync, symlinkSync, readdirSync } from 'node:fs';
import { tmpdir, cpus, totalmem, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import net from 'node:net';
import http from 'node:http';
import { createHash } from 'node:crypto';
import YAML from 'yaml';
import { REPO, DIST, PKI, KiB, MiB, GiB, nowMs, labSigner, median, percentile, round, ProcSampler } from './lib/common.mjs';
import { makeClient, loadRun, connectTunnel, connectDirectTls } from './lib/clients.mjs';
import { profileTop, formatProfileTop } from './lib/profile-top.mjs';
import { runIcapScenario } from './lib/icapScenario.mjs';
import { runMsiScenario } from './lib/msiScenario.mjs';

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const flag = (f) => argv.includes(f);
const opt = (f) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : undefined; };
if (flag('--help') || flag('-h')) {
  console.log(`usage: node bench/run.mjs [--quick] [--profile] [--only 1,2,...] [--spool-dir DIR] [--out FILE]
  --quick       smaller sizes and shorter runs (under a minute)
  --profile     CPU-profile the gate over each measured window (inspector, in process): bench/profiles/, top functions printed
  --only LIST   scenario numbers to run (1 inspected, 2 throttled, 3 same payload, 4 different payloads, 5 small, 6 first TLS, 7 squid vs squid + patchgate icap, 8 MSI and MSIX verdict after the last byte)
  --spool-dir   where the gate spools held payloads (default: a folder in the system temp folder)
  --out FILE    results file (default bench/results.json; the meta file sits next to it)
  --sizes LIST  payload sizes for scenarios 1 and 2, e.g. 1M,64M,1G
  --reps N      repetitions per size in scenarios 1 and 2
  --no-tail     leave out the tail-hold rows of scenarios 1 and 2 (as --holds whole)
  --gate-bin F  the patchgate launcher to benchmark (default bin/patchgate.js of this checkout; for A/B runs)
  --protos LIST http,https: protocols for scenarios 1 and 2 (default both)
  --holds LIST  whole,tail: which hold modes scenarios 1 and 2 measure (default both)
  --floor       scenario 1 also measures a bare Node relay (bench/lib/relay.mjs) at the largest size: the floor of any Node proxy here`);
  process.exit(0);
}
const QUICK = flag('--quick');
const PROFILE = flag('--profile');
const ONLY = opt('--only')?.split(',').map(Number);
const OUT = opt('--out') ?? join(REPO, 'bench', 'results.json');
const PROFILE_DIR = join(REPO, 'bench', 'profiles');
const GATE_BIN = opt('--gate-bin') ?? join(REPO, 'bin', 'patchgate.js');
const PROTOS = opt('--protos')?.split(',') ?? ['http', 'https'];
const FLOOR = flag('--floor');
const HOLDS = opt('--holds')?.split(',') ?? ['whole', 'tail'];

const RATE = 125_000_000; // bytes/s: a 1 Gbit/s uplink
const CFG = QUICK
  ? {
    s1: [[1 * MiB, 5], [64 * MiB, 1]],
    s2: [[1 * MiB, 4], [64 * MiB, 1]],
    // hold: tail (HTTP): [scenario, size, reps]
    tail: [[1, 64 * MiB, 1]],
    s3: { size: 16 * MiB, clients: [8, 32], protos: ['http'] },
    s4: { size: 4 * MiB, clients: 32 },
    s5: { durationMs: 1000, concurrency: 8 },
    s6: { newHosts: 6, burst: 6 },
  }
  : {
    s1: [[1 * MiB, 15], [64 * MiB, 3], [1 * GiB, 2]],
    s2: [[1 * MiB, 10], [64 * MiB, 2], [1 * GiB, 1]],
    tail: [[1, 64 * MiB, 3], [1, 1 * GiB, 2], [2, 64 * MiB, 2], [2, 1 * GiB, 1]],
    s3: { size: 64 * MiB, clients: [8, 32], protos: ['http', 'https'] },
    s4: { size: 64 * MiB, clients: 32 },
    s5: { durationMs: 5000, concurrency: 8 },
    s6: { newHosts: 16, burst: 8 },
  };

// --reps N: repetitions for every size of scenarios 1 and 2 (A/B comparisons want more).
if (opt('--reps')) for (const k of ['s1', 's2']) CFG[k] = CFG[k].map(([size]) => [size, Number(opt('--reps'))]);
if (opt('--reps')) CFG.tail = CFG.tail.map(([scenario, size]) => [scenario, size, Number(opt('--reps'))]);
// --sizes 64M,1G: sizes for scenarios 1 and 2.
if (opt('--sizes')) {
  const parse = (t) => Math.round(parseFloat(t) * ({ K: KiB, M: MiB, G: GiB }[t.slice(-1).toUpperCase()] ?? 1));
  const sizes = opt('--sizes').split(',').map(parse);
  for (const k of ['s1', 's2']) CFG[k] = sizes.map((size) => [size, CFG[k].find(([s]) => s === size)?.[1] ?? (size >= GiB ? 1 : 3)]);
  // Tail rows: the same sizes, in both scenarios.
  const reps = (size) => Number(opt('--reps') ?? (size >= GiB ? 1 : 3));
  CFG.tail = [1, 2].flatMap((scenario) => sizes.map((size) => [scenario, size, reps(size)]));
}
const sizeLabel = (n) => (n >= GiB ? `${n / GiB} GiB` : n >= MiB ? `${n / MiB} MiB` : `${n / KiB} KiB`);
const MBps = (bytes, ms) => bytes / 1e6 / (ms / 1000);
const log = (s) => process.stderr.write(s + '\n');
const runId = Date.now().toString(36);
/** Scenario 6's i-th new host (named one by one in the bench rules). */
const s6HostName = (i) => `h${i}-${runId}.tls.bench.test`;

// ---------------------------------------------------------------------------------------------
// Setup: fixtures, temp folder, origin TLS, origin child

for (const f of [join(DIST, 'cli', 'main.js'), join(PKI, 'updateca.pem'), join(PKI, 'publisher.key')]) {
  if (!existsSync(f)) {
    console.error(`bench: ${f} is missing: run \`npm run build && npm run fixtures\` (npm run bench does both)`);
    process.exit(2);
  }
}

const TMP = mkdtempSync(join(tmpdir(), 'patchgate-bench-'));
const SPOOL_DIR = opt('--spool-dir') ?? join(TMP, 'spool');
mkdirSync(SPOOL_DIR, { recursive: true });
const CA_DIR = join(TMP, 'gate-ca');
const children = new Set();
let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
  rmSync(TMP, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });

/** The origin's own CA and a leaf for every name the lab uses (openssl, as the fixtures). */
function makeOriginTls() {
  const dir = join(TMP, 'origin-tls');
  mkdirSync(dir);
  const o = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3',
    '-subj', '/CN=patchgate bench origin CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  o('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'origin.key', '-out', 'origin.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,DNS:*.tls.bench.test,DNS:pass.bench.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  o('x509', '-req', '-in', 'origin.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'origin.pem', '-days', '3', '-extfile', 'ext.cnf');
  return { ca: join(dir, 'ca.pem'), key: join(dir, 'origin.key'), cert: join(dir, 'origin.pem') };
}

function rpcChannel(child) {
  let seq = 0;
  const pending = new Map();
  child.on('message', (m) => {
    const p = m && m.seq !== undefined ? pending.get(m.seq) : undefined;
    if (p) { pending.delete(m.seq); p(m); }
  });
  return (msg, timeoutMs = 300_000) => new Promise((resolve, reject) => {
    const s = ++seq;
    const t = setTimeout(() => { pending.delete(s); reject(new Error(`no answer to ${msg.op} in ${timeoutMs} ms`)); }, timeoutMs);
    pending.set(s, (m) => { clearTimeout(t); if (m.error) reject(new Error(m.error)); else resolve(m); });
    child.send({ ...msg, seq: s });
  });
}

async function startOrigin(tls) {
  const child = spawn(process.execPath, [join(REPO, 'bench', 'lib', 'origin.mjs')], {
    cwd: REPO, env: { ...process.env, BENCH_ORIGIN_TLS: JSON.stringify(tls) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  const ready = await new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (c) => reject(new Error(`origin exited with ${c}`)));
  });
  const rpc = rpcChannel(child);
  return {
    httpPort: ready.httpPort, httpsPort: ready.httpsPort, pid: child.pid,
    prepare: (size, seed, cache) => rpc({ op: 'prepare', size, seed, cache }),
    stats: (reset = false) => rpc({ op: 'stats', reset }),
    stop: () => { child.send({ op: 'exit' }); children.delete(child); },
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

function freeDiskBytes(dir) {
  try { const s = statfsSync(dir); return s.bavail * s.bsize; } catch { return Infinity; }
}

const originTls = makeOriginTls();
const ORIGIN_CA = readFileSync(originTls.ca);
const origin = await startOrigin(originTls);

/** The store-and-forward relay with no inspection (bench/lib/holdRelay.mjs): scenario 1's floor, started when first needed. */
let holdRelay;
async function startHoldRelay() {
  if (holdRelay) return holdRelay;
  const child = spawn(process.execPath, [join(REPO, 'bench', 'lib', 'holdRelay.mjs')], {
    cwd: REPO, env: { ...process.env, BENCH_ORIGIN_CA: originTls.ca }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  const ready = await new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (c) => reject(new Error(`hold relay exited with ${c}`)));
  });
  holdRelay = { port: ready.port, stop: () => { child.send({ op: 'exit' }); children.delete(child); } };
  return holdRelay;
}
const UPDATE_HOSTS = ['127.0.0.1', 'localhost', '*.tls.bench.test'];
const intercepts = (h) => h === '127.0.0.1' || h === 'localhost' || h.endsWith('.tls.bench.test');
/** Inspected HTTP goes to 127.0.0.1, inspected HTTPS to localhost; pass.bench.test is not inspected. */
const target = (proto, inspected = true) => ({
  proto,
  host: inspected ? (proto === 'http' ? '127.0.0.1' : 'localhost') : 'pass.bench.test',
  port: proto === 'http' ? origin.httpPort : origin.httpsPort,
});
/**
 * The shipped rules plus one `pass` rule for pass.bench.test on the origin's ports: without it the
 * gate refuses the passed-through rows (a loopback address no rule names, a port outside 80/8080 and
 * 443), and those rows measured 403 answers (until #18's rework).
 */
const BENCH_RULES = join(TMP, 'rules', 'bench.yaml');
{
  // Beside links to what the shipped rules name by relative path (../certs, the distrust list).
  mkdirSync(join(TMP, 'rules'));
  symlinkSync(join(REPO, 'certs'), join(TMP, 'certs'));
  for (const f of readdirSync(join(REPO, 'rules'))) symlinkSync(join(REPO, 'rules', f), join(TMP, 'rules', f));
  const rules = YAML.parse(readFileSync(join(REPO, 'rules', 'default.yaml'), 'utf8'));
  rules.hosts = [...(rules.hosts ?? []), { pattern: 'pass.bench.test', mode: 'pass', ports: [origin.httpPort, origin.httpsPort] }];
  // Scenario 6's new hosts resolve to 127.0.0.1 (gate-probe.mjs), and the gate takes a client to a
  // loopback address only for a host a rule names exactly, not through *.tls.bench.test: name each.
  for (let i = 0; i < 1 + CFG.s6.newHosts + CFG.s6.burst; i++) rules.hosts.push({ pattern: s6HostName(i), mode: 'inspect', ports: [origin.httpsPort] });
  writeFileSync(BENCH_RULES, YAML.stringify(rules));
}

// ---------------------------------------------------------------------------------------------
// The gate child

let gateCount = 0;
// The gate runs with the environment of deploy/patchgate.service (glibc's trim threshold: see there),
// unless the caller's environment says otherwise.
const GATE_ENV = {
  MALLOC_TRIM_THRESHOLD_: process.env.MALLOC_TRIM_THRESHOLD_ ?? '134217728',
  NODE_OPTIONS: process.env.GATE_NODE_OPTIONS ?? '--max-semi-space-size=4',
};
async function startGate(label, extraArgs = []) {
  const port = await freePort();
  const audit = join(TMP, `audit-${++gateCount}-${label}.jsonl`);
  const nodeArgs = process.env.BENCH_GATE_NODE_ARGS ? process.env.BENCH_GATE_NODE_ARGS.split(' ') : [];
  if (PROFILE) mkdirSync(PROFILE_DIR, { recursive: true });
  nodeArgs.push('--import', pathToFileURL(join(REPO, 'bench', 'lib', 'gate-probe.mjs')).href, GATE_BIN, 'run',
    '--listen', `127.0.0.1:${port}`, '--admin', 'off', '--rules', BENCH_RULES, '--anchor', join(PKI, 'updateca.pem'),
    ...UPDATE_HOSTS.flatMap((h) => ['--update-host', h]), '--audit', audit, '--ca-dir', CA_DIR, '--spool-dir', SPOOL_DIR, ...extraArgs);
  const t0 = nowMs();
  const child = spawn(process.execPath, nodeArgs, {
    cwd: REPO, env: { ...process.env, ...GATE_ENV, NODE_EXTRA_CA_CERTS: originTls.ca }, stdio: ['ignore', process.env.BENCH_GATE_STDOUT ? openSync(process.env.BENCH_GATE_STDOUT + '.' + label, 'w') : 'ignore', 'pipe', 'ipc'],
  });
  children.add(child);
  let stderr = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gate did not start in 30 s:\n${stderr}`)), 30_000);
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-20_000);
      if (/gating update downloads on/.test(stderr)) { clearTimeout(timer); resolve(); }
    });
    exited.then((e) => { clearTimeout(timer); reject(new Error(`gate exited (${e.code ?? e.signal}) before listening:\n${stderr}`)); });
  });
  const startMs = nowMs() - t0;
  log(`  gate ${label}: pid ${child.pid}, listening after ${Math.round(startMs)} ms`);
  const rpc = rpcChannel(child);
  const sampler = new ProcSampler(child.pid).start();
  let profileFile = join(PROFILE_DIR, `${label}.cpuprofile`);
  let rowCpu0 = { user: 0, sys: 0 };
  let rowThreads0 = {};
  let rowRss0 = NaN;
  const gate = {
    label, port, pid: child.pid, startMs,
    ca: readFileSync(join(CA_DIR, 'ca.pem')),
    intercepts,
    eld: (reset = true) => rpc({ op: 'eld', reset }, 10_000),
    fds: () => sampler.fds(),
    stderr: () => stderr,
    warmed: new Set(),
    shared: false,
    /** Starts a measured window: peaks, event-loop delay, CPU (and a CPU profile with --profile) from here. */
    async begin(rowLabel = label) {
      profileFile = join(PROFILE_DIR, `${rowLabel}.cpuprofile`);
      if (PROFILE) await rpc({ op: 'profile', action: 'start' });
      sampler.reset();
      rowCpu0 = sampler.cpuTimes();
      rowThreads0 = sampler.threadCpu();
      rowRss0 = sampler.status().rssKiB / 1024;
      await gate.eld(true);
    },
    /** Ends the measured window. */
    async end() {
      sampler.sample();
      const eld = await gate.eld(true);
      const { hwmKiB } = sampler.status();
      let profile;
      if (PROFILE) {
        await rpc({ op: 'profile', action: 'stop', file: profileFile });
        profile = profileTop(profileFile, 12);
      }
      // A fresh gate's VmHWM is this row's peak (startup and warm-up included); a shared one's is not.
      const peak = gate.shared ? sampler.maxRssKiB / 1024 : Math.max(sampler.maxRssKiB, hwmKiB) / 1024;
      const cpu = sampler.cpuTimes();
      const threads = Object.fromEntries(Object.entries(sampler.threadCpu()).map(([k, v]) => [k, round(v - (rowThreads0[k] ?? 0), 2)]).filter(([, v]) => v >= 0.05));
      return { threads, rssAtBeginMiB: rowRss0, peakRssMiB: peak, peakFds: sampler.maxFds, cpuS: cpu.user + cpu.sys - rowCpu0.user - rowCpu0.sys, cpuSysS: cpu.sys - rowCpu0.sys, eld, profile };
    },
    /** The audit records written so far (pino writes asynchronously: give it a moment). */
    async records() {
      await new Promise((r) => setTimeout(r, 200));
      return existsSync(audit) ? readFileSync(audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
    },
    /** SIGTERM, wait, then the audit records. */
    async stop() {
      sampler.stop();
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killer);
      children.delete(child);
      return existsSync(audit) ? readFileSync(audit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
    },
  };
  return gate;
}

// --quick shares one gate between the rows of a scenario (startup costs ~1 s); the full run starts a
// fresh gate per row, so that VmHWM is the row's own peak. Scenario 6 always gets a fresh gate (first
// TLS ever). A gate keeps every verified payload spooled on disk for its cache TTL (60 s): a gate per
// scenario also bounds the disk the quick run needs.
let sharedGate;
async function acquireGate(label, { fresh = !QUICK, args = [] } = {}) {
  if (fresh) return startGate(label, args);
  const group = label.split('-')[0];
  if (sharedGate && sharedGate.group !== group) {
    await sharedGate.stop();
    sharedGate = undefined;
  }
  if (!sharedGate) {
    sharedGate = await startGate(`${group}-shared`, args);
    sharedGate.shared = true;
    sharedGate.group = group;
  }
  return sharedGate;
}
/** Audit records of the row; stops the gate unless it is shared. */
async function releaseGate(gate) {
  return gate.shared ? gate.records() : gate.stop();
}

// Payload seeds: each scenario its own, so that nothing is shared between rows by accident.
const WARM_SEED = 99;
async function warmGate(gate, protos = ['http', 'https']) {
  await origin.prepare(1 * MiB, WARM_SEED, true);
  for (const proto of protos) {
    if (gate.warmed.has(proto)) continue;
    gate.warmed.add(proto);
    const t = target(proto);
    const c = makeClient({ route: 'gate', ...t, gate, originCa: ORIGIN_CA });
    for (let i = 0; i < 3; i++) {
      const r = await c.get(`/pe/${1 * MiB}/${WARM_SEED}?r=${runId}-warm-${gate.label}-${proto}-${i}`);
      if (r.status !== 200 || r.verdict !== 'allow') throw new Error(`warm-up through the gate: ${proto} status ${r.status} verdict ${r.verdict}\n${gate.stderr()}`);
    }
    c.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Baselines over the same bytes: node:crypto SHA-256, and patchgate's verifier in this process

const baselineCache = new Map();
async function baseline(size, seed) {
  const key = `${size}:${seed}`;
  if (baselineCache.has(key)) return baselineCache.get(key);
  const { createSyntheticSignedPe } = await import(join(DIST, 'lab', 'syntheticPe.js'));
  const { IncrementalVerifier } = await import(join(DIST, 'verify', 'incrementalVerifier.js'));
  const { emptyPolicy, fileDigestsFor } = await import(join(DIST, 'verify', 'approvedCaPolicy.js'));
  const { pinCertificateFile } = await import(join(DIST, 'policy', 'trustMaterial.js'));
  const policy = emptyPolicy({ anchors: pinCertificateFile(join(PKI, 'updateca.pem')), fileDigests: fileDigestsFor(false, ['sha256']) });
  const pe = createSyntheticSignedPe({ size, signer: labSigner(), seed, chunkSize: 64 * KiB, reuseChunkBuffer: true });
  // 64 KiB chunks: what a socket hands over.
  let hashMs = 0;
  let verifyMs = 0;
  const rounds = size <= MiB ? 20 : 1;
  let finishMs = [];
  for (let r = 0; r < rounds; r++) {
    const h = createHash('sha256');
    const v = new IncrementalVerifier(policy);
    for (const c of pe.chunks()) {
      let t = performance.now();
      h.update(c);
      hashMs += performance.now() - t;
      t = performance.now();
      v.update(c);
      verifyMs += performance.now() - t;
    }
    h.digest();
    const t = performance.now();
    const verdict = v.finish();
    finishMs.push(performance.now() - t);
    if (verdict.verdict !== 'allow') throw new Error(`baseline: the synthetic PE does not verify: ${JSON.stringify(verdict.reasons)}`);
  }
  const b = {
    sha256MBps: MBps(pe.totalSize * rounds, hashMs),
    verifierMBps: MBps(pe.totalSize * rounds, verifyMs),
    verifierFinishMs: median(finishMs.slice(rounds > 1 ? 1 : 0)),
  };
  baselineCache.set(key, b);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Rows

const rows = [];
function row(r) {
  const base = {
    name: r.name, scenario: r.scenario, bytes: r.bytes ?? null, clients: r.clients ?? 1, 'MB/s': null, ratio_vs_direct: null, ratio_vs_sha256: null,
    verify_ms_after_last_byte: null, peak_rss_mib: null, req_per_s: null, p50_ms: null, p99_ms: null,
  };
  const out = { ...base, ...r };
  if (QUICK && r.scenario !== 6 && !r.skipped && !r.error) out.gate_shared = true;
  for (const [k, v] of Object.entries(out)) if (typeof v === 'number') out[k] = round(v, Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  rows.push(out);
  printRow(out);
  return out;
}

/** The gate's own part of the wait after the last byte (audit durations.releaseMs) of the given records. */
function auditReleaseMs(records, ids) {
  const want = new Set(ids.filter(Boolean));
  return records.filter((r) => want.has(r.id) && r.durations?.releaseMs !== undefined).map((r) => r.durations.releaseMs);
}

function auditVerifyMs(records, ids) {
  const want = new Set(ids.filter(Boolean));
  return records.filter((r) => want.has(r.id) && r.durations?.verifyMs !== undefined).map((r) => r.durations.verifyMs);
}

function checkAllowed(results, bytes, what) {
  for (const r of results) {
    if (r.status !== 200 || r.bytes !== bytes || (r.verdict !== undefined && r.verdict !== 'allow')) {
      throw new Error(`${what}: status ${r.status}, ${r.bytes} of ${bytes} bytes, verdict ${r.verdict}`);
    }
  }
}

function diskCheck(need, name, scenario) {
  const free = freeDiskBytes(SPOOL_DIR);
  if (free >= need) return true;
  row({ name, scenario, skipped: `needs ${sizeLabel(need)} free in the spool folder ${SPOOL_DIR} (the gate spools held payloads to disk), ${sizeLabel(free)} free` });
  return false;
}

/** Scenarios 1 and 2: one inspected payload, direct and through the gate, alternated. */
async function singlePayload({ scenario, proto, size, reps, throttled, hold = 'whole' }) {
  const tail = hold === 'tail';
  const name = `${scenario} ${throttled ? 'throttled 125 MB/s' : 'inspected'}${tail ? ' tail' : ''} ${proto} ${sizeLabel(size)}`;
  const label = `s${scenario}${tail ? 't' : ''}-${proto}-${sizeLabel(size).replace(' ', '')}`;
  // Every verified entity stays spooled for the gate's cache TTL (60 s): reps x size on disk.
  if (!diskCheck(reps * size + 128 * MiB, name, scenario)) return;
  const seed = scenario * 10 + (size >= GiB ? 3 : size >= 64 * MiB ? 2 : 1);
  const { totalSize } = await origin.prepare(size, seed, size <= 64 * MiB);
  const bl = await baseline(size, seed);
  const t = target(proto);
  const gate = await acquireGate(label, { args: tail ? ['--hold', 'tail'] : [] });
  // Scenario 1, whole hold: the same fetch through a relay that holds without inspecting (the floor).
  const relay = scenario === 1 && !tail ? await startHoldRelay() : undefined;
  let rowData;
  const g = [];
  const d = [];
  const f = [];
  try {
    await warmGate(gate, [proto]);
    const direct = makeClient({ route: 'direct', ...t, originCa: ORIGIN_CA });
    const via = makeClient({ route: 'gate', ...t, gate, originCa: ORIGIN_CA });
    const floor = relay && makeClient({ route: 'direct', proto: 'http', host: '127.0.0.1', port: relay.port });
    await gate.begin(label);
    for (let i = 0; i < reps; i++) {
      const q = (k) => `r=${runId}-${label}-${i}-${k}${throttled ? `&rate=${RATE}` : ''}`;
      d.push(await direct.get(`/pe/${size}/${seed}?${q('d')}`, { 'x-bench-id': `${label}-d${i}` }));
      const r = await via.get(`/pe/${size}/${seed}?${q('g')}`, { 'x-bench-id': `${label}-g${i}` });
      r.id = `${label}-g${i}`;
      g.push(r);
      if (floor) {
        const path = `/pe/${size}/${seed}?${q('f')}`;
        const x = await floor.get(`/hold?proto=${proto}&host=${t.host}&port=${t.port}&path=${encodeURIComponent(path)}`, { 'x-bench-id': `${label}-f${i}` });
        if (x.status !== 200) throw new Error(`${name}: hold relay answered ${x.status}`);
        x.id = `${label}-f${i}`;
        f.push(x);
      }
    }
    floor?.close();
    rowData = await gate.end();
    direct.close();
    via.close();
    checkAllowed(d, totalSize, `${name} direct`);
    checkAllowed(g, totalSize, `${name} through the gate`);
  } finally {
    var records = await releaseGate(gate);
  }
  const ost = await origin.stats(true);
  const gaps = g.map((r) => r.tHead - ost.lastByte[r.id]).filter(Number.isFinite);
  // Tail mode: the head (and most of the body) goes out before the last byte; what counts is the end.
  const endGaps = g.map((r) => r.tEnd - ost.lastByte[r.id]).filter(Number.isFinite);
  const gateMs = median(g.map((r) => r.tEnd - r.t0));
  const directMs = median(d.map((r) => r.tEnd - r.t0));
  const gMBps = MBps(totalSize, gateMs);
  const dMBps = MBps(totalSize, directMs);
  const auditMs = auditVerifyMs(records, g.map((r) => r.auditId));
  const releaseMs = auditReleaseMs(records, g.map((r) => r.auditId));
  const floorGaps = f.map((r) => r.tHead - ost.lastByte[r.id]).filter(Number.isFinite);
  return row({
    name, scenario, proto, bytes: totalSize, clients: 1, reps, hold,
    // Gate-side: the last body byte the gate read from upstream to its start of the client's response.
    gate_release_ms: median(releaseMs), gate_release_ms_max: releaseMs.length ? Math.max(...releaseMs) : null,
    // The same client-side gap through a relay that holds without inspecting (bench/lib/holdRelay.mjs).
    floor_ms_after_last_byte: floorGaps.length ? median(floorGaps) : null,
    'MB/s': gMBps, ratio_vs_direct: gMBps / dMBps, ratio_vs_sha256: gMBps / bl.sha256MBps,
    verify_ms_after_last_byte: tail ? null : median(gaps), peak_rss_mib: rowData.peakRssMiB,
    last_byte_to_client_end_ms: median(endGaps),
    time_s: gateMs / 1000, direct_time_s: directMs / 1000, time_vs_direct: gateMs / directMs, direct_MBps: dMBps,
    gate_times_s: g.map((r) => round((r.tEnd - r.t0) / 1000, 2)), direct_times_s: d.map((r) => round((r.tEnd - r.t0) / 1000, 2)),
    sha256_MBps: bl.sha256MBps, verifier_inprocess_MBps: bl.verifierMBps, verifier_finish_inprocess_ms: bl.verifierFinishMs,
    verify_gap_max_ms: Math.max(...gaps), audit_verify_ms: median(auditMs), audit_verify_ms_max: auditMs.length ? Math.max(...auditMs) : null,
    // Time from the request to the first response byte through the gate: the hold (upstream + verdict).
    gate_first_byte_s: median(g.map((r) => r.tHead - r.t0)) / 1000,
    gate_cpu_by_thread_s: rowData.threads, rss_after_warmup_mib: rowData.rssAtBeginMiB,
    open_fds_peak: rowData.peakFds, gate_cpu_s: rowData.cpuS, gate_cpu_sys_s: rowData.cpuSysS, event_loop_delay_max_ms: rowData.eld.max, event_loop_delay_p99_ms: rowData.eld.p99,
    profile: rowData.profile,
    requests: g.map((r) => ({ id: r.id, t0: r.t0, origin_last_byte: ost.lastByte[r.id], t_head: r.tHead, t_end: r.tEnd })),
  });
}

/**
 * `--floor`: the same payload direct and through a bare Node relay (bench/lib/relay.mjs), alternated:
 * what any user-space proxy in Node reaches on this machine, next to the gate's rows of the same run.
 */
async function relayFloor({ size, reps }) {
  const name = `1 relay floor http ${sizeLabel(size)}`;
  const seed = 10 + (size >= GiB ? 3 : size >= 64 * MiB ? 2 : 1);
  const { totalSize } = await origin.prepare(size, seed, size <= 64 * MiB);
  const child = spawn(process.execPath, [join(REPO, 'bench', 'lib', 'relay.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
      child.once('exit', (code) => reject(new Error(`relay exited (${code})`)));
    });
    const sampler = new ProcSampler(child.pid).start();
    const t = target('http');
    const direct = makeClient({ route: 'direct', ...t, originCa: ORIGIN_CA });
    const via = makeClient({ route: 'gate', ...t, gate: { port }, originCa: ORIGIN_CA });
    const d = [];
    const g = [];
    const cpu0 = sampler.cpuSeconds();
    const threads0 = sampler.threadCpu();
    for (let i = 0; i < reps; i++) {
      const q = (k) => `r=${runId}-floor-${i}-${k}`;
      d.push(await direct.get(`/pe/${size}/${seed}?${q('d')}`));
      g.push(await via.get(`/pe/${size}/${seed}?${q('g')}`));
    }
    const cpuS = sampler.cpuSeconds() - cpu0;
    const threads = Object.fromEntries(Object.entries(sampler.threadCpu()).map(([k, v]) => [k, round(v - (threads0[k] ?? 0), 2)]).filter(([, v]) => v >= 0.05));
    sampler.stop();
    direct.close();
    via.close();
    checkAllowed(d, totalSize, `${name} direct`);
    checkAllowed(g, totalSize, `${name} through the relay`);
    const relayMs = median(g.map((r) => r.tEnd - r.t0));
    const directMs = median(d.map((r) => r.tEnd - r.t0));
    return row({
      name, scenario: 1, proto: 'http', bytes: totalSize, clients: 1, reps, hold: 'relay',
      'MB/s': MBps(totalSize, relayMs), ratio_vs_direct: directMs / relayMs, time_s: relayMs / 1000, direct_time_s: directMs / 1000,
      time_vs_direct: relayMs / directMs, peak_rss_mib: Math.max(sampler.maxRssKiB, sampler.status().hwmKiB) / 1024, gate_cpu_s: cpuS, gate_cpu_by_thread_s: threads,
      relay_times_s: g.map((r) => round((r.tEnd - r.t0) / 1000, 2)), direct_times_s: d.map((r) => round((r.tEnd - r.t0) / 1000, 2)),
    });
  } finally {
    child.kill('SIGKILL');
    children.delete(child);
  }
}

/** N clients at once; `pathFor(i)` gives client i's path. Time to the last client's last byte. */
async function concurrent({ route, t, gate, n, pathFor, idPrefix }) {
  const clients = Array.from({ length: n }, () => makeClient({ route, ...t, gate, originCa: ORIGIN_CA }));
  const t0 = nowMs();
  const res = await Promise.all(clients.map((c, i) => c.get(pathFor(i), { 'x-bench-id': `${idPrefix}-${i}` })));
  const ms = nowMs() - t0;
  for (const c of clients) c.close();
  return { ms, res, firstMs: Math.min(...res.map((r) => r.tEnd)) - t0 };
}

/** Scenario 3: N clients fetching the same payload at once. */
async function samePayload({ proto, n, size }) {
  const scenario = 3;
  const name = `3 same payload x${n} ${proto} ${sizeLabel(size)}`;
  const label = `s3-${proto}-x${n}`;
  if (!diskCheck(size + 128 * MiB, name, scenario)) return;
  const seed = 30 + n;
  const { totalSize } = await origin.prepare(size, seed, true);
  const bl = await baseline(size, seed);
  const t = target(proto);
  const gate = await acquireGate(label);
  let rowData;
  let one;
  let many;
  let viaGate;
  let ost;
  try {
    await warmGate(gate, [proto]);
    const oneRuns = [];
    for (let i = 0; i < 2; i++) {
      const c = makeClient({ route: 'direct', ...t, originCa: ORIGIN_CA });
      const r = await c.get(`/pe/${size}/${seed}?r=${runId}-${label}-one${i}`);
      c.close();
      checkAllowed([r], totalSize, `${name} one direct client`);
      oneRuns.push(r.tEnd - r.t0);
    }
    one = median(oneRuns);
    many = await concurrent({ route: 'direct', t, n, pathFor: (i) => `/pe/${size}/${seed}?r=${runId}-${label}-direct-${i}`, idPrefix: `${label}-d` });
    checkAllowed(many.res, totalSize, `${name} direct`);
    await origin.stats(true);
    await gate.begin(label);
    const url = `/pe/${size}/${seed}?r=${runId}-${label}-shared`;
    viaGate = await concurrent({ route: 'gate', t, gate, n, pathFor: () => url, idPrefix: `${label}-g` });
    rowData = await gate.end();
    ost = await origin.stats(true);
    checkAllowed(viaGate.res, totalSize, `${name} through the gate`);
  } finally {
    var records = await releaseGate(gate);
  }
  const gMBps = MBps(n * totalSize, viaGate.ms);
  const dMBps = MBps(n * totalSize, many.ms);
  const shared = records.filter((r) => r.kind === 'transfer' && r.shared).length;
  return row({
    name, scenario, proto, bytes: totalSize, clients: n,
    'MB/s': gMBps, ratio_vs_direct: gMBps / dMBps, ratio_vs_sha256: gMBps / bl.sha256MBps,
    peak_rss_mib: rowData.peakRssMiB,
    upstream_bytes: ost.bytes, upstream_requests: ost.requests, upstream_fetches: ost.bytes / totalSize, shared_in_audit: shared,
    time_s: viaGate.ms / 1000, first_client_s: viaGate.firstMs / 1000, one_direct_time_s: one / 1000, time_vs_one_direct: viaGate.ms / one,
    n_direct_time_s: many.ms / 1000, time_vs_n_direct: viaGate.ms / many.ms,
    gate_cpu_by_thread_s: rowData.threads, rss_after_warmup_mib: rowData.rssAtBeginMiB,
    open_fds_peak: rowData.peakFds, gate_cpu_s: rowData.cpuS, gate_cpu_sys_s: rowData.cpuSysS, event_loop_delay_max_ms: rowData.eld.max, profile: rowData.profile,
  });
}

/** Scenario 4: N clients fetching different payloads at once. */
async function differentPayloads({ n, size }) {
  const scenario = 4;
  const name = `4 different payloads x${n} http ${sizeLabel(size)}`;
  const label = `s4-http-x${n}`;
  if (!diskCheck(n * size * 1.05 + 128 * MiB, name, scenario)) return;
  const seeds = Array.from({ length: n }, (_, i) => 1000 + i);
  log(`  preparing ${n} signed payloads of ${sizeLabel(size)} at the origin…`);
  let totalSize = 0;
  for (const s of seeds) totalSize = (await origin.prepare(size, s, false)).totalSize;
  const t = target('http');
  const gate = await acquireGate(label);
  let rowData;
  let direct;
  let viaGate;
  let ost;
  try {
    await warmGate(gate, ['http']);
    direct = await concurrent({ route: 'direct', t, n, pathFor: (i) => `/pe/${size}/${seeds[i]}?r=${runId}-${label}-d`, idPrefix: `${label}-d` });
    checkAllowed(direct.res, totalSize, `${name} direct`);
    await origin.stats(true);
    await gate.begin(label);
    viaGate = await concurrent({ route: 'gate', t, gate, n, pathFor: (i) => `/pe/${size}/${seeds[i]}?r=${runId}-${label}-g`, idPrefix: `${label}-g` });
    rowData = await gate.end();
    ost = await origin.stats(true);
    checkAllowed(viaGate.res, totalSize, `${name} through the gate`);
  } finally {
    var records = await releaseGate(gate);
  }
  const gMBps = MBps(n * totalSize, viaGate.ms);
  const dMBps = MBps(n * totalSize, direct.ms);
  const bl = await baseline(size, seeds[0]);
  const auditMs = auditVerifyMs(records, viaGate.res.map((r) => r.auditId));
  return row({
    name, scenario, proto: 'http', bytes: totalSize, clients: n,
    'MB/s': gMBps, ratio_vs_direct: gMBps / dMBps, ratio_vs_sha256: gMBps / bl.sha256MBps,
    peak_rss_mib: rowData.peakRssMiB, open_fds_peak: rowData.peakFds,
    time_s: viaGate.ms / 1000, direct_time_s: direct.ms / 1000, time_vs_direct: viaGate.ms / direct.ms, upstream_bytes: ost.bytes,
    audit_verify_ms: median(auditMs), audit_verify_ms_max: auditMs.length ? Math.max(...auditMs) : null,
    gate_cpu_s: rowData.cpuS, gate_cpu_sys_s: rowData.cpuSysS, event_loop_delay_max_ms: rowData.eld.max, profile: rowData.profile,
  });
}

/** Scenario 5: small requests with keep-alive, C connections back to back. */
async function smallRequests() {
  const scenario = 5;
  const { durationMs, concurrency } = CFG.s5;
  const size = 100 * KiB;
  const seeds = Array.from({ length: 16 }, (_, i) => 500 + i);
  let peTotal = 0;
  for (const s of seeds) peTotal = (await origin.prepare(size, s, true)).totalSize;
  const bl = await baseline(size, seeds[0]);
  const kinds = [
    { key: 'inspected-http', name: `5 small inspected http ${sizeLabel(size)}`, t: target('http'), pe: true },
    { key: 'inspected-https', name: `5 small inspected https ${sizeLabel(size)}`, t: target('https'), pe: true },
    { key: 'pass-http', name: '5 small passed-through http 1 KiB', t: target('http', false), pe: false },
    { key: 'pass-tunnel-https', name: '5 small passed-through https (blind tunnel) 1 KiB', t: target('https', false), pe: false },
  ];
  for (const k of kinds) {
    const label = `s5-${k.key}`;
    const gate = await acquireGate(label);
    let rowData;
    let g;
    let d;
    try {
      await warmGate(gate, ['http', 'https']);
      const pathFor = (tag) => (i) => (k.pe ? `/pe/${size}/${seeds[i % seeds.length]}?r=${runId}-${label}-${tag}-${i}` : `/blob/1024?r=${runId}-${label}-${tag}-${i}`);
      const bytes = k.pe ? peTotal : 1024;
      const direct = makeClient({ route: 'direct', ...k.t, originCa: ORIGIN_CA, maxSockets: concurrency });
      d = await loadRun({ client: direct, concurrency, durationMs, pathFor: pathFor('d'), expectBytes: bytes });
      direct.close();
      const via = makeClient({ route: 'gate', ...k.t, gate, originCa: ORIGIN_CA, maxSockets: concurrency });
      await gate.begin(label);
      g = await loadRun({ client: via, concurrency, durationMs, pathFor: pathFor('g'), expectBytes: bytes });
      rowData = await gate.end();
      via.close();
    } finally {
      var records = await releaseGate(gate);
    }
    const bytes = k.pe ? peTotal : 1024;
    const auditMs = records.filter((r) => r.durations?.verifyMs !== undefined && r.url?.includes(`${label}-g`)).map((r) => r.durations.verifyMs);
    row({
      name: k.name, scenario, proto: k.t.proto, bytes, clients: concurrency,
      'MB/s': MBps(g.bytes, durationMs), ratio_vs_direct: g.reqPerS / d.reqPerS, ratio_vs_sha256: k.pe ? MBps(g.bytes, durationMs) / bl.sha256MBps : null,
      req_per_s: g.reqPerS, p50_ms: g.p50, p99_ms: g.p99, max_ms: g.max,
      direct_req_per_s: d.reqPerS, direct_p50_ms: d.p50, direct_p99_ms: d.p99,
      audit_verify_ms: median(auditMs), audit_verify_ms_p99: percentile(auditMs, 99),
      errors: g.errors + d.errors || undefined, wrong_responses: g.wrong + d.wrong || undefined, first_error: g.firstError ?? d.firstError,
      peak_rss_mib: rowData.peakRssMiB, open_fds_peak: rowData.peakFds,
      gate_cpu_s: rowData.cpuS, gate_cpu_sys_s: rowData.cpuSysS, gate_cpu_ms_per_request: g.requests ? (1000 * rowData.cpuS) / g.requests : null,
      event_loop_delay_max_ms: rowData.eld.max, event_loop_delay_p99_ms: rowData.eld.p99, profile: rowData.profile,
    });
  }
}

/** A GET over one already-open socket (no agent). */
function getOnSocket(socket, host, port, path) {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.request({ host, port, path, method: 'GET', createConnection: () => socket, headers: { host: `${host}:${port}`, connection: 'close' } }, (res) => {
      res.resume();
      res.once('end', () => resolve({ ms: nowMs() - t0, status: res.statusCode }));
    });
    req.on('error', (e) => reject(new Error(`GET ${host}${path}: ${e.message}`)));
    req.end();
  });
}

/** Scenario 6: first HTTPS connection to a new inspected host; does anyone else stall meanwhile? */
async function firstTls() {
  const scenario = 6;
  const { newHosts, burst } = CFG.s6;
  const label = 's6-first-tls';
  const port = origin.httpsPort;
  const gate = await acquireGate(label, { fresh: true });
  let rowData;
  const samples = [];
  let phases;
  let cold;
  let fdsBefore;
  let fdsAfter;
  const burstTimes = [];
  try {
    // The HTTP path warm (JIT), but no TLS interception yet: the first new host is also the very first.
    await warmGate(gate, ['http']);
    // A client on the side: small passed-through requests back to back on one keep-alive connection.
    const side = makeClient({ route: 'gate', ...target('http', false), gate, originCa: ORIGIN_CA, maxSockets: 1 });
    const sideLat = [];
    let sideRun = true;
    let sideSeq = 0;
    const sideLoop = (async () => {
      while (sideRun) {
        const r = await side.get(`/blob/1024?r=${runId}-side-${sideSeq++}`);
        sideLat.push({ at: r.t0, ms: r.tEnd - r.t0 });
      }
    })();
    const windowStats = async (fn) => {
      await gate.eld(true);
      const from = nowMs();
      await fn();
      const to = nowMs();
      const eld = await gate.eld(true);
      const lat = sideLat.filter((s) => s.at >= from && s.at + s.ms <= to + 1000 && s.at <= to).map((s) => s.ms);
      return { ms: to - from, eldMax: eld.max, eldP99: eld.p99, sideMax: lat.length ? Math.max(...lat) : null, sideP99: percentile(lat, 99), sideN: lat.length };
    };
    await new Promise((r) => setTimeout(r, 200));
    const base = await windowStats(() => new Promise((r) => setTimeout(r, 1000)));
    const hostName = s6HostName;
    let seqHost = 0;
    const measureOne = async () => {
      const host = hostName(seqHost++);
      const first = await connectTunnel({ gatePort: gate.port, host, port, ca: gate.ca });
      const firstGet = await getOnSocket(first.socket, host, port, `/blob/1024?r=${runId}-${host}-1`);
      const warm = await connectTunnel({ gatePort: gate.port, host, port, ca: gate.ca });
      const warmGet = await getOnSocket(warm.socket, host, port, `/blob/1024?r=${runId}-${host}-2`);
      const direct = await connectDirectTls({ host, port, ca: ORIGIN_CA });
      const directGet = await getOnSocket(direct.socket, host, port, `/blob/1024?r=${runId}-${host}-3`);
      return { first, firstGet, warm, warmGet, direct, directGet };
    };
    // The first interception ever (cold), then new hosts one after another, then a burst at once.
    fdsBefore = gate.fds();
    await gate.begin(label);
    let seqStats;
    const coldWin = await windowStats(async () => { cold = await measureOne(); });
    seqStats = await windowStats(async () => { for (let i = 0; i < newHosts; i++) samples.push(await measureOne()); });
    const burstStats = await windowStats(async () => {
      await Promise.all(Array.from({ length: burst }, async () => {
        const host = hostName(seqHost++);
        const c = await connectTunnel({ gatePort: gate.port, host, port, ca: gate.ca });
        burstTimes.push(c.totalMs);
        await getOnSocket(c.socket, host, port, `/blob/1024?r=${runId}-${host}-b`);
      }));
    });
    await new Promise((r) => setTimeout(r, 500)); // let closed connections go
    fdsAfter = gate.fds();
    rowData = await gate.end();
    phases = { base, cold: coldWin, sequential: seqStats, burst: burstStats };
    sideRun = false;
    await sideLoop;
    side.close();
  } finally {
    var records = await releaseGate(gate);
  }
  const newTunnel = samples.map((s) => s.first.totalMs);
  const warmTunnel = samples.map((s) => s.warm.totalMs);
  const added = samples.map((s) => s.first.totalMs - s.warm.totalMs);
  const addedVsDirect = samples.map((s) => s.first.totalMs + s.firstGet.ms - (s.direct.totalMs + s.directGet.ms));
  const stallLimit = 20;
  const stalled = [phases.sequential, phases.burst].some((p) => p.eldMax > stallLimit || (p.sideMax ?? 0) > (phases.base.sideMax ?? 0) + stallLimit);
  return row({
    name: '6 first TLS to a new inspected host', scenario, proto: 'https', clients: 1,
    p50_ms: median(newTunnel), p99_ms: percentile(newTunnel, 99),
    added_ms: median(added), added_ms_max: Math.max(...added), added_vs_direct_ms: median(addedVsDirect),
    new_host_tunnel_ms: median(newTunnel), known_host_tunnel_ms: median(warmTunnel), direct_tls_ms: median(samples.map((s) => s.direct.totalMs)),
    new_host_first_get_ms: median(samples.map((s) => s.firstGet.ms)), known_host_first_get_ms: median(samples.map((s) => s.warmGet.ms)), direct_first_get_ms: median(samples.map((s) => s.directGet.ms)),
    first_ever_tunnel_ms: cold.first.totalMs, first_ever_added_ms: cold.first.totalMs - cold.warm.totalMs,
    new_hosts: samples.length, burst_hosts: burst,
    // A burst of new host names under one parent domain: each needs a leaf from the interception CA.
    burst_tunnel_median_ms: median(burstTimes), burst_tunnel_max_ms: Math.max(...burstTimes),
    // Descriptors still open once every test connection is closed (once, http-mitm-proxy kept one
    // listening HTTPS server per intercepted host name; the gate now terminates TLS on the CONNECT socket).
    fds_before: fdsBefore, fds_after: fdsAfter, fds_kept_per_new_host: (fdsAfter - fdsBefore) / (1 + samples.length + burst),
    side_max_ms_baseline: phases.base.sideMax, side_max_ms_first_ever: phases.cold.sideMax, side_max_ms_sequential: phases.sequential.sideMax, side_max_ms_burst: phases.burst.sideMax,
    event_loop_delay_max_ms_baseline: phases.base.eldMax, event_loop_delay_max_ms_first_ever: phases.cold.eldMax,
    event_loop_delay_max_ms_sequential: phases.sequential.eldMax, event_loop_delay_max_ms_burst: phases.burst.eldMax,
    stall: stalled, peak_rss_mib: rowData.peakRssMiB, open_fds_peak: rowData.peakFds, gate_cpu_s: rowData.cpuS, gate_cpu_sys_s: rowData.cpuSysS,
    profile: rowData.profile,
  });
}

// ---------------------------------------------------------------------------------------------
// Output

const COLS = [
  ['scenario', 44, (r) => r.name],
  ['bytes', 10, (r) => (r.bytes ? sizeLabel(r.bytes >= MiB ? Math.round(r.bytes / MiB) * MiB : Math.round(r.bytes / KiB) * KiB) : '')],
  ['cl', 3, (r) => r.clients ?? ''],
  ['MB/s', 7, (r) => r['MB/s'] ?? ''],
  ['×direct', 7, (r) => r.ratio_vs_direct ?? ''],
  ['×sha256', 7, (r) => r.ratio_vs_sha256 ?? ''],
  ['verdict ms', 10, (r) => r.verify_ms_after_last_byte ?? ''],
  ['gate ms', 7, (r) => r.gate_release_ms ?? ''],
  ['floor ms', 8, (r) => r.floor_ms_after_last_byte ?? ''],
  ['RSS MiB', 7, (r) => r.peak_rss_mib ?? ''],
  ['req/s', 6, (r) => r.req_per_s ?? ''],
  ['p50 ms', 6, (r) => r.p50_ms ?? ''],
  ['p99 ms', 6, (r) => r.p99_ms ?? ''],
  ['notes', 0, (r) => notes(r)],
];
function notes(r) {
  if (r.skipped) return `SKIPPED: ${r.skipped}`;
  if (r.error) return `ERROR: ${r.error.split('\n')[0]}`;
  const n = [];
  if (r.scenario === 1 || r.scenario === 2) n.push(`time ${r.time_s}s vs direct ${r.direct_time_s}s (×${r.time_vs_direct}); audit verify ${r.audit_verify_ms} ms; fds ${r.open_fds_peak}; loop max ${r.event_loop_delay_max_ms} ms`);
  if (r.scenario === 3) n.push(`upstream ${r.upstream_fetches}× (${r.upstream_requests} req); last ${r.time_s}s vs one direct ${r.one_direct_time_s}s (×${r.time_vs_one_direct}), vs ${r.clients} direct ${r.n_direct_time_s}s`);
  if (r.scenario === 4) n.push(`fds ${r.open_fds_peak}; last ${r.time_s}s vs direct ${r.direct_time_s}s; upstream ${sizeLabel(r.upstream_bytes)}`);
  if (r.scenario === 5) n.push(`direct ${r.direct_req_per_s} req/s p50 ${r.direct_p50_ms} p99 ${r.direct_p99_ms}; gate CPU ${r.gate_cpu_ms_per_request} ms/req${r.audit_verify_ms !== null ? `; audit verify ${r.audit_verify_ms} ms` : ''}${r.errors ? `; ${r.errors} errors (${r.first_error})` : ''}`);
  if ((r.scenario === 1 || r.scenario === 2) && r.hold === 'tail') n.push(`tail: client's end ${r.last_byte_to_client_end_ms} ms after the origin's last byte; first byte ${r.gate_first_byte_s}s`);
  if (r.scenario === 7) n.push(`×squid alone ${r.ratio_vs_squid}${r.vs ? ` (${r.vs})` : ''}${r.stalled ? `; STALLED ${r.stalled} of ${r.attempts}` : ''}`);
  if (r.scenario === 8) n.push(`runs ${r.verify_ms_runs.join('/')} ms; RSS growth during the verdict ${r.rss_growth_mib_during_verdict} MiB; SHA-256 of the same bytes ${r.sha256_ms} ms`);
  if (r.scenario === 6) n.push(`added ${r.added_ms} ms (max ${r.added_ms_max}; first ever +${r.first_ever_added_ms}); known host ${r.known_host_tunnel_ms} ms, direct TLS ${r.direct_tls_ms} ms; fds kept/new host ${r.fds_kept_per_new_host}; burst of ${r.burst_hosts}: max ${r.burst_tunnel_max_ms} ms; side max ${r.side_max_ms_baseline}→${r.side_max_ms_sequential}/${r.side_max_ms_burst} ms; gate loop max ${r.event_loop_delay_max_ms_baseline}→${r.event_loop_delay_max_ms_sequential}/${r.event_loop_delay_max_ms_burst} ms${r.stall ? ' STALL' : ''}`);
  return n.join('; ');
}
const pad = (s, w) => (w ? String(s).padStart(w) : String(s));
let headerPrinted = false;
function printRow(r) {
  if (!headerPrinted) {
    console.log(COLS.map(([h, w], i) => (i === 0 ? String(h).padEnd(w) : pad(h, w))).join(' '));
    headerPrinted = true;
  }
  console.log(COLS.map(([, w, f], i) => (i === 0 ? String(f(r)).padEnd(w) : pad(f(r), w))).join(' '));
  if (r.profile) console.log(formatProfileTop(r.profile).split('\n').map((l) => '    ' + l).join('\n'));
}

function targets() {
  const find = (pred) => rows.filter((r) => !r.skipped && !r.error && pred(r));
  const t = [];
  const add = (target, rs, value, ok, detail = '') => {
    if (!rs.length) return t.push({ target, met: null, value: 'not measured' + (detail ? ` (${detail})` : '') });
    t.push({ target, met: ok, value, rows: rs.map((r) => r.name) });
  };
  const big = find((r) => r.scenario === 1 && r.proto === 'http' && r.hold === 'whole').sort((a, b) => b.bytes - a.bytes)[0];
  const bigNote = big && big.bytes < GiB ? ` (largest measured: ${sizeLabel(Math.round(big.bytes / MiB) * MiB)})` : '';
  add('1 GiB inspected over HTTP >= 0.5x direct' + bigNote, big ? [big] : [], big && `${big.ratio_vs_direct}x`, big && big.ratio_vs_direct >= 0.5);
  add('  ... with gate peak RSS <= 150 MiB' + bigNote, big ? [big] : [], big && `${big.peak_rss_mib} MiB`, big && big.peak_rss_mib <= 150);
  const bigTail = find((r) => r.scenario === 1 && r.hold === 'tail').sort((a, b) => b.bytes - a.bytes)[0];
  const tailNote = bigTail && bigTail.bytes < GiB ? ` (largest measured: ${sizeLabel(Math.round(bigTail.bytes / MiB) * MiB)})` : '';
  add('tail mode: 1 GiB inspected over HTTP >= 0.8x direct' + tailNote, bigTail ? [bigTail] : [], bigTail && `${bigTail.ratio_vs_direct}x (end ${bigTail.last_byte_to_client_end_ms} ms after the origin's last byte)`, bigTail && bigTail.ratio_vs_direct >= 0.8);
  add('  ... with gate peak RSS <= 150 MiB' + tailNote, bigTail ? [bigTail] : [], bigTail && `${bigTail.peak_rss_mib} MiB`, bigTail && bigTail.peak_rss_mib <= 150);
  const floor = find((r) => r.hold === 'relay');
  if (floor.length) add('(not a target) the floor: a bare Node relay, same run', floor, floor.map((r) => `${r.ratio_vs_direct}x, ${r.peak_rss_mib} MiB`).join(', '), null);
  const thrTail = find((r) => r.scenario === 2 && r.hold === 'tail');
  add('tail mode, throttled (125 MB/s origin): <= 1.05x direct time', thrTail, thrTail.map((r) => `${sizeLabel(Math.round(r.bytes / MiB) * MiB)}: ${r.time_vs_direct}x`).join(', '), thrTail.every((r) => r.time_vs_direct <= 1.05));
  const thr = find((r) => r.scenario === 2 && r.hold !== 'tail');
  add('throttled (125 MB/s origin): <= 1.15x direct time', thr, thr.map((r) => `${sizeLabel(Math.round(r.bytes / MiB) * MiB || r.bytes)} ${r.proto}: ${r.time_vs_direct}x`).join(', '), thr.every((r) => r.time_vs_direct <= 1.15));
  const s1 = find((r) => r.scenario === 1 && r.hold === 'whole');
  add('verdict after last byte <= 5 ms (client-side "verdict ms": origin hands over its last byte -> client reads the head)', s1, s1.map((r) => `${r.proto} ${sizeLabel(Math.round(r.bytes / MiB) * MiB)}: ${r.verify_ms_after_last_byte} ms (audit verifyMs ${r.audit_verify_ms})`).join(', '), s1.every((r) => r.verify_ms_after_last_byte <= 5));
  add('  ... gate-side ("gate ms", audit releaseMs: gate reads the last byte -> gate starts the response); "floor ms": the client-side gap through a relay that holds without inspecting', s1, s1.map((r) => `${r.proto} ${sizeLabel(Math.round(r.bytes / MiB) * MiB)}: gate ${r.gate_release_ms} ms (max ${r.gate_release_ms_max}), floor ${r.floor_ms_after_last_byte ?? '-'} ms`).join(', '), s1.every((r) => r.gate_release_ms !== null && r.gate_release_ms <= 5));
  const s3 = find((r) => r.scenario === 3 && r.clients === 32);
  add('32 clients, same payload: one upstream fetch', s3, s3.map((r) => `${r.proto}: ${r.upstream_fetches} fetch(es), ${r.upstream_requests} request(s)`).join(', '), s3.every((r) => r.upstream_requests === 1 && Math.abs(r.upstream_fetches - 1) < 0.01));
  add('32 clients, same payload: last client <= 1.2x one direct client', s3, s3.map((r) => `${r.proto}: ${r.time_vs_one_direct}x (vs 32 direct clients at once: ${r.time_vs_n_direct}x)`).join(', '), s3.every((r) => r.time_vs_one_direct <= 1.2));
  const s4 = find((r) => r.scenario === 4);
  add('32 different payloads: gate peak RSS <= 300 MiB' + (s4[0] && s4[0].bytes < 60 * MiB ? ` (measured with ${sizeLabel(Math.round(s4[0].bytes / MiB) * MiB)} payloads)` : ''), s4, s4.map((r) => `${r.peak_rss_mib} MiB, ${r.open_fds_peak} fds`).join(', '), s4.every((r) => r.peak_rss_mib <= 300));
  // A load row whose answers were wrong (a refusal is fast) or failed measures nothing: never met.
  const answered = (r) => (r.wrong_responses || r.errors ? ` (${r.wrong_responses ?? 0} wrong answers, ${r.errors ?? 0} errors: not a measurement)` : '');
  const sound = (r) => !r.wrong_responses && !r.errors;
  const s5i = find((r) => r.scenario === 5 && r.name.includes('inspected'));
  add('100 KiB inspected >= 0.4x direct req/s', s5i, s5i.map((r) => `${r.proto}: ${r.ratio_vs_direct}x${answered(r)}`).join(', '), s5i.every((r) => sound(r) && r.ratio_vs_direct >= 0.4));
  const s5p = find((r) => r.scenario === 5 && r.name.includes('passed'));
  add('passed-through >= 0.5x direct req/s', s5p, s5p.map((r) => `${r.name.includes('tunnel') ? 'https tunnel' : 'http'}: ${r.ratio_vs_direct}x${answered(r)}`).join(', '), s5p.every((r) => sound(r) && r.ratio_vs_direct >= 0.5));
  const s7t = find((r) => r.scenario === 7 && r.name === '7 squid + patchgate icap tail 64 MiB');
  add('squid 5.7 + patchgate icap (tail, as printed: no pool while it streams), 64 MiB >= 0.5x squid alone without the delay pool', s7t, s7t.map((r) => `${r.ratio_vs_squid}x (${r.time_s}s)`).join(', '), s7t.every((r) => r.ratio_vs_squid >= 0.5));
  const s7n = find((r) => r.scenario === 7 && r.name === '7 squid no pool + patchgate icap tail 64 MiB');
  add('  ... the same with no delay pool at all (stalls counted)', s7n, s7n.map((r) => `${r.ratio_vs_squid ?? '-'}x, ${r.stalled ?? 0} of ${r.attempts} stalled`).join(', '), s7n.every((r) => r.ratio_vs_squid >= 0.5 && !r.stalled));
  const s7ts = find((r) => r.scenario === 7 && r.name === '7 squid + patchgate icap tail 100 KiB x8');
  add('squid 5.7 + patchgate icap (tail, as printed), 100 KiB >= 0.5x squid alone (no pool) req/s', s7ts, s7ts.map((r) => `${r.ratio_vs_squid}x`).join(', '), s7ts.every((r) => r.ratio_vs_squid >= 0.5));
  const s7s = find((r) => r.scenario === 7 && r.name === '7 squid + patchgate icap 100 KiB x8');
  add('squid 5.7 + patchgate icap (whole, as printed: delay pool), 100 KiB >= 0.5x squid alone (same pool) req/s', s7s, s7s.map((r) => `${r.ratio_vs_squid}x`).join(', '), s7s.every((r) => r.ratio_vs_squid >= 0.5));
  const s6 = find((r) => r.scenario === 6);
  add('first TLS to a new host <= 20 ms added', s6, s6.map((r) => `${r.added_ms} ms median, ${r.added_ms_max} ms max (first ever ${r.first_ever_added_ms} ms)`).join(', '), s6.every((r) => r.added_ms <= 20));
  add('  ... and no stall of other clients', s6, s6.map((r) => `gate event loop max ${r.event_loop_delay_max_ms_sequential}/${r.event_loop_delay_max_ms_burst} ms (baseline ${r.event_loop_delay_max_ms_baseline}); side client max ${r.side_max_ms_sequential}/${r.side_max_ms_burst} ms (baseline ${r.side_max_ms_baseline})`).join(', '), s6.every((r) => !r.stall));
  return t;
}

// ---------------------------------------------------------------------------------------------
// Run

const t0 = nowMs();
const LOAD_START = loadavg().map((x) => round(x, 2));
const want = (n) => !ONLY || ONLY.includes(n);
const plan = [];
if (want(1) && HOLDS.includes('whole')) for (const [size, reps] of CFG.s1) for (const proto of PROTOS) plan.push(() => singlePayload({ scenario: 1, proto, size, reps, throttled: false }));
if (want(2) && HOLDS.includes('whole')) for (const [size, reps] of CFG.s2) for (const proto of PROTOS) plan.push(() => singlePayload({ scenario: 2, proto, size, reps, throttled: true }));
for (const [scenario, size, reps] of flag('--no-tail') ? [] : CFG.tail) if (want(scenario) && HOLDS.includes('tail')) plan.push(() => singlePayload({ scenario, proto: 'http', size, reps, throttled: scenario === 2, hold: 'tail' }));
if (want(1) && FLOOR) { const [size, reps] = CFG.s1.reduce((a, b) => (b[0] > a[0] ? b : a)); plan.push(() => relayFloor({ size, reps })); }
if (want(3)) for (const proto of CFG.s3.protos) for (const n of CFG.s3.clients) {
  if (proto === 'https' && n !== 32) continue;
  plan.push(() => samePayload({ proto, n, size: CFG.s3.size }));
}
if (want(4)) plan.push(() => differentPayloads({ n: CFG.s4.clients, size: CFG.s4.size }));
if (want(5)) plan.push(() => smallRequests());
if (want(6)) plan.push(() => firstTls());
if (want(8)) for (const kind of ['msi', 'appx']) plan.push(async () => row({ ...(await runMsiScenario({ tmp: TMP, size: QUICK ? 16 * MiB : 64 * MiB, log, kind })), scenario: 8 }));
if (want(7)) plan.push(async () => { for (const r of await runIcapScenario({ origin, freePort, tmp: TMP, quick: QUICK, log, children })) row({ ...r, scenario: 7 }); });

log(`patchgate bench (${QUICK ? 'quick' : 'full'}): ${cpus().length} CPUs, ${Math.round(totalmem() / GiB)} GiB RAM, node ${process.version}, load average ${LOAD_START.join(' ')}; origin pid ${origin.pid}; temp ${TMP}`);
if (LOAD_START[0] > 0.5) log('  (the machine is not idle: other work competes with the three processes measured here)');
for (const step of plan) {
  try {
    await step();
  } catch (e) {
    log(`bench: a scenario failed: ${e?.stack ?? e}`);
    row({ name: `(failed) ${String(e?.message ?? e).split('\n')[0].slice(0, 60)}`, scenario: null, error: String(e?.stack ?? e) });
  }
}
if (sharedGate) await sharedGate.stop();
holdRelay?.stop();
const elapsedS = (nowMs() - t0) / 1000;
origin.stop();

const tgs = targets();
console.log('\nTargets:');
for (const x of tgs) console.log(`  ${x.met === null ? 'n/a ' : x.met ? 'MET ' : 'MISS'}  ${x.target}: ${x.value}`);
console.log(`\n${rows.length} rows in ${Math.round(elapsedS)} s; ratios: ×direct = gate MB/s (or req/s) / direct, same origin, same run; ×sha256 = gate MB/s / node:crypto SHA-256 MB/s over the same bytes (one core).`);
const results = rows.map(({ profile, ...r }) => r);
mkdirSync(dirname(OUT), { recursive: true }); // --out may name a folder not made yet
writeFileSync(OUT, JSON.stringify(results, null, 2) + '\n');
const git = (...a) => { try { return execFileSync('git', a, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return undefined; } };
const meta = {
  mode: QUICK ? 'quick' : 'full', date: new Date().toISOString(), elapsed_s: round(elapsedS, 1), node: process.version, cpus: cpus().length, cpu_model: cpus()[0]?.model,
  mem_gib: round(totalmem() / GiB, 1), load_average_start: LOAD_START, load_average_end: loadavg().map((x) => round(x, 2)),
  git_head: git('rev-parse', 'HEAD'), src_modified_files: git('status', '--porcelain', '--', 'src')?.split('\n').filter(Boolean).length,
  gate_bin: GATE_BIN, gate_env: GATE_ENV, throttle_bytes_per_s: RATE, config: CFG, targets: tgs,
  profiles: PROFILE ? Object.fromEntries(rows.filter((r) => r.profile).map((r) => [r.name, r.profile])) : undefined,
};
writeFileSync(OUT.replace(/\.json$/, '') + '.meta.json', JSON.stringify(meta, null, 2) + '\n');
console.log(`wrote ${OUT}`);
cleanup();
// A scenario that failed (an error, not a missed target) fails the run: CI runs --quick as a smoke test.
const failed = rows.filter((r) => r.error);
if (failed.length) {
  console.error(`bench: ${failed.length} scenario(s) failed: ${failed.map((r) => r.name).join('; ')}`);
  process.exitCode = 1;
}
