// The benchmark's origin server, run as a child process of bench/run.mjs (IPC channel required).
// Serves signed PEs made by the lab generator (src/lab/syntheticPe.ts) over HTTP and HTTPS on
// 127.0.0.1, streamed chunk by chunk (nothing on disk), counts every byte it sends, and records,
// per request carrying `x-bench-id`, the monotonic instant its last byte was handed to the kernel.
//
//   GET /pe/<size>/<seed>[?rate=<bytes per second>&...]   a signed PE32+ of about <size> bytes
//   GET /blob/<size>[?...]                                <size> bytes that are not a payload
//
// The query string is otherwise ignored: clients add `?r=<unique>` so that the gate never serves
// a repeated request from its verified-entity cache.
//
// IPC: {op:'prepare', size, seed, cache} -> {totalSize}   (signs the PE before timing starts)
//      {op:'stats', reset}               -> {bytes, requests, lastByte: {id: ms}}
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DIST, labSigner, nowMs, MiB } from './common.mjs';

const { createSyntheticSignedPe } = await import(join(DIST, 'lab', 'syntheticPe.js'));

const signer = labSigner();
const CHUNK = 256 * 1024;
/** Payloads prepared with cache:true are rendered once and kept (up to this budget, LRU). */
const CACHE_BUDGET = 600 * MiB;

const pes = new Map(); // `${size}:${seed}` -> { pe, cached: Buffer | undefined }
let cachedBytes = 0;

function prepare(size, seed, cache) {
  const key = `${size}:${seed}`;
  let e = pes.get(key);
  if (!e) {
    e = { pe: createSyntheticSignedPe({ size, signer, seed, chunkSize: CHUNK }), cached: undefined };
    pes.set(key, e);
  }
  if (cache && !e.cached) {
    const parts = [...e.pe.chunks()];
    e.cached = Buffer.concat(parts.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
    cachedBytes += e.cached.byteLength;
    for (const [k, other] of pes) {
      if (cachedBytes <= CACHE_BUDGET) break;
      if (k !== key && other.cached) { cachedBytes -= other.cached.byteLength; other.cached = undefined; }
    }
  }
  pes.delete(key);
  pes.set(key, e); // most recently used last
  return e;
}

const blobs = new Map();
function blob(size) {
  let b = blobs.get(size);
  if (!b) {
    b = randomBytes(size);
    b[0] = 0x7b; // '{': sniffed as "not a payload" (like update metadata)
    blobs.set(size, b);
  }
  return b;
}

let stats = { bytes: 0, requests: 0, lastByte: {} };

/** Chunks of the body: views of a cached rendering, or generated on the fly. */
function* bodyChunks(e) {
  if (e.cached) {
    for (let at = 0; at < e.cached.byteLength; at += CHUNK) yield e.cached.subarray(at, Math.min(at + CHUNK, e.cached.byteLength));
    return;
  }
  for (const c of e.pe.chunks()) yield Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/** Waits for 'drain' (or 'close'), leaving no listener behind. */
function drained(res) {
  return new Promise((resolve) => {
    const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function send(req, res, total, chunks, rate) {
  const id = req.headers['x-bench-id'];
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
  const t0 = nowMs();
  let sent = 0;
  for (const c of chunks) {
    if (res.destroyed) return;
    sent += c.byteLength;
    stats.bytes += c.byteLength;
    res.write(c);
    if (rate) {
      // A 1 Gbit/s uplink: never ahead of `rate` bytes per second since the first byte.
      const due = t0 + (sent / rate) * 1000;
      const ahead = due - nowMs();
      if (ahead > 1) await new Promise((r) => setTimeout(r, ahead));
    }
    // (Checked now, not from write()'s answer: a 'drain' may have fired while pacing.)
    if (res.writableNeedDrain && !res.destroyed) await drained(res);
  }
  res.end(() => { if (id) stats.lastByte[id] = nowMs(); });
}

function handler(req, res) {
  stats.requests++;
  const url = new URL(req.url ?? '/', 'http://origin');
  const rate = Number(url.searchParams.get('rate')) || 0;
  let m = /^\/pe\/(\d+)\/(\d+)$/.exec(url.pathname);
  if (m) {
    const e = prepare(Number(m[1]), Number(m[2]), false);
    return void send(req, res, e.pe.totalSize, bodyChunks(e), rate).catch(() => res.destroy());
  }
  m = /^\/blob\/(\d+)$/.exec(url.pathname);
  if (m) {
    const b = blob(Number(m[1]));
    return void send(req, res, b.byteLength, [b], rate).catch(() => res.destroy());
  }
  res.writeHead(404, { 'content-length': 0 }).end();
}

const tls = JSON.parse(process.env.BENCH_ORIGIN_TLS ?? '{}');
const httpServer = http.createServer({ keepAliveTimeout: 120_000, highWaterMark: CHUNK }, handler);
const httpsServer = https.createServer({ key: readFileSync(tls.key), cert: readFileSync(tls.cert), keepAliveTimeout: 120_000, highWaterMark: CHUNK }, handler);
for (const s of [httpServer, httpsServer]) { s.headersTimeout = 120_000; s.requestTimeout = 0; }
await Promise.all([httpServer, httpsServer].map((s) => new Promise((r) => s.listen(0, '127.0.0.1', r))));

process.on('message', (m) => {
  try {
    if (m.op === 'prepare') {
      const e = prepare(m.size, m.seed, m.cache);
      process.send({ seq: m.seq, totalSize: e.pe.totalSize });
    } else if (m.op === 'stats') {
      process.send({ seq: m.seq, ...stats });
      if (m.reset) stats = { bytes: 0, requests: 0, lastByte: {} };
    } else if (m.op === 'exit') {
      process.exit(0);
    }
  } catch (err) {
    process.send({ seq: m.seq, error: String(err?.stack ?? err) });
  }
});
process.send({ ready: true, httpPort: httpServer.address().port, httpsPort: httpsServer.address().port });
