#!/usr/bin/env node
// Soak test of the gate: `npm run soak -- --minutes N [--clients C]`. Not a CI test.
//
// The gate runs as a child process (`node bin/patchgate.js run`, so that its RSS, open fds and
// spool are its own) in front of origins in this process (HTTP and HTTPS, 127.0.0.1 only). C
// clients loop until the time is up, each picking a scenario by weight: allowed, blocked and
// passed-through, HTTP and intercepted HTTPS and blind tunnels, small (fixtures) and large
// (synthetic signed PEs of several MiB, some tampered), with some clients disconnecting
// mid-transfer (after part of an allowed body, or while their payload is still held).
//
// Every second it samples the gate's RSS (/proc/PID/status), open fds (/proc/PID/fd), spool
// bytes (files under --spool-dir) and, through a probe preloaded into the gate
// (scripts/lib/soak-probe.mjs, over IPC), process.memoryUsage(): heapUsed, heapTotal, external,
// arrayBuffers. Before and after the load it forces a full GC in the gate and records what
// survives, and where the resident memory is (/proc/PID/smaps: C heap, anonymous, files).
// At the end it stops the gate (SIGTERM), counts the audit lines, and prints: transfers by
// scenario and verdict; audit transfer records against inspected transfers (must be equal);
// blocks whose body reached a client (must be zero); RSS, fds and spool min/max/trend; whether
// RSS levelled off (second-half peak against first-half peak); a per-minute table. Everything
// goes to a JSON file (--out). Exit code 1 if an invariant failed. Nothing leaves 127.0.0.1.
import { spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, statSync, existsSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const FIX = join(REPO, 'test', 'fixtures', 'out');
const MiB = 1024 * 1024;
const argv = process.argv.slice(2);
const opt = (f, d) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : d; };
if (argv.includes('--help')) {
  console.log('usage: node scripts/soak.mjs [--minutes N] [--clients C] [--large-mib M] [--cache-ttl-ms MS] [--memory-hold-kib K] [--keep] [--out FILE] [--heap-snapshots DIR] [--malloc-trim]');
  process.exit(0);
}
const MINUTES = Number(opt('--minutes', '2'));
const CLIENTS = Number(opt('--clients', String(Math.max(16, cpus().length * 12))));
const LARGE = Number(opt('--large-mib', '12')) * MiB;
const KEEP = argv.includes('--keep');
// The gate's cache of verified entities and its per-hold memory (the defaults of `patchgate run`
// are 60000 ms and 2048 KiB; the soak's shorter TTL keeps the disk spool of cached large payloads small).
const CACHE_TTL_MS = Number(opt('--cache-ttl-ms', '2000'));
const HOLD_KIB = Number(opt('--memory-hold-kib', '256'));
// Heap snapshots of the gate (idle before the load, at a third and at the end of the load, idle
// after it), to compare with scripts/lib/heap-diff.mjs. Each one stalls the gate for seconds and
// costs native memory: for leak hunting, not for the RSS figures.
const SNAP_DIR = opt('--heap-snapshots', undefined);
const log = (s) => process.stderr.write(`soak: ${s}\n`);
const dist = (p) => import(pathToFileURL(join(REPO, 'dist', p)).href);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Material: fixtures, synthetic large payloads, origin certificate, rules

const { createSyntheticSignedPe } = await dist('lab/syntheticPe.js');
const { issueCertificate } = await dist('pki/certificateFactory.js');
const good = readFileSync(join(FIX, 'good.exe'));
const flame = readFileSync(join(FIX, 'flame.exe'));
const tampered = readFileSync(join(FIX, 'tampered.exe'));
const FLAME_MARK = flame.subarray(4700, 4800); // inside flame.exe's own certificate bag
if (good.includes(FLAME_MARK)) throw new Error('flame marker not unique');
const signer = {
  signerCertDer: new Uint8Array(new X509Certificate(readFileSync(join(FIX, 'pki', 'publisher.pem'))).raw),
  signerKey: createPrivateKey(readFileSync(join(FIX, 'pki', 'publisher.key'))),
  extraCertsDer: [new Uint8Array(new X509Certificate(readFileSync(join(FIX, 'pki', 'updateca.pem'))).raw)],
};
function synthetic(size, seed, tamper = false) {
  const probe = createSyntheticSignedPe({ size, signer, seed });
  const pe = tamper ? createSyntheticSignedPe({ size, signer, seed, corruptByteAt: probe.textOffset + 12345 }) : probe;
  const h = createHash('sha256');
  let first;
  for (const c of pe.chunks()) { h.update(c); first ??= Buffer.from(c); }
  // A marker from inside .text (past the headers every PE shares): seeing it in a block page would be a leak.
  return { pe, sha256: h.digest('hex'), size: pe.totalSize, mark: first.subarray(pe.textOffset + 4096, pe.textOffset + 4196) };
}
const bigGood = synthetic(LARGE, 11);
const bigBad = synthetic(LARGE, 12, true);
const bigBadPe = bigBad.pe;
const mediumGood = synthetic(3 * MiB, 13);

