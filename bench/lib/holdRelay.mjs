// A trivial store-and-forward relay, run as a child of bench/run.mjs: the floor for "verdict after
// the last byte". It fetches the origin's body, reads it to its end doing nothing with it (no
// hashing, no spool), and only then answers the client (an empty 200). The time from the origin's
// last byte to that answer's head is what the kernel still held when the origin said "done",
// drained by a reader that does no work, plus one response: no hold-then-serve gate can do better.
//
//   GET /hold?proto=http|https&host=H&port=P&path=/pe/...   (x-bench-id is passed on to the origin)
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';

const ca = process.env.BENCH_ORIGIN_CA ? readFileSync(process.env.BENCH_ORIGIN_CA) : undefined;
const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true, ca }) };

const server = http.createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
  const u = new URL(req.url ?? '/', 'http://relay');
  const proto = u.searchParams.get('proto') === 'https' ? 'https' : 'http';
  const host = u.searchParams.get('host') ?? '127.0.0.1';
  const up = (proto === 'https' ? https : http).request({
    host: '127.0.0.1', servername: host === '127.0.0.1' ? undefined : host, port: Number(u.searchParams.get('port')), path: u.searchParams.get('path'),
    headers: { host, 'x-bench-id': req.headers['x-bench-id'] ?? '' }, agent: agents[proto],
  }, (ures) => {
    let bytes = 0;
    ures.on('data', (c) => { bytes += c.byteLength; });
    ures.on('end', () => {
      res.writeHead(ures.statusCode ?? 502, { 'content-length': 0, 'x-relay-bytes': bytes });
      res.end();
    });
    ures.on('error', () => res.destroy());
  });
  up.on('error', () => res.destroy());
  up.end();
});
server.headersTimeout = 120_000;
server.requestTimeout = 0;
server.listen(0, '127.0.0.1', () => process.send({ ready: true, port: server.address().port }));
process.on('message', (m) => { if (m?.op === 'exit') process.exit(0); });
