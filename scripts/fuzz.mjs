#!/usr/bin/env node
// Long mutation fuzzing of the verification core: `npm run fuzz -- --minutes 10`.
//
// Same targets and oracle as test/fuzz/mutation-fuzz.test.ts (test/fuzz/lib/), run against the
// compiled core (dist/) in worker threads, one per core, with a watchdog: a case that does not
// return within --case-timeout-ms is a hang (its worker is terminated and replaced), a worker
// that dies (out of memory: --worker-heap-mb) is a crash, and a thrown error is a crash.
// Deterministic: case i of seed S is the same mutation on the same fixture bytes, and
// `--replay TARGET:INDEX` reruns one case and prints it.
//
// Phases: the structural sweep (every CMS/X.509 header and small field, every byte the digest
// skips, every size field) for every target under both policies, then random mutations until the
// time is up. With --exhaustive, every bit 0 and bit 7 of every byte of every signature area too.
//
// Writes a JSON report (default: a file in the system temp folder) and prints a summary:
// cases run, crashes, hangs, false accepts, "closer look" groups, time per case, memory.
// Exit code 1 when there was any crash, hang, false accept or memory-bound breach.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const FIXTURES = join(REPO, 'test', 'fixtures', 'out');
const LIB = join(REPO, 'test', 'fuzz', 'lib', 'fuzzCore.mjs');
const AT = new Date('2026-06-01T00:00:00Z');
const POLICIES = ['updateca', 'root'];

