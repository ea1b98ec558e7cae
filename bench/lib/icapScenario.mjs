// Scenario 7 of the benchmark: Squid alone against Squid + `patchgate icap` (RESPMOD), same
// origin, same Squid configuration but the ICAP lines, in the same run. A 64 MiB signed payload
// (repetitions alternate the two Squids) and small inspected files (100 KiB, keep-alive, a fixed
// concurrency for a fixed time). patchgate icap runs as a child process (`node bin/patchgate.js
// icap`) so that its peak RSS is its own; both Squids are Debian's squid (-N, loopback only).
// The Squid configuration is test/support/squidProcess.mjs's, i.e. what `patchgate icap
// --print-squid-config` prints, including the Squid 5 delay-pool workaround (bug 5352), which
// costs up to a second on a payload larger than Squid's 64 KiB pipe: that is what a Debian 12
// farm sees, and the row says so.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, PKI, KiB, MiB, nowMs, median, round, ProcSampler } from './common.mjs';
import { makeClient, loadRun } from './clients.mjs';

const { startSquid, squidBinary } = await import(pathToFileURL(join(REPO, 'test', 'support', 'squidProcess.mjs')).href);

async function startIcapChild({ port, tmp, children, args = [] }) {
  const child = spawn(process.execPath, [join(REPO, 'bin', 'patchgate.js'), 'icap', '--listen', `127.0.0.1:${port}`, '--update-host', '127.0.0.1',
    '--anchor', join(PKI, 'updateca.pem'), '--audit', join(tmp, `icap-audit-${port}.jsonl`), '--spool-dir', tmp, ...args], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let err = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`patchgate icap did not start:\n${err}`)), 30_000);
    child.stderr.on('data', (d) => {
      err = (err + d).slice(-10_000);
      if (/ICAP RESPMOD service on/.test(err)) { clearTimeout(t); resolve(); }
    });
    child.once('exit', (c) => { clearTimeout(t); reject(new Error(`patchgate icap exited ${c}:\n${err}`)); });
  });
  const exited = new Promise((r) => child.once('exit', r));
  return { pid: child.pid, stop: async () => { child.kill('SIGTERM'); await exited; children.delete(child); } };
}

function fetchBody(port, path) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve(Buffer.concat(parts)));
    }).on('error', reject);
  });
}

/** One RESPMOD with the whole body (64 KiB chunks, no preview, Allow: 204); resolves at the answer's first bytes. */
function rawRespmod(port, body) {
  const req = 'GET http://127.0.0.1:8/raw.exe HTTP/1.1\r\nHost: 127.0.0.1:8\r\n\r\n';
  const res = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`;
  const parts = [Buffer.from(`RESPMOD icap://127.0.0.1:${port}/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr=${req.length}, res-body=${req.length + res.length}\r\n\r\n${req}${res}`, 'latin1')];
  for (let i = 0; i < body.length; i += 65536) {
    const c = body.subarray(i, i + 65536);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const t0 = nowMs();
    s.once('data', (d) => { resolve({ status: Number(d.toString('latin1').split(' ')[1]), ms: nowMs() - t0 }); s.destroy(); });
    s.on('error', reject);
    for (const p of parts) s.write(p);
  });
}

