// Per-request cost of a 100 KiB inspected payload over HTTP, A/B:
//   node bench/ab-small-inspected.mjs DIST_A DIST_B [requests=4000] [rounds=3] [--distinct]
// DIST_A and DIST_B are compiled trees (dist/ of two checkouts, each with its node_modules beside it).
// Each round starts a gate from each tree in turn (a child process, bench/lib/inspectingGate.mjs:
// the bundled rules, the lab's Update CA pinned, as `patchgate run --update-host 127.0.0.1`), sends
// `requests` GETs through it over 8 keep-alive connections to a local origin serving signed 100 KiB
// PEs (each URL unique, so the verified-entity cache never answers), and reports the gate's CPU
// (user + system, all threads) per request and its req/s. Payloads: 16 PEs in turn, as bench
// scenario 5 (the same 16 signatures again and again: the core's caches answer after the first
// round), or with --distinct one PE per request, each with its own signature (every parse and
// signer check is new, as for a stream of different updates). On a shared machine the CPU per
// request is the steadier figure; alternating rounds spreads the load of other work over both.
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { REPO, DIST, labSigner } from './lib/common.mjs';
import { abRounds, measureGateChild } from './lib/abRounds.mjs';

const argv = process.argv.slice(2);
const distinct = argv.includes('--distinct');
const [distA, distB, nText = '4000', roundsText = '3'] = argv.filter((a) => !a.startsWith('--'));
if (!distA || !distB) {
  console.log('usage: node bench/ab-small-inspected.mjs DIST_A DIST_B [requests=4000] [rounds=3] [--distinct]');
  process.exit(2);
}
const N = Number(nText);
const WARM = distinct ? 200 : 400;
const CHILD = fileURLToPath(new URL('./lib/inspectingGate.mjs', import.meta.url));
const { createSyntheticSignedPe } = await import(pathToFileURL(join(DIST, 'lab', 'syntheticPe.js')).href);
const signer = labSigner();
const make = (seed) => Buffer.concat([...createSyntheticSignedPe({ size: 100 * 1024, signer, seed, chunkSize: 256 * 1024 }).chunks()].map((c) => Buffer.from(c)));
// --distinct: every request gets its own payload, all signed before the timing starts (each 100 KiB
// in memory: 2 x rounds x (requests + warm-up) of them).
const count = distinct ? 2 * Number(roundsText) * (N + WARM) : 16;
if (distinct) process.stderr.write(`signing ${count} payloads (${Math.round(count * 0.1)} MB)...\n`);
const payloads = Array.from({ length: count }, (_, i) => make(1000 + i));
let next = 0;
const origin = http.createServer((_q, s) => {
  const body = payloads[next++ % payloads.length];
  s.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
  s.end(body);
});
await new Promise((r) => origin.listen(0, '127.0.0.1', r));
const originPort = origin.address().port;
let unique = 0;

const measure = (dist) => measureGateChild({
  child: CHILD, args: [dist, REPO], warm: WARM, n: N,
  request: (port, agent) => new Promise((resolve, reject) => {
    const path = `http://127.0.0.1:${originPort}/pe?r=${unique++}`;
    http.get({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${originPort}` }, agent }, (r) => {
      if (r.statusCode !== 200 || r.headers['x-patchgate-verdict'] !== 'allow') reject(new Error(`status ${r.statusCode} ${r.headers['x-patchgate-verdict']}`));
      r.resume();
      r.on('end', resolve);
    }).on('error', reject);
  }),
});

await abRounds(distA, distB, Number(roundsText), measure);
origin.close();