const work = mkdtempSync(join(tmpdir(), 'patchgate-soak-'));
const caDir = join(work, 'ca');
const spoolBase = join(work, 'spool');
const auditFile = join(work, 'audit.jsonl');
const originCert = issueCertificate({
  subject: { O: 'patchgate soak origin', CN: 'localhost' }, key: { type: 'ec', namedCurve: 'P-256' },
  extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['serverAuth'] }, subjectAltName: { dns: ['localhost'], ip: ['127.0.0.1'] } },
});
writeFileSync(join(work, 'origin-ca.pem'), originCert.pem);
writeFileSync(join(work, 'rules.yaml'), [
  'version: 1',
  'anchors:',
  `  - file: ${join(FIX, 'pki', 'updateca.pem')}`,
  'tsaAnchors:',
  `  - file: ${join(FIX, 'pki', 'tsaroot.pem')}`,
  'limits:',
  `  maxPayloadBytes: ${256 * MiB}`,
  '  upstreamIdleTimeoutMs: 10000',
  '  totalTimeoutMs: 120000',
  `  memoryHoldBytes: ${HOLD_KIB * 1024}`,
  `  cacheTtlMs: ${CACHE_TTL_MS}`,
  'hosts:',
  '  - pattern: "127.0.0.1"',
  '    mode: inspect',
  'nonPayload: pass',
  '',
].join('\n'));

// ---------------------------------------------------------------------------------------------
// Origins (this process): what each path serves

const originHits = new Map();
function route(req, res) {
  const path = (req.url ?? '/').split('?')[0];
  const key = req.url ?? '/';
  originHits.set(key, (originHits.get(key) ?? 0) + 1);
  const sendBuf = (b, type = 'application/octet-stream') => { res.writeHead(200, { 'content-type': type, 'content-length': b.length }); res.end(b); };
  const sendPe = (pe) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': pe.totalSize });
    const it = pe.chunks()[Symbol.iterator]();
    const pump = () => {
      for (;;) {
        const n = it.next();
        if (n.done) return res.end();
        if (!res.write(n.value)) return res.once('drain', pump);
      }
    };
    res.on('error', () => {});
    pump();
  };
  req.resume();
  switch (path) {
    case '/good.exe': return sendBuf(good);
    case '/flame.exe': return sendBuf(flame);
    case '/tampered.exe': return sendBuf(tampered);
    case '/big.exe': return sendPe(bigGood.pe);
    case '/bigbad.exe': return sendPe(bigBadPe);
    case '/medium.exe': return sendPe(mediumGood.pe);
    case '/meta.xml': return sendBuf(Buffer.from('<metadata>not a payload</metadata>'), 'text/xml');
    default: res.writeHead(404, { 'content-length': 0 }); res.end();
  }
}
const originSockets = new Set();
const track = (s) => { originSockets.add(s); s.on('close', () => originSockets.delete(s)); };
const httpOrigin = http.createServer(route);
const httpsOrigin = https.createServer({ key: originCert.keyPem, cert: originCert.pem }, route);
httpOrigin.on('connection', track);
httpsOrigin.on('connection', track);
httpOrigin.keepAliveTimeout = 2000;
httpsOrigin.keepAliveTimeout = 2000;
await Promise.all([httpOrigin, httpsOrigin].map((s) => new Promise((r) => s.listen(0, '127.0.0.1', r))));
const HP = httpOrigin.address().port;
const SP = httpsOrigin.address().port;

// ---------------------------------------------------------------------------------------------
// The gate, as a child process