async function tailRows(o, { big, totalSize, reps, via, rows }) {
  const tailPort = await o.freePort();
  const icapTail = await startIcapChild({ port: tailPort, tmp: o.tmp, children: o.children, args: ['--hold', 'tail'] });
  const tailMem = new ProcSampler(icapTail.pid).start();
  // tailPool: what --print-squid-config prints for a tail-mode host (the delay pool only for a payload held whole).
  const squids = { aloneNoPool: await startSquid({ updateHosts: ['127.0.0.1'], squid5Workaround: false }), tailPool: await startSquid({ icapPorts: [tailPort], updateHosts: ['127.0.0.1'], tailHosts: ['127.0.0.1'] }) };
  if (!o.quick) squids.tailNoPool = await startSquid({ icapPorts: [tailPort], updateHosts: ['127.0.0.1'], squid5Workaround: false });
  const clients = Object.fromEntries(Object.entries(squids).map(([k, sq]) => [k, via(sq)]));
  try {
    const times = Object.fromEntries(Object.keys(squids).map((k) => [k, []]));
    const stalled = Object.fromEntries(Object.keys(squids).map((k) => [k, 0]));
    for (let i = 0; i < reps + 1; i++) {
      for (const k of Object.keys(squids)) {
        const r = await clients[k].get(`/pe/${big}/71?r=icaptail${k}${i}`).catch((e) => ({ status: 0, bytes: 0, error: e }));
        if (r.status !== 200 || r.bytes !== totalSize) {
          if (k === 'tailNoPool') { stalled[k]++; continue; }
          throw new Error(`scenario 7 tail: ${k} got ${r.status} with ${r.bytes} bytes`);
        }
        if (i > 0) times[k].push(r.tEnd - r.t0);
      }
    }
    const alone = median(times.aloneNoPool);
    const label = { aloneNoPool: '7 squid alone, no delay pool, 64 MiB', tailPool: '7 squid + patchgate icap tail 64 MiB', tailNoPool: '7 squid no pool + patchgate icap tail 64 MiB' };
    for (const k of Object.keys(squids)) {
      const ms = times[k].length ? median(times[k]) : null;
      rows.push({
        name: label[k], bytes: totalSize, clients: 1, hold: k === 'aloneNoPool' ? null : 'tail',
        'MB/s': ms ? round(totalSize / 1e6 / (ms / 1000)) : null, ratio_vs_direct: null, ratio_vs_squid: ms ? round(alone / ms, 2) : null, vs: 'squid alone without the delay pool', ratio_vs_sha256: null,
        verify_ms_after_last_byte: null, peak_rss_mib: k === 'aloneNoPool' ? null : round(tailMem.maxRssKiB / 1024), req_per_s: null, p50_ms: ms ? round(ms) : null, p99_ms: null,
        time_s: ms ? round(ms / 1000, 2) : null, stalled: stalled[k] || null, attempts: reps + 1,
      });
      o.log(`  7 tail: ${label[k]}: ${ms ? `${round(ms)} ms` : 'no complete run'}${stalled[k] ? `, ${stalled[k]} of ${reps + 1} stalled` : ''}`);
    }
    // 100 KiB through the printed tail-mode configuration (such a PE is held whole: its sections end
    // within the withheld MiB), against Squid alone without the pool.
    const small = 100 * KiB;
    const sm = await o.origin.prepare(small, 73, true);
    const smallRows = {};
    for (const k of ['aloneNoPool', 'tailPool']) {
      // A stale kept-alive connection (Squid closed it): retried once, as below for the whole-mode rows.
      const retrying = { get: (path) => clients[k].get(path).catch((e) => { if (!/socket hang up|ECONNRESET/.test(String(e?.message ?? e))) throw e; return clients[k].get(path); }) };
      const r = await loadRun({ client: retrying, concurrency: 8, durationMs: o.quick ? 1000 : 5000, pathFor: (i) => `/pe/${small}/73?r=icaptails${k}${i}`, expectBytes: sm.totalSize });
      if (r.errors || r.wrong) throw new Error(`scenario 7 tail small files via ${k}: ${r.errors} errors, ${r.wrong} wrong (${r.firstError ?? ''})`);
      smallRows[k] = r;
    }
    const ratio = round(smallRows.tailPool.reqPerS / smallRows.aloneNoPool.reqPerS, 2);
    for (const k of ['aloneNoPool', 'tailPool']) {
      const r = smallRows[k];
      rows.push({
        name: k === 'aloneNoPool' ? '7 squid alone, no delay pool, 100 KiB x8' : '7 squid + patchgate icap tail 100 KiB x8', bytes: sm.totalSize, clients: 8, hold: k === 'aloneNoPool' ? null : 'tail',
        'MB/s': round(r.bytes / 1e6 / ((o.quick ? 1000 : 5000) / 1000)), ratio_vs_direct: null, ratio_vs_squid: k === 'aloneNoPool' ? 1 : ratio, vs: 'squid alone without the delay pool', ratio_vs_sha256: null,
        verify_ms_after_last_byte: null, peak_rss_mib: null, req_per_s: round(r.reqPerS), p50_ms: round(r.p50), p99_ms: round(r.p99),
      });
    }
    o.log(`  7 tail: 100 KiB x8 via squid alone (no pool) ${round(smallRows.aloneNoPool.reqPerS)} req/s, via squid + patchgate icap tail ${round(smallRows.tailPool.reqPerS)} req/s (${ratio}x)`);
  } finally {
    for (const c of Object.values(clients)) c.close();
    tailMem.stop();
    for (const sq of Object.values(squids)) await sq.stop();
    await icapTail.stop();
  }
}