function parseArgs(argv) {
  const o = { msiCases: 300, minutes: 1, seed: 0x5eed2026, workers: Math.max(1, cpus().length), caseTimeoutMs: 10_000, workerHeapMb: 768, out: undefined, exhaustive: false, replay: undefined, only: undefined, selftestHang: -1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--minutes') o.minutes = Number(v());
    else if (a === '--seed') o.seed = Number(v()) >>> 0;
    else if (a === '--workers') o.workers = Number(v());
    else if (a === '--case-timeout-ms') o.caseTimeoutMs = Number(v());
    else if (a === '--worker-heap-mb') o.workerHeapMb = Number(v());
    else if (a === '--out') o.out = v();
    else if (a === '--exhaustive') o.exhaustive = true;
    else if (a === '--msi-cases') o.msiCases = Number(v());
    else if (a === '--replay') o.replay = v();
    else if (a === '--only') o.only = v().split(',');
    else if (a === '--selftest-hang') o.selftestHang = Number(v()); // checks the watchdog: case N spins forever
    else if (a === '--help' || a === '-h') {
      console.log('usage: node scripts/fuzz.mjs [--minutes N] [--seed S] [--workers W] [--case-timeout-ms T] [--worker-heap-mb M] [--exhaustive] [--msi-cases N] [--only fixture,...] [--out FILE] [--replay TARGET:INDEX]');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function loadCore() {
  const dist = (p) => import(pathToFileURL(join(REPO, 'dist', p)).href);
  if (!existsSync(join(REPO, 'dist', 'verify', 'incrementalVerifier.js'))) throw new Error('dist/ missing: run `npm run build` (npm run fuzz does)');
  const [{ verifyBytes }, { emptyPolicy, fileDigestsFor }, { pinCertificateFile }] = await Promise.all([
    dist('verify/incrementalVerifier.js'), dist('verify/approvedCaPolicy.js'), dist('policy/trustMaterial.js'),
  ]);
  const lib = await import(pathToFileURL(LIB).href);
  const manifest = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8'));
  const verify = lib.makeVerify({ verifyBytes, emptyPolicy, fileDigestsFor, pinCertificateFile }, join(FIXTURES, 'pki'));
  return { lib, manifest, verify };
}

/** The deterministic case list: sweep cases (per target) then random cases, by global index. */
function* sweepCases(lib, targets, exhaustive) {
  for (let t = 0; t < targets.length; t++) {
    if (!targets[t].baseAllowed) continue; // a sweep only says something where the base verifies
    let i = 0;
    for (const m of lib.structuralMutations(targets[t])) yield { t, i: i++, m };
    if (exhaustive && targets[t].map.signature) {
      const sig = targets[t].map.signature;
      for (let at = sig.start; at < sig.end; at++) {
        for (const x of [0x01, 0x80]) {
          const b = Uint8Array.from(targets[t].bytes);
          b[at] ^= x;
          yield { t, i: i++, m: { bytes: b, op: 'exhaustive', desc: `byte ${at} ^ 0x${x.toString(16)}`, sameSize: true } };
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Worker: runs every case whose index ≡ id (mod workers), reporting in batches.

async function workerMain() {
  const { id, workers, seed, deadline, startAt, exhaustive, only, progress, selftestHang } = workerData;
  const { lib, manifest, verify } = await loadCore();
  const targets = lib.buildTargets(FIXTURES, manifest, verify, AT, { policies: POLICIES, only });
  const cur = new Int32Array(progress); // [2*id] = case index running (-1 idle), [2*id+1] = seconds since start when it began
  const t0 = Date.parse(workerData.epoch);
  const batch = [];
  let counts = { sweep: 0, random: 0 };
  const flush = (final = false) => {
    const mem = process.memoryUsage();
    parentPort.postMessage({ type: 'batch', results: batch.splice(0), counts, heap: mem.heapUsed + mem.arrayBuffers, final });
    counts = { sweep: 0, random: 0 };
  };
  let lastFlush = Date.now();
  const run = (index, fn, phase) => {
    Atomics.store(cur, 2 * id, index);
    Atomics.store(cur, 2 * id + 1, Math.floor((Date.now() - t0) / 100));
    if (index === selftestHang) for (;;) { /* the watchdog must catch this */ }
    const r = fn();
    Atomics.store(cur, 2 * id, -1);
    counts[phase]++;
    if (r.outcome !== 'block' && r.outcome !== 'noop') batch.push(r);
    else if (r.ms > 250) batch.push({ ...r, slow: true });
    if (Date.now() - lastFlush > 1000) { flush(); lastFlush = Date.now(); }
  };
  // Sweep (global index space 0..S-1), then random (S..).
  let g = 0;
  for (const c of sweepCases(lib, targets, exhaustive)) {
    if (Date.now() > deadline) break;
    if (g >= startAt && g % workers === id) run(g, () => lib.judge(targets[c.t], c.m, seed, c.i, verify), 'sweep');
    g++;
  }
  const sweepTotal = g;
  for (let k = Math.max(startAt, sweepTotal); Date.now() < deadline; k++) {
    if (k % workers !== id) continue;
    const t = targets[(k - sweepTotal) % targets.length];
    run(k, () => lib.runCase(t, seed, k, verify), 'random');
  }
  flush(true);
}

// ---------------------------------------------------------------------------------------------
// Main: workers, watchdog, memory sampling, report.

async function replay(o) {
  const { lib, manifest, verify } = await loadCore();
  const [name, idx] = o.replay.split(/:(?=\d+$)/);
  const targets = lib.buildTargets(FIXTURES, manifest, verify, AT, { policies: POLICIES });
  const index = Number(idx);
  let i = 0;
  for (const c of sweepCases(lib, targets, o.exhaustive)) {
    if (i++ === index) { console.log(JSON.stringify(lib.judge(targets[c.t], c.m, o.seed, c.i, verify), null, 2)); return; }
  }
  const t = targets.find((x) => x.name === name) ?? targets[(index - i) % targets.length];
  console.log(JSON.stringify(lib.runCase(t, o.seed, index, verify), null, 2));
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.replay) return replay(o);
  const started = Date.now();
  const deadline = started + o.minutes * 60_000;
  const progress = new SharedArrayBuffer(8 * o.workers);
  const cur = new Int32Array(progress);
  cur.fill(-1);
  const epoch = new Date(started).toISOString();
  const totals = { sweep: 0, random: 0 };
  const notable = [];
  const hangs = [];
  const crashes = [];
  let peakRss = 0;
  let peakHeap = 0;
  const rssSamples = [];
  const lib = await import(pathToFileURL(LIB).href);
  const log = (s) => process.stderr.write(s + '\n');
  log(`fuzz: ${o.workers} worker(s), seed 0x${o.seed.toString(16)}, ${o.minutes} min, case timeout ${o.caseTimeoutMs} ms, worker heap ${o.workerHeapMb} MB${o.exhaustive ? ', exhaustive sweep' : ''}`);

  const live = new Map();
  const spawn = (id, startAt) => new Promise((resolveDone) => {
    const w = new Worker(fileURLToPath(import.meta.url), {
      workerData: { id, workers: o.workers, seed: o.seed, deadline, startAt, exhaustive: o.exhaustive, only: o.only, progress, epoch, selftestHang: o.selftestHang },
      resourceLimits: { maxOldGenerationSizeMb: o.workerHeapMb },
    });
    const state = { w, done: false, terminated: false, resolveDone };
    live.set(id, state);
    w.on('message', (m) => {
      if (m.type !== 'batch') return;
      totals.sweep += m.counts.sweep;
      totals.random += m.counts.random;
      peakHeap = Math.max(peakHeap, m.heap);
      for (const r of m.results) {
        if (r.outcome === 'crash') crashes.push(r);
        notable.push(r);
      }
    });
    w.on('error', (err) => {
      const index = Atomics.load(cur, 2 * id);
      crashes.push({ outcome: 'crash', index, error: `worker ${id} died: ${err?.code ?? ''} ${err?.message ?? err}` });
      log(`fuzz: worker ${id} died at case ${index}: ${err?.message ?? err}`);
    });
    w.on('exit', () => {
      if (state.terminated || Date.now() >= deadline) { state.done = true; resolveDone(); return; }
      // Died without being told to (crash / out of memory): replace it after the case that killed it.
      const index = Atomics.load(cur, 2 * id);
      state.done = true;
      if (Date.now() < deadline) spawn(id, index >= 0 ? index + 1 : 0).then(resolveDone);
      else resolveDone();
    });
  });

  const runs = [];
  for (let id = 0; id < o.workers; id++) runs.push(spawn(id, 0));

  const watchdog = setInterval(() => {
    const rss = process.memoryUsage().rss;
    peakRss = Math.max(peakRss, rss);
    rssSamples.push(rss);
    const now = Math.floor((Date.now() - started) / 100);
    for (const [id, state] of live) {
      const index = Atomics.load(cur, 2 * id);
      if (index < 0 || state.done || state.terminated) continue;
      const since = Atomics.load(cur, 2 * id + 1);
      if ((now - since) * 100 > o.caseTimeoutMs) {
        hangs.push({ outcome: 'hang', index, worker: id, ms: (now - since) * 100 });
        log(`fuzz: case ${index} on worker ${id} ran ${(now - since) * 100} ms: hang; replacing the worker`);
        state.terminated = true;
        Atomics.store(cur, 2 * id, -1);
        state.w.terminate().then(() => { if (Date.now() < deadline) spawn(id, index + 1).then(state.resolveDone); else state.resolveDone(); });
      }
    }
    const done = totals.sweep + totals.random;
    if (Math.floor((Date.now() - started) / 1000) % 15 === 0) log(`fuzz: ${Math.round((Date.now() - started) / 1000)} s, ${done} cases (${totals.sweep} sweep, ${totals.random} random), rss ${(rss / 2 ** 20).toFixed(0)} MB`);
  }, 1000);

  await Promise.all(runs);
  clearInterval(watchdog);
  const msi = await msiPhase(o, log);

  const falseAccepts = notable.filter((r) => r.outcome === 'false-accept');
  const closer = lib.groupCloser(notable);
  const slow = notable.filter((r) => r.slow || (r.ms ?? 0) > 250).sort((a, b) => b.ms - a.ms).slice(0, 10);
  const maxMs = Math.max(0, ...notable.map((r) => r.ms ?? 0));
  const faByElement = new Map();
  for (const r of falseAccepts) {
    const key = (r.where ?? []).join('; ').replace(/@\d+: /g, '').replace(/, element at \d+\.\.\d+/g, '');
    const e = faByElement.get(key) ?? { element: key, count: 0, targets: new Set(), example: `${r.target} #${r.index}: ${r.desc}` };
    e.count++;
    e.targets.add(r.target.replace(/:.*$/, ''));
    faByElement.set(key, e);
  }
  const memoryBreach = crashes.some((c) => /ERR_WORKER_OUT_OF_MEMORY|heap/i.test(c.error ?? ''));
  const report = {
    seed: o.seed, minutes: o.minutes, workers: o.workers, elapsedS: Math.round((Date.now() - started) / 1000),
    cases: totals.sweep + totals.random, sweepCases: totals.sweep, randomCases: totals.random,
    crashes: crashes.length, hangs: hangs.length, falseAccepts: falseAccepts.length, memoryBreach,
    peakRssMB: Math.round(peakRss / 2 ** 20), peakWorkerHeapMB: Math.round(peakHeap / 2 ** 20),
    rssFirstMB: Math.round((rssSamples[0] ?? 0) / 2 ** 20), rssLastMB: Math.round((rssSamples[rssSamples.length - 1] ?? 0) / 2 ** 20),
    slowestCases: slow.map((r) => ({ target: r.target, index: r.index, desc: r.desc, ms: Math.round(r.ms) })),
    falseAcceptsByElement: [...faByElement.values()].map((e) => ({ ...e, targets: [...e.targets] })),
    closerLook: closer,
    crashList: crashes.slice(0, 50), hangList: hangs,
    msi,
  };
  const out = o.out ?? join(tmpdir(), `patchgate-fuzz-${Date.now()}.json`);
  writeFileSync(out, JSON.stringify(report, null, 2));
  const line = (s) => process.stdout.write(s + '\n');
  line(`fuzz: ${report.cases} cases in ${report.elapsedS} s (${report.sweepCases} sweep, ${report.randomCases} random), ${o.workers} worker(s), seed 0x${o.seed.toString(16)}`);
  line(`  crashes ${report.crashes}, hangs ${report.hangs}, false accepts ${report.falseAccepts}${memoryBreach ? ', MEMORY BOUND BREACHED' : ''}`);
  line(`  slowest reported case ${Math.round(maxMs)} ms; peak RSS ${report.peakRssMB} MB (first ${report.rssFirstMB}, last ${report.rssLastMB}); peak worker heap ${report.peakWorkerHeapMB} MB`);
  if (report.falseAcceptsByElement.length) {
    line('  false accepts, by element (allowed after a change in bytes the signature does not cover):');
    for (const e of report.falseAcceptsByElement) line(`    ${e.count}x ${e.element}  [${e.targets.join(', ')}]\n       e.g. ${e.example}`);
  }
  if (closer.length) {
    line(`  closer look (allowed after a change in legitimately unsigned bytes): ${closer.length} groups`);
    for (const gr of closer.slice(0, 25)) line(`    ${gr.count}x ${gr.key}\n       e.g. ${gr.examples[0]}`);
  }
  for (const c of crashes.slice(0, 10)) line(`  crash: ${c.target ?? ''} #${c.index} ${c.desc ?? ''}\n    ${String(c.error).split('\n').slice(0, 3).join('\n    ')}`);
  for (const h of hangs.slice(0, 10)) line(`  hang: case #${h.index} (worker ${h.worker}), replay with --replay X:${h.index}`);
  line(`  MSI: ${msi.cases} cases ${JSON.stringify(msi.tally)}, slowest ${msi.maxMs} ms`);
  for (const r of msi.notable.slice(0, 10)) line(`    ${r.outcome}: ${r.target} #${r.index} ${r.desc} ${r.error ? String(r.error).split('\n')[0] : ''}`);
  line(`  report: ${out}`);
  const msiBad = (msi.tally.crash ?? 0) + (msi.tally['false-accept'] ?? 0) + (msi.tally.hang ?? 0);
  process.exitCode = report.crashes || report.hangs || report.falseAccepts || memoryBreach || msiBad ? 1 : 0;
}

/**
 * MSI/MSP and APPX phase (test/fuzz/lib/msiFuzz.mjs), in this thread after the workers: the MSI verifier is
 * asynchronous (random access), and every allowed mutant is checked with osslsigncode.
 */
async function msiPhase(o, log) {
  const { msiLayout, zipLayout, runMsiCase } = await import(pathToFileURL(join(REPO, 'test', 'fuzz', 'lib', 'msiFuzz.mjs')).href);
  const dist = (p) => import(pathToFileURL(join(REPO, 'dist', p)).href);
  const [{ verifyBuffer }, { emptyPolicy, fileDigestsFor }, { pinCertificateFile }] = await Promise.all([
    dist('verify/incrementalVerifier.js'), dist('verify/approvedCaPolicy.js'), dist('policy/trustMaterial.js'),
  ]);
  const manifest = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8'));
  const policy = emptyPolicy({ anchors: pinCertificateFile(join(FIXTURES, 'pki', 'updateca.pem')), tsaAnchors: pinCertificateFile(join(FIXTURES, 'pki', 'tsaroot.pem')), fileDigests: fileDigestsFor(false) });
  const verify = (b) => verifyBuffer(b, policy, { now: AT });
  const targets = Object.entries(manifest.randomAccessFixtures ?? {}).filter(([n]) => /^good|^nested-good/.test(n) && !/big/.test(n)).map(([name, f]) => {
    const bytes = readFileSync(join(FIXTURES, f.file));
    return { name, bytes, layout: f.format === 'msix' ? zipLayout(bytes) : msiLayout(bytes) };
  });
  const tally = {};
  const notable = [];
  let maxMs = 0;
  for (let i = 0; i < o.msiCases && targets.length; i++) {
    const t = targets[i % targets.length];
    let timer;
    const hang = new Promise((resolve) => { timer = setTimeout(() => resolve({ target: t.name, index: i, desc: 'timed out', outcome: 'hang', codes: [], ms: o.caseTimeoutMs }), o.caseTimeoutMs); });
    const r = await Promise.race([runMsiCase(t, o.seed, i, verify), hang]);
    clearTimeout(timer);
    tally[r.outcome] = (tally[r.outcome] ?? 0) + 1;
    maxMs = Math.max(maxMs, Math.round(r.ms));
    if (!['block', 'allow-agreed', 'noop'].includes(r.outcome)) notable.push(r);
  }
  log(`fuzz: MSI ${o.msiCases} cases ${JSON.stringify(tally)}`);
  return { cases: o.msiCases, tally, maxMs, notable };
}

if (isMainThread) {
  main().catch((err) => { console.error(err); process.exit(2); });
} else {
  workerMain().catch((err) => { parentPort.postMessage({ type: 'batch', results: [{ outcome: 'crash', error: String(err?.stack ?? err) }], counts: { sweep: 0, random: 0 }, heap: 0 }); throw err; });
}