const gateErr = createWriteStream(join(work, 'gate.stderr.log'));
const gate = spawn(process.execPath, ['--import', pathToFileURL(join(REPO, 'scripts', 'lib', 'soak-probe.mjs')).href, join(REPO, 'bin', 'patchgate.js'), 'run', '--rules', join(work, 'rules.yaml'), '--listen', '127.0.0.1:0', '--admin', 'off',
  '--audit', auditFile, '--ca-dir', caDir, '--spool-dir', spoolBase, '--upstream-ca', join(work, 'origin-ca.pem')], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
gate.stdout.resume();
const GP = await new Promise((resolve, reject) => {
  let buf = '';
  const t = setTimeout(() => reject(new Error(`the gate did not start: ${buf}`)), 30_000);
  gate.stderr.on('data', (d) => {
    gateErr.write(d);
    buf += d.toString();
    const m = /gating update downloads on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf);
    if (m) { clearTimeout(t); resolve(Number(m[1])); }
  });
  gate.once('exit', (code) => reject(new Error(`the gate exited (${code}): ${buf}`)));
});
const gateCa = readFileSync(join(caDir, 'ca.pem'), 'utf8');
log(`gate pid ${gate.pid} on 127.0.0.1:${GP}; origins http ${HP}, https ${SP}; ${CLIENTS} clients for ${MINUTES} min; large payloads ${(LARGE / MiB).toFixed(0)} MiB; cache TTL ${CACHE_TTL_MS} ms, memory hold ${HOLD_KIB} KiB; work dir ${work}`);

// ---------------------------------------------------------------------------------------------
// Sampling