/**
 * @param o { origin, freePort, tmp, quick, log, children }
 * @returns rows for bench/results.json
 */
export async function runIcapScenario(o) {
  if (!squidBinary()) {
    o.log('  scenario 7 skipped: squid is not installed (apt-get install squid)');
    return [];
  }
  const icapPort = await o.freePort();
  const icap = await startIcapChild({ port: icapPort, tmp: o.tmp, children: o.children });
  const alone = await startSquid({ updateHosts: ['127.0.0.1'] });
  const gated = await startSquid({ icapPorts: [icapPort], updateHosts: ['127.0.0.1'] });
  const icapMem = new ProcSampler(icap.pid).start();
  const squidMem = new ProcSampler(gated.pid).start();
  const rows = [];
  try {
    const big = 64 * MiB;
    const reps = o.quick ? 1 : 3;
    const { totalSize } = await o.origin.prepare(big, 71, true);
    const via = (squid) => makeClient({ route: 'gate', proto: 'http', host: '127.0.0.1', port: o.origin.httpPort, gate: { port: squid.port } });
    const clients = { alone: via(alone), gated: via(gated) };
    // Unthrottled (loopback: the origin is faster than anything downstream) and throttled to
    // 125 MB/s (a 1 Gbit/s uplink: what an egress sees).
    for (const rate of [0, 125_000_000]) {
      const times = { alone: [], gated: [] };
      for (let i = 0; i < reps + 1; i++) {
        for (const k of ['alone', 'gated']) {
          const r = await clients[k].get(`/pe/${big}/71?r=icap${k}${rate}${i}${rate ? `&rate=${rate}` : ''}`);
          if (r.status !== 200 || r.bytes !== totalSize) throw new Error(`scenario 7: ${k} got ${r.status} with ${r.bytes} bytes`);
          if (i > 0) times[k].push(r.tEnd - r.t0); // the first round warms both paths up
        }
      }
      const ms = { alone: median(times.alone), gated: median(times.gated) };
      const what = rate ? 'throttled 125 MB/s' : 'unthrottled';
      for (const k of ['alone', 'gated']) {
        rows.push({
          name: `7 squid ${k === 'alone' ? 'alone' : '+ patchgate icap'} 64 MiB ${rate ? 'thr' : ''}`.trim(), bytes: totalSize, clients: 1,
          'MB/s': round(totalSize / 1e6 / (ms[k] / 1000)), ratio_vs_direct: null, ratio_vs_squid: round(ms.alone / ms[k], 2), ratio_vs_sha256: null,
          verify_ms_after_last_byte: null, peak_rss_mib: k === 'gated' ? round(icapMem.maxRssKiB / 1024) : null, req_per_s: null, p50_ms: round(ms[k]), p99_ms: null,
          time_s: round(ms[k] / 1000, 2), throttle: rate || null,
        });
      }
      o.log(`  7: 64 MiB ${what} via squid alone ${round(ms.alone)} ms, via squid + patchgate icap ${round(ms.gated)} ms (${round(ms.gated / ms.alone, 2)}x time)`);
    }

    // patchgate icap on its own: the same 64 MiB as one RESPMOD from a raw ICAP client (Allow: 204,
    // no preview), first byte sent to the 204: what the service does when its client does not stall.
    const body = await fetchBody(o.origin.httpPort, `/pe/${big}/71?r=icapraw`);
    const raw = [];
    for (let i = 0; i < reps + 1; i++) {
      const r = await rawRespmod(icapPort, body);
      if (r.status !== 204) throw new Error(`scenario 7 raw ICAP: answered ${r.status}`);
      if (i > 0) raw.push(r.ms);
    }
    const rawMs = median(raw);
    rows.push({
      name: '7 patchgate icap alone (raw ICAP client) 64 MiB', bytes: body.length, clients: 1, 'MB/s': round(body.length / 1e6 / (rawMs / 1000)),
      ratio_vs_direct: null, ratio_vs_squid: null, ratio_vs_sha256: null, verify_ms_after_last_byte: null, peak_rss_mib: round(icapMem.maxRssKiB / 1024),
      req_per_s: null, p50_ms: round(rawMs), p99_ms: null, time_s: round(rawMs / 1000, 2),
    });
    o.log(`  7: 64 MiB as one RESPMOD from a raw ICAP client: ${round(rawMs)} ms (${round(body.length / 1e6 / (rawMs / 1000))} MB/s)`);

    // hold: tail (issue #18): patchgate streams the adapted body back as the virgin body arrives.
    // Against Squid alone WITHOUT the delay pool (the target's baseline), through the configuration
    // --print-squid-config prints (pool included), and (full run) through a Squid without the pool,
    // where Squid 5.7 can still stall before the adapted body starts: counted, not failed.
    await tailRows(o, { big, totalSize, reps, via, rows });

    const small = 100 * KiB;
    const s = await o.origin.prepare(small, 72, true);
    for (const k of ['alone', 'gated']) {
      const client = via(k === 'alone' ? alone : gated);
      // A request on a kept-alive connection that Squid closed at that moment fails at once with
      // "socket hang up" before Squid saw it (0.4% of requests here, Squid's access.log has none
      // of them): retried once, as HTTP clients retry idempotent requests on stale connections.
      let retried = 0;
      const retrying = {
        get: (path) => client.get(path).catch((e) => {
          if (!/socket hang up|ECONNRESET/.test(String(e?.message ?? e))) throw e;
          retried++;
          return client.get(path);
        }),
      };
      const r = await loadRun({ client: retrying, concurrency: 8, durationMs: o.quick ? 1000 : 5000, pathFor: (i) => `/pe/${small}/72?r=icaps${k}${i}`, expectBytes: s.totalSize });
      r.retried = retried;
      client.close();
      if (r.errors || r.wrong) throw new Error(`scenario 7 small files via ${k}: ${r.errors} errors, ${r.wrong} wrong (${r.firstError ?? ''})`);
      rows.push({
        name: `7 squid ${k === 'alone' ? 'alone' : '+ patchgate icap'} 100 KiB x8`, bytes: s.totalSize, clients: 8, 'MB/s': round(r.bytes / 1e6 / ((o.quick ? 1000 : 5000) / 1000)),
        ratio_vs_direct: null, ratio_vs_squid: null, ratio_vs_sha256: null, verify_ms_after_last_byte: null,
        peak_rss_mib: k === 'gated' ? round(icapMem.maxRssKiB / 1024) : null, req_per_s: round(r.reqPerS), p50_ms: round(r.p50), p99_ms: round(r.p99),
        retried_stale_connections: r.retried,
      });
    }
    const [a, g] = rows.slice(-2);
    g.ratio_vs_squid = round(g.req_per_s / a.req_per_s, 2);
    a.ratio_vs_squid = 1;
    o.log(`  7: 100 KiB x8 via squid alone ${a.req_per_s} req/s, via squid + patchgate icap ${g.req_per_s} req/s (${g.ratio_vs_squid}x); icap peak RSS ${round(icapMem.maxRssKiB / 1024)} MiB, squid ${round(squidMem.maxRssKiB / 1024)} MiB`);
    for (const c of Object.values(clients)) c.close();
  } finally {
    icapMem.stop();
    squidMem.stop();
    await alone.stop();
    await gated.stop();
    await icap.stop();
  }
  return rows;
}
