// Preloaded into the gate child by scripts/soak.mjs (`node --import scripts/lib/soak-probe.mjs
// bin/patchgate.js run ...`). It changes nothing in the gate's behaviour; over the IPC channel it
// answers what /proc cannot tell:
//
//   {op:'mem', seq, gc}   -> process.memoryUsage() (rss, heapTotal, heapUsed, external,
//                            arrayBuffers) and the count of active handles/requests by type;
//                            with gc: true, after a full garbage collection (through node:inspector,
//                            so the gate needs no --expose-gc), i.e. what is really still reachable.
//   {op:'snapshot', seq, file} -> a V8 heap snapshot written to file (blocks the gate a few seconds).
import { Session } from 'node:inspector';
import { writeHeapSnapshot } from 'node:v8';

let session;
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params ?? {}, (err, r) => (err ? reject(err) : resolve(r))));

async function fullGc() {
  if (!session) { session = new Session(); session.connect(); }
  await post('HeapProfiler.collectGarbage');
}

function resources() {
  const out = {};
  for (const t of process.getActiveResourcesInfo?.() ?? []) out[t] = (out[t] ?? 0) + 1;
  return out;
}

process.on('message', async (m) => {
  if (!m || typeof m !== 'object') return;
  try {
    if (m.op === 'mem') {
      if (m.gc) await fullGc();
      const u = process.memoryUsage();
      process.send?.({ seq: m.seq, mem: { rss: u.rss, heapTotal: u.heapTotal, heapUsed: u.heapUsed, external: u.external, arrayBuffers: u.arrayBuffers }, resources: resources() });
    } else if (m.op === 'snapshot') {
      const file = writeHeapSnapshot(m.file);
      process.send?.({ seq: m.seq, file });
    }
  } catch (err) {
    process.send?.({ seq: m.seq, error: String(err) });
  }
});
process.channel?.unref();
