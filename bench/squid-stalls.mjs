// Counts Squid 5.7 RESPMOD stalls (bug 5352) and times transfers: one origin, one `patchgate icap`
// child per hold mode, Squids configured as `--print-squid-config` prints (with or without the
// delay pool, plus any extra squid.conf lines), N downloads of one payload each. A stall is a
// transfer that does not finish within --timeout. Wrap in `flock /work/bench.lock`.
//
//   node bench/squid-stalls.mjs [--size 64M] [--reps 12] [--hold tail,whole] [--pool off,printed,all]
//        [--timeout 10] [--squid-line 'read_ahead_gap 64 KB' ...] [--icap-arg --preview-bytes=0 ...]
//        [--alone] [--out FILE]
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, PKI, MiB, KiB, median, round } from './lib/common.mjs';
import http from 'node:http';

const { startSquid } = await import(pathToFileURL(join(REPO, 'test', 'support', 'squidProcess.mjs')).href);

const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt; };
const all = (name) => argv.flatMap((a, i) => (a === name ? [argv[i + 1]] : []));
const sizeOf = (s) => Number(s.replace(/[KMG]$/i, '')) * ({ K: KiB, M: MiB, G: 1024 * MiB }[s.slice(-1).toUpperCase()] ?? 1);
const SIZE = sizeOf(opt('--size', '64M'));
const REPS = Number(opt('--reps', '12'));
const HOLDS = opt('--hold', 'tail').split(',');
const POOLS = opt('--pool', 'off').split(',');
const TIMEOUT = Number(opt('--timeout', '10')) * 1000;
const EXTRA = all('--squid-line');
const ICAP_ARGS = all('--icap-arg');
const RATE = Number(opt('--rate', '0'));

const tmp = mkdtempSync(join(tmpdir(), 'patchgate-stalls-'));
const children = new Set();
const cleanup = () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } rmSync(tmp, { recursive: true, force: true }); };
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });

