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
// Every second it samples the gate's RSS (/proc/PID/status), open fds (/proc/PID/fd) and spool
// bytes (files under --spool-dir). At the end it stops the gate (SIGTERM), counts the audit
// lines, and prints: transfers by scenario and verdict; audit transfer records against inspected
// transfers (must be equal); blocks whose body reached a client (must be zero); RSS, fds and
// spool min/max/trend. Exit code 1 if an invariant failed. Nothing leaves 127.0.0.1.
import { spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, statSync, existsSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const FIX = join(REPO, 'test', 'fixtures', 'out');
const MiB = 1024 * 1024;
const argv = process.argv.slice(2);
const opt = (f, d) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : d; };
if (argv.includes('--help')) {
  console.log('usage: node scripts/soak.mjs [--minutes N] [--clients C] [--large-mib M] [--keep] [--out FILE]');
  process.exit(0);
}
const MINUTES = Number(opt('--minutes', '2'));
const CLIENTS = Number(opt('--clients', String(Math.max(16, cpus().length * 12))));
const LARGE = Number(opt('--large-mib', '12')) * MiB;
const KEEP = argv.includes('--keep');
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
  `  memoryHoldBytes: ${256 * 1024}`,
  '  cacheTtlMs: 2000',
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
const gate = spawn(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'run', '--rules', join(work, 'rules.yaml'), '--listen', '127.0.0.1:0', '--admin', 'off',
  '--audit', auditFile, '--ca-dir', caDir, '--spool-dir', spoolBase, '--upstream-ca', join(work, 'origin-ca.pem')], { stdio: ['ignore', 'pipe', 'pipe'] });
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
log(`gate pid ${gate.pid} on 127.0.0.1:${GP}; origins http ${HP}, https ${SP}; ${CLIENTS} clients for ${MINUTES} min; large payloads ${(LARGE / MiB).toFixed(0)} MiB; work dir ${work}`);

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
function sample() {
  try {
    const status = readFileSync(`/proc/${gate.pid}/status`, 'utf8');
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    const fds = readdirSync(`/proc/${gate.pid}/fd`).length;
    samples.push({ t: Date.now(), rss, fds, spool: spoolBytes() });
  } catch { /* the gate is gone */ }
}
const sampler = setInterval(sample, 1000);
sample();

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
const deadline = started + MINUTES * 60_000;
const progress = setInterval(() => {
  const s = samples[samples.length - 1];
  const n = [...stats.values()].reduce((a, x) => a + x.n, 0);
  log(`${Math.round((Date.now() - started) / 1000)} s: ${n} transfers, gate rss ${(s?.rss / MiB).toFixed(0)} MB, fds ${s?.fds}, spool ${(s?.spool / MiB).toFixed(1)} MB`);
}, 15_000);
await Promise.all(Array.from({ length: CLIENTS }, () => clientLoop(deadline)));
clearInterval(progress);
const elapsed = (Date.now() - started) / 1000;

// Quiesce: let the gate finish writing, then sample the idle state and stop it.
await sleep(3000);
sample();
const idle = samples[samples.length - 1];
clearInterval(sampler);
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
const trend = (key) => {
  const s = samples.slice(Math.floor(samples.length * 0.2));
  if (s.length < 3) return 0;
  const t0 = s[0].t;
  const xs = s.map((x) => (x.t - t0) / 60_000);
  const ys = s.map((x) => x[key]);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0);
  const den = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  return den ? num / den : 0;
};
const mm = (key, div = 1) => {
  const v = samples.map((x) => x[key] / div);
  return { min: Math.min(...v), max: Math.max(...v), first: v[0], last: v[v.length - 1] };
};
const rss = mm('rss', MiB);
const fds = mm('fds');
const spool = mm('spool', MiB);
const n = [...stats.values()].reduce((a, x) => a + x.n, 0);
const auditEqual = transfers.length === inspectedTransfers;
const report = {
  minutes: MINUTES, clients: CLIENTS, elapsedS: Math.round(elapsed), transfers: n, inspectedTransfers, throughputMBps: +(bytesToClients / MiB / elapsed).toFixed(1),
  scenarios: Object.fromEntries(stats),
  audit: { lines: lines.length, transferRecords: transfers.length, byVerdict, byServed, equalsInspectedTransfers: auditEqual },
  blockedBodiesToClients: blockedLeaks,
  gate: {
    exit: exitCode,
    rssMB: { ...rss, trendMBperMin: +(trend('rss') / MiB).toFixed(2), idleAfter: +(idle?.rss / MiB).toFixed(1) },
    fds: { ...fds, trendPerMin: +trend('fds').toFixed(2), idleAfter: idle?.fds },
    spoolMB: { ...spool, idleAfter: +((idle?.spool ?? 0) / MiB).toFixed(2), foldersLeftAfterStop: spoolLeft },
  },
  samples: samples.length,
  problems,
};
const outFile = opt('--out', join(tmpdir(), `patchgate-soak-${Date.now()}.json`));
writeFileSync(outFile, JSON.stringify({ ...report, series: samples }, null, 2));

const p = (s) => process.stdout.write(s + '\n');
p(`soak: ${MINUTES} min, ${CLIENTS} clients, ${n} transfers (${inspectedTransfers} to inspected URLs), ${(n / elapsed).toFixed(1)} transfers/s, ${report.throughputMBps} MB/s to clients`);
p('  by scenario (n, as expected, unexpected, statuses):');
for (const [name, s] of stats) p(`    ${name.padEnd(32)} ${String(s.n).padStart(6)} ${String(s.ok).padStart(6)} ${String(s.unexpected).padStart(5)}  ${JSON.stringify(s.statuses)}${Object.keys(s.errors).length ? ` errors ${JSON.stringify(s.errors)}` : ''}`);
p(`  audit: ${lines.length} lines, ${transfers.length} transfer records vs ${inspectedTransfers} inspected transfers: ${auditEqual ? 'EQUAL' : 'NOT EQUAL'}; by verdict ${JSON.stringify(byVerdict)}; by served ${JSON.stringify(byServed)}`);
p(`  blocked bodies that reached a client: ${blockedLeaks}`);
p(`  gate RSS MB: min ${rss.min.toFixed(0)}, max ${rss.max.toFixed(0)}, first ${rss.first.toFixed(0)}, last ${rss.last.toFixed(0)}, idle after ${report.gate.rssMB.idleAfter}, trend ${report.gate.rssMB.trendMBperMin} MB/min (after warm-up)`);
p(`  gate fds: min ${fds.min}, max ${fds.max}, first ${fds.first}, last ${fds.last}, idle after ${idle?.fds}, trend ${report.gate.fds.trendPerMin}/min`);
p(`  spool MB: max ${spool.max.toFixed(1)}, idle after ${report.gate.spoolMB.idleAfter}; spool folders left after stop: ${spoolLeft}`);
p(`  gate exit: ${exitCode}`);
if (problems.length) p(`  problems (first ${Math.min(problems.length, 15)} of ${problems.length}):\n    ${problems.slice(0, 15).join('\n    ')}`);
p(`  report: ${outFile}`);
const failed = !auditEqual || blockedLeaks > 0 || spoolLeft > 0 || (idle?.spool ?? 0) > 0;
if (!KEEP && !failed) rmSync(work, { recursive: true, force: true, maxRetries: 3 });
else p(`  work dir kept: ${work} (gate stderr in gate.stderr.log)`);
process.exit(failed ? 1 : 0);
