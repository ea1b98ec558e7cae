// Per-request cost of passing HTTP through, A/B: `node bench/ab-pass-through.mjs DIST_A DIST_B [requests] [rounds]`.
// DIST_A and DIST_B are compiled trees (dist/ of two checkouts, each with its node_modules beside it).
// Each round starts a gate from each tree in turn (a child process, bench/lib/passThroughGate.mjs),
// sends `requests` GETs of 1 KiB from a local origin through it over 8 keep-alive connections, and
// reports the gate's CPU (user + system) per request and its req/s. On a shared machine the CPU per
// request is the steadier figure; alternating rounds spreads the load of other work over both.
import http from 'node:http';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const [distA, distB, nText = '8000', roundsText = '3'] = process.argv.slice(2);
if (!distA || !distB) {
  console.log('usage: node bench/ab-pass-through.mjs DIST_A DIST_B [requests=8000] [rounds=3]');
  process.exit(2);
}
const N = Number(nText);
const CHILD = fileURLToPath(new URL('./lib/passThroughGate.mjs', import.meta.url));
const body = Buffer.alloc(1024, 97);
const origin = http.createServer((_q, s) => { s.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' }); s.end(body); });
await new Promise((r) => origin.listen(0, '127.0.0.1', r));
const originPort = origin.address().port;

async function measure(dist) {
  const child = spawn(process.execPath, [CHILD, dist], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdout.setEncoding('utf8');
  let buf = '';
  const line = () => new Promise((resolve) => {
    const take = () => {
      const i = buf.indexOf('\n');
      if (i >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); resolve(l); } else child.stdout.once('data', (d) => { buf += d; take(); });
    };
    take();
  });
  const port = Number(await line());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const one = () => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `http://localhost:${originPort}/x`, headers: { host: `localhost:${originPort}` }, agent }, (r) => {
      if (r.statusCode !== 200) reject(new Error(`status ${r.statusCode}`));
      r.resume();
      r.on('end', resolve);
    }).on('error', reject);
  });
  const run = async (n) => { let i = 0; await Promise.all(Array.from({ length: 8 }, async () => { while (i++ < n) await one(); })); };
  await run(1000); // warm-up
  child.stdin.write('\n');
  await line();
  const t0 = Date.now();
  await run(N);
  const ms = Date.now() - t0;
  child.stdin.write('\n');
  const cpuUs = Number(await line());
  agent.destroy();
  child.kill('SIGINT');
  await once(child, 'exit');
  return { usPerRequest: cpuUs / N, reqPerS: N / (ms / 1000) };
}

const results = { A: [], B: [] };
for (let round = 0; round < Number(roundsText); round++) {
  for (const [k, dist] of [['A', distA], ['B', distB]]) {
    const m = await measure(dist);
    results[k].push(m);
    console.log(`${k} ${dist}: ${m.usPerRequest.toFixed(1)} µs CPU/request, ${Math.round(m.reqPerS)} req/s`);
  }
}
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const k of ['A', 'B']) console.log(`${k}: median ${median(results[k].map((m) => m.usPerRequest)).toFixed(1)} µs CPU/request, ${Math.round(median(results[k].map((m) => m.reqPerS)))} req/s`);
origin.close();