const samples = [];
function spoolBytes() {
  let total = 0;
  const walk = (d) => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      try { if (e.isDirectory()) walk(p); else total += statSync(p).size; } catch { /* removed meanwhile */ }
    }
  };
  walk(spoolBase);
  return total;
}
// The probe preloaded into the gate (scripts/lib/soak-probe.mjs) answers over IPC.
let probeSeq = 0;
const probeWaiting = new Map();
gate.on('message', (m) => { const w = probeWaiting.get(m?.seq); if (w) { probeWaiting.delete(m.seq); w(m); } });
function probe(msg, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const seq = ++probeSeq;
    const t = setTimeout(() => { probeWaiting.delete(seq); resolve(undefined); }, timeoutMs);
    probeWaiting.set(seq, (m) => { clearTimeout(t); resolve(m); });
    try { gate.send({ ...msg, seq }); } catch { clearTimeout(t); probeWaiting.delete(seq); resolve(undefined); }
  });
}
const r1 = (x) => (x === undefined || !Number.isFinite(x) ? undefined : Math.round(x * 10) / 10);
const mb = (x) => (x === undefined ? undefined : r1(x / MiB));
const readRss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${gate.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
/** Where the gate's resident memory is (kB), by kind of mapping: the C heap, anonymous mappings (V8's heap, malloc arenas, big buffers), files. */
function smapsBreakdown() {
  const out = { heap: 0, anon: 0, file: 0, stack: 0, other: 0, anonMappingsOver1M: 0 };
  let kind = 'other';
  let size = 0;
  for (const line of readFileSync(`/proc/${gate.pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const name = m[1].trim();
      kind = name === '[heap]' ? 'heap' : name === '' ? 'anon' : name === '[stack]' ? 'stack' : name.startsWith('/') ? 'file' : 'other';
      continue;
    }
    const r = /^Rss:\s+(\d+) kB/.exec(line);
    if (r) { size = Number(r[1]); out[kind] += size; if (kind === 'anon' && size > 1024) out.anonMappingsOver1M++; }
  }
  return out;
}
let sampling = false;
let phase = 'start'; // 'start' (idle, before the load), 'load', 'drain' (past the deadline, clients finishing), 'idle' (after)
let transfersSoFar = 0;
async function sample({ gc = false } = {}) {
  if (sampling && !gc) return undefined;
  sampling = true;
  try {
    const rss = readRss();
    const fds = readdirSync(`/proc/${gate.pid}/fd`).length;
    const s = { t: Date.now(), phase, transfers: transfersSoFar, rss, fds, spool: spoolBytes() };
    const m = await probe({ op: 'mem', gc }, gc ? 30_000 : 2000);
    if (gc) s.rss = readRss(); // after the collection
    if (m?.mem) Object.assign(s, { heapUsed: m.mem.heapUsed, heapTotal: m.mem.heapTotal, external: m.mem.external, arrayBuffers: m.mem.arrayBuffers, handles: m.resources });
    if (gc) s.afterGc = true;
    samples.push(s);
    return s;
  } catch { return undefined; /* the gate is gone */ } finally { sampling = false; }
}
const sampler = setInterval(() => void sample(), 1000);
await sample();
const startGc = await sample({ gc: true });
const startSmaps = (() => { try { return smapsBreakdown(); } catch { return undefined; } })();
const snapshots = [];
async function snapshot(label) {
  if (!SNAP_DIR) return;
  const m = await probe({ op: 'snapshot', file: join(SNAP_DIR, `gate-${label}.heapsnapshot`) }, 120_000);
  log(`heap snapshot ${label}: ${m?.file ?? m?.error ?? 'no answer'}`);
  if (m?.file) snapshots.push({ label, file: m.file, t: Date.now() });
}
await snapshot('1-idle-start');

// ---------------------------------------------------------------------------------------------
// Clients

/** One request through the gate: absolute-form HTTP, or CONNECT (+TLS) then the request. */
function request({ via, host, port, path, abortAfterBytes, abortWhenOriginSaw }) {
  return new Promise((resolve) => {
    const out = { status: 0, bytes: 0, hash: createHash('sha256'), chunks: [], kept: 0, error: undefined, aborted: false, headers: {} };
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(watch);
      resolve({ status: out.status, headers: out.headers, bytes: out.bytes, sha256: out.hash.digest('hex'), head: Buffer.concat(out.chunks), error, aborted: out.aborted });
    };
    const timer = setTimeout(() => { kill(); finish('client timeout'); }, 180_000);
    let kill = () => {};
    let watch;
    const onResponse = (res) => {
      out.status = res.statusCode ?? 0;
      out.headers = res.headers;
      res.on('data', (d) => {
        out.bytes += d.length;
        out.hash.update(d);
        if (out.kept < 8192) { out.chunks.push(d); out.kept += d.length; }
        else if (d.includes(FLAME_MARK)) out.chunks.push(d.subarray(0, 8192)); // keep evidence
        if (abortAfterBytes !== undefined && out.bytes >= abortAfterBytes && !out.aborted) { out.aborted = true; kill(); finish(); }
      });
      res.on('end', () => finish());
      res.on('error', (e) => finish(e.message));
      res.on('close', () => finish(res.complete ? undefined : 'response cut'));
    };
    const absolute = via === 'http' ? `http://${host}:${port}${path}` : undefined;
    if (abortWhenOriginSaw) {
      watch = setInterval(() => { if ((originHits.get(path) ?? 0) > 0 && !out.status && !out.aborted) { out.aborted = true; kill(); finish(); } }, 5);
    }
    if (via === 'http') {
      const req = http.request({ host: '127.0.0.1', port: GP, method: 'GET', path: absolute, headers: { host: `${host}:${port}` }, agent: false });
      kill = () => req.destroy();
      req.on('response', onResponse);
      req.on('error', (e) => finish(e.message));
      req.end();
      return;
    }
    // CONNECT, then TLS: intercepted (update host, gate CA) or tunnelled (other host, origin CA).
    const c = http.request({ host: '127.0.0.1', port: GP, method: 'CONNECT', path: `${host}:${port}`, headers: { host: `${host}:${port}` }, agent: false });
    kill = () => c.destroy();
    c.on('error', (e) => finish(e.message));
    c.on('response', (res) => { out.status = res.statusCode ?? 0; res.resume(); finish(`CONNECT refused ${res.statusCode}`); });
    c.on('connect', (res, socket) => {
      if (res.statusCode !== 200) { socket.destroy(); return finish(`CONNECT ${res.statusCode}`); }
      const t = tls.connect({ socket, ca: via === 'tunnel' ? originCert.pem : gateCa, servername: net.isIP(host) ? undefined : host, host });
      kill = () => t.destroy();
      t.on('error', (e) => finish(e.message));
      t.once('secureConnect', () => {
        const req = http.request({ method: 'GET', path, headers: { host: `${host}:${port}` }, createConnection: () => t });
        kill = () => { req.destroy(); t.destroy(); };
        req.on('response', (r) => { onResponse(r); r.on('close', () => t.destroy()); });
        req.on('error', (e) => finish(e.message));
        req.end();
      });
    });
    c.end();
  });
}

let seq = 0;
const uniq = (p) => `${p}?n=${++seq}`;
const hot = (p) => `${p}?hot=${seq % 7}`; // a few URLs shared by concurrent clients (shared downloads, verified copies)
// [name, weight, inspected, expect, build]
const SCENARIOS = [
  ['http small allow', 22, true, 'allow', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: Math.random() < 0.3 ? hot('/good.exe') : uniq('/good.exe'), sha256: sha(good) })],
  ['http small block (forged)', 10, true, 'block', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/flame.exe'), mark: FLAME_MARK })],
  ['http small block (tampered)', 6, true, 'block', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/tampered.exe') })],
  ['http large allow', 6, true, 'allow', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: Math.random() < 0.3 ? hot('/big.exe') : uniq('/big.exe'), sha256: bigGood.sha256 })],
  ['http large block (tampered)', 4, true, 'block', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/bigbad.exe'), mark: bigBad.mark })],
  ['http metadata pass', 8, true, 'pass', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/meta.xml') })],
  ['http other host (passed)', 8, false, 'passed', () => ({ via: 'http', host: 'localhost', port: HP, path: uniq('/good.exe'), sha256: sha(good) })],
  ['https small allow', 10, true, 'allow', () => ({ via: 'https', host: '127.0.0.1', port: SP, path: uniq('/good.exe'), sha256: sha(good) })],
  ['https small block (forged)', 6, true, 'block', () => ({ via: 'https', host: '127.0.0.1', port: SP, path: uniq('/flame.exe'), mark: FLAME_MARK })],
  ['https medium allow', 3, true, 'allow', () => ({ via: 'https', host: '127.0.0.1', port: SP, path: uniq('/medium.exe'), sha256: mediumGood.sha256 })],
  ['https other host (tunnel)', 5, false, 'passed', () => ({ via: 'tunnel', host: 'localhost', port: SP, path: uniq('/good.exe'), sha256: sha(good) })],
  ['abort mid-body (allowed, large)', 5, true, 'aborted', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/big.exe'), abortAfterBytes: 1 * MiB })],
  ['abort while held (large)', 5, true, 'aborted', () => ({ via: 'http', host: '127.0.0.1', port: HP, path: uniq('/big.exe'), abortWhenOriginSaw: true })],
];
const totalWeight = SCENARIOS.reduce((a, s) => a + s[1], 0);
const pick = () => { let r = Math.random() * totalWeight; for (const s of SCENARIOS) { r -= s[1]; if (r < 0) return s; } return SCENARIOS[0]; };

const stats = new Map(SCENARIOS.map((s) => [s[0], { n: 0, ok: 0, unexpected: 0, bytes: 0, statuses: {}, errors: {} }]));
const problems = [];
let inspectedTransfers = 0;
let blockedLeaks = 0;
let bytesToClients = 0;

async function clientLoop(deadline) {
  while (Date.now() < deadline) {
    const [name, , inspected, expect, build] = pick();
    const spec = build();
    const r = await request(spec);
    const st = stats.get(name);
    st.n++;
    transfersSoFar++;
    st.statuses[r.status] = (st.statuses[r.status] ?? 0) + 1;
    if (r.error && !r.aborted) st.errors[r.error] = (st.errors[r.error] ?? 0) + 1;
    st.bytes += r.bytes;
    bytesToClients += r.bytes;
    if (inspected && (r.status !== 0 || r.aborted)) inspectedTransfers++;
    let ok = false;
    if (expect === 'allow' || expect === 'passed') ok = r.status === 200 && r.sha256 === spec.sha256 && !r.error;
    else if (expect === 'pass') ok = r.status === 200 && r.head.toString().includes('<metadata>');
    else if (expect === 'aborted') ok = r.aborted || r.status === 200;
    else if (expect === 'block') {
      ok = r.status === 403 && r.headers['x-patchgate-verdict'] === 'block';
      const leaked = r.status === 200 || r.bytes > 4096 || (spec.mark && r.head.includes(spec.mark));
      if (leaked) { blockedLeaks++; problems.push(`${name} ${spec.path}: a blocked body reached the client (status ${r.status}, ${r.bytes} bytes)`); }
    }
    if (ok) st.ok++;
    else { st.unexpected++; if (problems.length < 40) problems.push(`${name} ${spec.path}: status ${r.status}, ${r.bytes} bytes${r.error ? `, ${r.error}` : ''}`); }
  }
}

const started = Date.now();
phase = 'load';
const deadline = started + MINUTES * 60_000;
const progress = setInterval(() => {
  const s = samples[samples.length - 1];
  const n = [...stats.values()].reduce((a, x) => a + x.n, 0);
  log(`${Math.round((Date.now() - started) / 1000)} s: ${n} transfers, gate rss ${(s?.rss / MiB).toFixed(0)} MB (heap ${(s?.heapUsed / MiB).toFixed(0)}/${(s?.heapTotal / MiB).toFixed(0)}, external ${(s?.external / MiB).toFixed(0)}, arrayBuffers ${(s?.arrayBuffers / MiB).toFixed(0)}), fds ${s?.fds}, spool ${(s?.spool / MiB).toFixed(1)} MB`);
}, 15_000);
const drainTimer = setTimeout(() => { phase = 'drain'; }, deadline - Date.now()); // clients finish the transfer they are in
const snapTimers = SNAP_DIR ? [setTimeout(() => void snapshot('2-load-third'), (deadline - started) / 3), setTimeout(() => void snapshot('3-load-end'), deadline - started - 1000)] : [];
await Promise.all(Array.from({ length: CLIENTS }, () => clientLoop(deadline)));
snapTimers.forEach(clearTimeout);
clearTimeout(drainTimer);
clearInterval(progress);
const elapsed = (Date.now() - started) / 1000;

// Quiesce: let the gate finish writing and its cache expire, then sample the idle state and stop it.
clearInterval(sampler);
phase = 'idle';
await sleep(Math.max(3000, CACHE_TTL_MS + 1000));
const idle = await sample();
const idleGc = await sample({ gc: true });
await snapshot('4-idle-end');
const idleSmaps = (() => { try { return smapsBreakdown(); } catch { return undefined; } })();
// --malloc-trim: ask glibc (through gdb, if installed) to return the free memory it keeps to the
// system. What RSS drops by was free memory held by the allocator, not live memory of the gate.
let trimmed;
if (argv.includes('--malloc-trim')) {
  const { spawnSync } = await import('node:child_process');
  const t0 = Date.now();
  const r = spawnSync('gdb', ['-p', String(gate.pid), '-batch', '-nx', '-iex', 'set auto-load off', '-ex', 'call (int) malloc_trim(0)', '-ex', 'detach'], { encoding: 'utf8', timeout: 120_000 });
  const ok = r.status === 0 && /\$1 = 1/.test(r.stdout ?? '');
  await sleep(500);
  const s = await sample();
  trimmed = ok && s ? { rssMB: mb(s.rss), smapsKB: (() => { try { return smapsBreakdown(); } catch { return undefined; } })(), gdbMs: Date.now() - t0 } : { error: (r.error?.message ?? r.stderr ?? r.stdout ?? 'gdb failed').slice(-300) };
  log(`malloc_trim: ${JSON.stringify(trimmed)}`);
}
gate.kill('SIGTERM');
const exitCode = await new Promise((r) => { gate.once('exit', (code, sig) => r(code ?? sig)); setTimeout(() => { gate.kill('SIGKILL'); r('killed after 15 s'); }, 15_000); });
httpOrigin.closeAllConnections?.();
httpsOrigin.closeAllConnections?.();
for (const s of originSockets) s.destroy();
httpOrigin.close();
httpsOrigin.close();

// ---------------------------------------------------------------------------------------------
// Report

const lines = existsSync(auditFile) ? readFileSync(auditFile, 'utf8').split('\n').filter((l) => l.trim()) : [];
const records = lines.map((l) => { try { return JSON.parse(l); } catch { return { kind: 'unparsable' }; } });
const transfers = records.filter((r) => r.kind === 'transfer');
const byVerdict = {};
const byServed = {};
for (const r of transfers) { byVerdict[r.verdict] = (byVerdict[r.verdict] ?? 0) + 1; byServed[r.served] = (byServed[r.served] ?? 0) + 1; }
const spoolLeft = existsSync(spoolBase) ? readdirSync(spoolBase).length : 0;
// Figures over the load only (the idle samples before and after are reported on their own).
const load = samples.filter((x) => x.phase === 'load' && !x.afterGc);
const slope = (xsT, ys) => {
  if (ys.length < 3) return 0;
  const t0 = xsT[0];
  const xs = xsT.map((t) => (t - t0) / 60_000);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0);
  const den = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  return den ? num / den : 0;
};
const trend = (key, part = load) => slope(part.map((x) => x.t), part.map((x) => x[key]));
const mm = (key, div = 1, part = load) => {
  const v = part.map((x) => x[key] / div).filter((x) => Number.isFinite(x));
  return { min: Math.min(...v), max: Math.max(...v), first: v[0], last: v[v.length - 1] };
};
const rss = mm('rss', MiB);
const fds = mm('fds');
const spool = mm('spool', MiB);
// Did RSS level off? Compare the two halves of the load (by time): the second half's peak against
// the first's, and the slope over the second half. Levelled off = the second half's peak is within
// 5% of the first's (growth that stops early in the run, e.g. while the allocator and V8 warm up,
// is a plateau; growth that continues into the second half is not).
const mid = started + (Math.max(...load.map((x) => x.t)) - started) / 2;
const half1 = load.filter((x) => x.t < mid);
const half2 = load.filter((x) => x.t >= mid);
const max1 = Math.max(...half1.map((x) => x.rss)) / MiB;
const max2 = Math.max(...half2.map((x) => x.rss)) / MiB;
const levelledOff = max2 <= max1 * 1.05;
// When RSS last set a new high (more than 1% above everything before): a ratchet that stops is a plateau.
let runningMax = 0;
let lastHighAt = started;
for (const x of load) { if (x.rss > runningMax * 1.01) lastHighAt = x.t; runningMax = Math.max(runningMax, x.rss); }
const loadEnd = Math.max(...load.map((x) => x.t));
const lastThird = load.filter((x) => x.t >= started + (loadEnd - started) * 2 / 3);
// Per minute of load: peaks, and the floor of heapUsed (its lowest sample: what survived the GCs
// of that minute, a leak shows as a rising floor) — without forcing collections during the load.
const minutes = [];
for (let i = 0; ; i++) {
  const part = load.filter((x) => x.t >= started + i * 60_000 && x.t < started + (i + 1) * 60_000);
  if (!part.length) break;
  const max = (k) => Math.max(...part.map((x) => x[k] ?? 0));
  const min = (k) => Math.min(...part.map((x) => x[k] ?? Infinity));
  minutes.push({
    minute: i + 1, transfers: part[part.length - 1].transfers - (i ? minutes[i - 1].transfersAtEnd : 0), transfersAtEnd: part[part.length - 1].transfers,
    rssMaxMB: mb(max('rss')), heapUsedFloorMB: mb(min('heapUsed')), heapTotalMaxMB: mb(max('heapTotal')), externalMaxMB: mb(max('external')),
    fdsMax: max('fds'), spoolMaxMB: mb(max('spool')),
  });
}
const n = [...stats.values()].reduce((a, x) => a + x.n, 0);
const auditEqual = transfers.length === inspectedTransfers;
const memOf = (x) => x && { rssMB: mb(x.rss), heapUsedMB: mb(x.heapUsed), heapTotalMB: mb(x.heapTotal), externalMB: mb(x.external), arrayBuffersMB: mb(x.arrayBuffers) };
const report = {
  minutes: MINUTES, clients: CLIENTS, largeMiB: LARGE / MiB, cacheTtlMs: CACHE_TTL_MS, memoryHoldKiB: HOLD_KIB, elapsedS: Math.round(elapsed), transfers: n, inspectedTransfers, throughputMBps: +(bytesToClients / MiB / elapsed).toFixed(1),
  loadavg: loadavg().map((x) => +x.toFixed(2)), cpus: cpus().length,
  scenarios: Object.fromEntries(stats),
  audit: { lines: lines.length, transferRecords: transfers.length, byVerdict, byServed, equalsInspectedTransfers: auditEqual },
  blockedBodiesToClients: blockedLeaks,
  gate: {
    exit: exitCode,
    rssMB: {
      min: r1(rss.min), max: r1(rss.max), first: r1(rss.first), last: r1(rss.last), idleAfter: mb(idle?.rss),
      firstHalfMax: r1(max1), secondHalfMax: r1(max2), levelledOff,
      lastNewHighAtMin: r1((lastHighAt - started) / 60_000), minutesWithoutNewHigh: r1((loadEnd - lastHighAt) / 60_000),
      lastThirdTrendMBperMin: r1(trend('rss', lastThird) / MiB),
      trendMBperMin: r1(trend('rss') / MiB), secondHalfTrendMBperMin: r1(trend('rss', half2) / MiB),
    },
    // Full collections (through the inspector) before the load and after it: what is really still
    // reachable. heapUsed/external after GC back near the start = nothing accumulates in JS.
    memoryAfterGc: { start: memOf(startGc), idleEnd: memOf(idleGc) },
    // Resident kB by mapping: [heap] is glibc's main malloc arena (Buffers, OpenSSL, libuv), anon is
    // V8's heap plus large mmapped blocks, file is code and shared libraries.
    smapsKB: { start: startSmaps, idleEnd: idleSmaps },
    afterMallocTrim: trimmed,
    fds: { ...fds, trendPerMin: r1(trend('fds')), idleAfter: idle?.fds },
    spoolMB: { min: r1(spool.min), max: r1(spool.max), last: r1(spool.last), idleAfter: mb(idle?.spool ?? 0), foldersLeftAfterStop: spoolLeft },
  },
  perMinute: minutes,
  heapSnapshots: snapshots,
  samples: samples.length,
  problems,
};
const outFile = opt('--out', join(tmpdir(), `patchgate-soak-${Date.now()}.json`));
writeFileSync(outFile, JSON.stringify({ ...report, series: samples }, null, 2));

const p = (s) => process.stdout.write(s + '\n');
const g = report.gate;
p(`soak: ${MINUTES} min, ${CLIENTS} clients, ${n} transfers (${inspectedTransfers} to inspected URLs), ${(n / elapsed).toFixed(1)} transfers/s, ${report.throughputMBps} MB/s to clients; load average at the end ${report.loadavg.join(' ')} on ${report.cpus} CPUs`);
p('  by scenario (n, as expected, unexpected, statuses):');
for (const [name, s] of stats) p(`    ${name.padEnd(32)} ${String(s.n).padStart(6)} ${String(s.ok).padStart(6)} ${String(s.unexpected).padStart(5)}  ${JSON.stringify(s.statuses)}${Object.keys(s.errors).length ? ` errors ${JSON.stringify(s.errors)}` : ''}`);
p(`  audit: ${lines.length} lines, ${transfers.length} transfer records vs ${inspectedTransfers} inspected transfers: ${auditEqual ? 'EQUAL' : 'NOT EQUAL'}; by verdict ${JSON.stringify(byVerdict)}; by served ${JSON.stringify(byServed)}`);
p(`  blocked bodies that reached a client: ${blockedLeaks}`);
p(`  gate RSS MB under load: min ${g.rssMB.min}, max ${g.rssMB.max}, first ${g.rssMB.first}, last ${g.rssMB.last}; idle after ${g.rssMB.idleAfter}`);
p(`    first-half max ${g.rssMB.firstHalfMax}, second-half max ${g.rssMB.secondHalfMax}: ${levelledOff ? 'LEVELLED OFF' : 'ROSE IN THE SECOND HALF'} (levelled = second-half max within 5% of the first's)`);
p(`    slope ${g.rssMB.secondHalfTrendMBperMin} MB/min over the second half, ${g.rssMB.lastThirdTrendMBperMin} over the last third; last new high (>1%) at ${g.rssMB.lastNewHighAtMin} min, then ${g.rssMB.minutesWithoutNewHigh} min without one`);
const ms = (m) => m ? `rss ${m.rssMB}, heapUsed ${m.heapUsedMB}, heapTotal ${m.heapTotalMB}, external ${m.externalMB}, arrayBuffers ${m.arrayBuffersMB}` : 'n/a';
p(`  gate memory after a full GC (MB): before the load ${ms(g.memoryAfterGc.start)}; after it ${ms(g.memoryAfterGc.idleEnd)}`);
const sm = (x) => x ? `C heap ${(x.heap / 1024).toFixed(0)}, anon ${(x.anon / 1024).toFixed(0)}, files ${(x.file / 1024).toFixed(0)}` : 'n/a';
p(`  resident MB by mapping: before the load ${sm(g.smapsKB.start)}; after it ${sm(g.smapsKB.idleEnd)}`);
if (trimmed) p(`  after malloc_trim(0) (glibc returns the free memory it keeps): ${trimmed.rssMB !== undefined ? `rss ${trimmed.rssMB} MB; ${sm(trimmed.smapsKB)}` : trimmed.error}`);
p('  per minute: transfers, rss max, heapUsed floor, heapTotal max, external max, fds max, spool max (MB)');
for (const m of minutes) p(`    ${String(m.minute).padStart(3)} ${String(m.transfers).padStart(6)} ${String(m.rssMaxMB).padStart(7)} ${String(m.heapUsedFloorMB).padStart(6)} ${String(m.heapTotalMaxMB).padStart(6)} ${String(m.externalMaxMB).padStart(6)} ${String(m.fdsMax).padStart(5)} ${String(m.spoolMaxMB).padStart(7)}`);
p(`  gate fds under load: min ${fds.min}, max ${fds.max}, first ${fds.first}, last ${fds.last}, idle after ${idle?.fds}, trend ${g.fds.trendPerMin}/min`);
p(`  spool MB: max ${g.spoolMB.max}, at the end of the load ${g.spoolMB.last}, idle after ${g.spoolMB.idleAfter}; spool folders left after stop: ${spoolLeft}`);
if (snapshots.length) p(`  heap snapshots: ${snapshots.map((x) => x.file).join(' ')} (compare with node scripts/lib/heap-diff.mjs A B)`);
p(`  gate exit: ${exitCode}`);
if (problems.length) p(`  problems (first ${Math.min(problems.length, 15)} of ${problems.length}):\n    ${problems.slice(0, 15).join('\n    ')}`);
p(`  report: ${outFile}`);
const failed = !auditEqual || blockedLeaks > 0 || spoolLeft > 0 || (idle?.spool ?? 0) > 0;
if (!KEEP && !failed) rmSync(work, { recursive: true, force: true, maxRetries: 3 });
else p(`  work dir kept: ${work} (gate stderr in gate.stderr.log)`);
process.exit(failed ? 1 : 0);
