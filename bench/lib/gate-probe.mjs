// Preloaded into the gate child (`node --import bench/lib/gate-probe.mjs bin/patchgate.js run ...`)
// by bench/run.mjs. It changes nothing in the gate; it adds two things the lab needs:
//
// 1. Event-loop delay, measured inside the gate process (perf_hooks.monitorEventLoopDelay), read
//    and reset over the IPC channel: {op:'eld', reset} -> {max, p50, p99, mean} in ms.
// 2. On request, a CPU profile of exactly the measured window (node:inspector, in process):
//    {op:'profile', action:'start'} then {op:'profile', action:'stop', file} writes a .cpuprofile.
// 3. Name resolution for the lab's host names: anything under `.bench.test` resolves to 127.0.0.1
//    (the lab has no DNS; several names are needed to measure "first connection to a new host").
//    Every other name goes to the system resolver as usual.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import dns from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';

// 10 ms, not 1: a 1 ms sampling timer in the gate made V8 run a full mark-compact about every 80 ms
// of a busy transfer (71 per 1 GiB held, against 2 without the probe or at 10 ms: `node --trace-gc`),
// 2-7 ms each, so the bench measured a gate that does not exist (#18, whole-mode verdict latency).
// Stalls of 20 ms (scenario 6's rule) still show at this resolution.
const h = monitorEventLoopDelay({ resolution: 10 });
h.enable();

const ms = (ns) => Math.round(ns / 1e4) / 100;
let session;
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params ?? {}, (err, r) => (err ? reject(err) : resolve(r))));
process.on('message', async (m) => {
  if (!m) return;
  if (m.op === 'eld') {
    process.send?.({ seq: m.seq, max: ms(h.max), p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), mean: ms(h.mean), count: h.count });
    if (m.reset) h.reset();
  } else if (m.op === 'profile') {
    try {
      if (m.action === 'start') {
        session = new Session();
        session.connect();
        await post('Profiler.enable');
        await post('Profiler.setSamplingInterval', { interval: m.intervalUs ?? 500 });
        await post('Profiler.start');
      } else {
        const { profile } = await post('Profiler.stop');
        session.disconnect();
        writeFileSync(m.file, JSON.stringify(profile));
      }
      process.send?.({ seq: m.seq, ok: true });
    } catch (err) {
      process.send?.({ seq: m.seq, error: String(err) });
    }
  }
});
process.channel?.unref();

const systemLookup = dns.lookup;
dns.lookup = function benchLookup(hostname, options, callback) {
  if (typeof options === 'function') { callback = options; options = {}; }
  if (typeof options === 'number') options = { family: options };
  if (typeof hostname === 'string' && /\.bench\.test\.?$/i.test(hostname)) {
    const all = options?.all;
    process.nextTick(() => (all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4)));
    return {};
  }
  return systemLookup.call(this, hostname, options, callback);
};
// The gate resolves a destination once for its address checks (node:dns/promises), then connects to
// exactly those addresses: the lab names resolve there too.
const systemPromisesLookup = dns.promises.lookup;
dns.promises.lookup = function benchPromisesLookup(hostname, options) {
  if (typeof hostname === 'string' && /\.bench\.test\.?$/i.test(hostname)) {
    const all = typeof options === 'object' && options?.all;
    return Promise.resolve(all ? [{ address: '127.0.0.1', family: 4 }] : { address: '127.0.0.1', family: 4 });
  }
  return systemPromisesLookup.call(this, hostname, options);
};
syncBuiltinESMExports();