async function startOrigin() {
  // The origin serves HTTPS too: a throwaway self-signed certificate.
  const o = (...a) => execFileSync('openssl', a, { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
  o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'o.key', '-out', 'o.pem', '-days', '1', '-subj', '/CN=localhost');
  const tls = { ca: join(tmp, 'o.pem'), key: join(tmp, 'o.key'), cert: join(tmp, 'o.pem') };
  const child = spawn(process.execPath, [join(REPO, 'bench', 'lib', 'origin.mjs')], { cwd: REPO, env: { ...process.env, BENCH_ORIGIN_TLS: JSON.stringify(tls) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const ready = await new Promise((resolve, reject) => { child.once('message', resolve); child.once('exit', (c) => reject(new Error(`origin exited ${c}`))); });
  let seq = 0;
  const pending = new Map();
  child.on('message', (m) => { const p = pending.get(m?.seq); if (p) { pending.delete(m.seq); p(m); } });
  const rpc = (msg) => new Promise((resolve) => { const s = ++seq; pending.set(s, resolve); child.send({ ...msg, seq: s }); });
  return { httpPort: ready.httpPort, prepare: (size, seed) => rpc({ op: 'prepare', size, seed, cache: true }), stop: () => child.send({ op: 'exit' }) };
}

async function freePort() {
  const net = await import('node:net');
  return new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
}

async function startIcap(hold) {
  const port = await freePort();
  const child = spawn(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'icap', '--listen', `127.0.0.1:${port}`, '--update-host', '127.0.0.1',
    '--anchor', join(PKI, 'updateca.pem'), '--audit', join(tmp, `audit-${port}.jsonl`), '--spool-dir', tmp, '--hold', hold, ...ICAP_ARGS], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let err = '';
  await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => { err = (err + d).slice(-5000); if (/ICAP RESPMOD service on/.test(err)) resolve(); });
    child.once('exit', (c) => reject(new Error(`icap exited ${c}: ${err}`)));
  });
  return { port, stop: async () => { child.kill('SIGTERM'); await new Promise((r) => child.once('exit', r)); children.delete(child); } };
}

/** GET through the Squid (keep-alive); a transfer not complete within TIMEOUT is a stall, with the bytes it got. */
function viaSquid(squidPort) {
  const agent = new http.Agent({ keepAlive: true });
  const get = (path) => new Promise((resolve) => {
    const t0 = performance.now();
    let bytes = 0;
    let status = 0;
    const req = http.request({ host: '127.0.0.1', port: squidPort, path: `http://127.0.0.1:${origin.httpPort}${path}`, agent, headers: { host: `127.0.0.1:${origin.httpPort}` } }, (res) => {
      status = res.statusCode;
      res.on('data', (d) => { bytes += d.byteLength; });
      res.on('end', () => { clearTimeout(timer); resolve({ status, bytes, t0, tEnd: performance.now() }); });
      res.on('error', () => {});
    });
    const timer = setTimeout(() => { req.destroy(); resolve({ status, bytes, stalled: true }); }, TIMEOUT);
    req.on('error', (e) => { clearTimeout(timer); resolve({ status, bytes, error: e }); });
    req.end();
  });
  return { get, close: () => agent.destroy() };
}

// --file: that file from an in-process origin (an MSI, CAB, MSIX: a format held whole), else the bench origin's signed PE.
const FILE = opt('--file');
async function fileOrigin(path) {
  const body = readFileSync(path);
  const server = http.createServer((req, res) => { res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' }); res.end(body); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { httpPort: server.address().port, totalSize: body.length, stop: () => server.close() };
}
const origin = FILE ? await fileOrigin(FILE) : await startOrigin();
const { totalSize } = FILE ? origin : await origin.prepare(SIZE, 71);
const results = [];
const configs = [];
if (argv.includes('--alone')) configs.push({ label: 'squid alone', hold: null, pool: 'off' });
for (const hold of HOLDS) for (const pool of POOLS) configs.push({ label: `icap ${hold} pool ${pool}`, hold, pool });
const icaps = {};
try {
  for (const c of configs) {
    if (c.hold && !icaps[c.hold]) icaps[c.hold] = await startIcap(c.hold);
    // --pool off: none; printed: what --print-squid-config prints for that hold mode; all: every update-host response in the pool (before #18).
    c.squid = await startSquid({ icapPorts: c.hold ? [icaps[c.hold].port] : [], updateHosts: ['127.0.0.1'], tailHosts: c.pool === 'printed' && c.hold === 'tail' ? ['127.0.0.1'] : [], squid5Workaround: c.pool !== 'off', extraLines: EXTRA });
    c.client = viaSquid(c.squid.port);
    c.times = []; c.stalled = 0; c.bytesAtStall = [];
  }
  for (let i = 0; i < REPS; i++) {
    for (const c of configs) {
      const r = await c.client.get(`/pe/${SIZE}/71?r=s${i}${c.label.replace(/ /g, '')}${Date.now()}${RATE ? `&rate=${RATE}` : ''}`);
      if (r.status === 200 && r.bytes === totalSize) c.times.push(r.tEnd - r.t0);
      else { c.stalled++; c.bytesAtStall.push(`${r.status}:${r.bytes}${r.error ? `:${r.error.message}` : ''}`); }
    }
  }
  for (const c of configs) {
    const ms = c.times.length ? median(c.times) : null;
    const row = { config: c.label, size: SIZE, reps: REPS, ok: c.times.length, stalled: c.stalled, median_ms: round(ms), min_ms: round(Math.min(...c.times)), max_ms: round(Math.max(...c.times)), stalls: c.bytesAtStall };
    results.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  for (const c of configs) {
    c.client?.close();
    if (opt('--keep-log')) writeFileSync(`${opt('--keep-log')}.${c.label.replace(/ /g, '-')}`, c.squid?.cacheLog() ?? '');
    await c.squid?.stop();
  }
  for (const i of Object.values(icaps)) await i.stop();
  origin.stop();
}
const out = opt('--out');
if (out) writeFileSync(out, JSON.stringify({ argv, results }, null, 2));
process.exit(0);
