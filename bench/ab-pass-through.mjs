// Per-request cost of passing HTTP through, A/B: `node bench/ab-pass-through.mjs DIST_A DIST_B [requests] [rounds]`.
// DIST_A and DIST_B are compiled trees (dist/ of two checkouts, each with its node_modules beside it).
// Each round starts a gate from each tree in turn (a child process, bench/lib/passThroughGate.mjs),
// sends `requests` GETs of 1 KiB from a local origin through it over 8 keep-alive connections, and
// reports the gate's CPU (user + system) per request and its req/s. On a shared machine the CPU per
// request is the steadier figure; alternating rounds spreads the load of other work over both.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { abRounds, measureGateChild } from './lib/abRounds.mjs';

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

const measure = (dist) => measureGateChild({
  child: CHILD, args: [dist], warm: 1000, n: N,
  request: (port, agent) => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: `http://localhost:${originPort}/x`, headers: { host: `localhost:${originPort}` }, agent }, (r) => {
      if (r.statusCode !== 200) reject(new Error(`status ${r.statusCode}`));
      r.resume();
      r.on('end', resolve);
    }).on('error', reject);
  }),
});

await abRounds(distA, distB, Number(roundsText), measure);
origin.close();
