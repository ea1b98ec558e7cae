// A/B rounds of per-request gate cost, shared by bench/ab-pass-through.mjs and
// bench/ab-small-inspected.mjs: the parent side (start a gate child from a compiled tree, drive
// requests over 8 keep-alive connections, read the child's CPU) and the child side (print the port,
// answer each stdin line with the CPU used since the previous one).
import http from 'node:http';
import { spawn } from 'node:child_process';
import { once } from 'node:events';

/**
 * One measurement: `child` (a gate script) started with `args`, `warm` requests, then `n` timed ones;
 * `request(port, agent)` makes one and rejects on a wrong answer. CPU is user + system, µs, all threads.
 */
export async function measureGateChild({ child: script, args, request, warm, n }) {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
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
  const run = async (count) => { let i = 0; await Promise.all(Array.from({ length: 8 }, async () => { while (i++ < count) await request(port, agent); })); };
  await run(warm);
  child.stdin.write('\n');
  await line();
  const t0 = Date.now();
  await run(n);
  const ms = Date.now() - t0;
  child.stdin.write('\n');
  const cpuUs = Number(await line());
  agent.destroy();
  child.kill('SIGINT');
  await once(child, 'exit');
  return { usPerRequest: cpuUs / n, reqPerS: n / (ms / 1000) };
}

/** Alternating rounds of `measure(dist)` for trees A and B (spreading other load over both), then the medians. */
export async function abRounds(distA, distB, rounds, measure) {
  const results = { A: [], B: [] };
  for (let round = 0; round < rounds; round++) {
    for (const [k, dist] of [['A', distA], ['B', distB]]) {
      const m = await measure(dist);
      results[k].push(m);
      console.log(`${k} ${dist}: ${m.usPerRequest.toFixed(1)} µs CPU/request, ${Math.round(m.reqPerS)} req/s`);
    }
  }
  const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const k of ['A', 'B']) console.log(`${k}: median ${median(results[k].map((m) => m.usPerRequest)).toFixed(1)} µs CPU/request, ${Math.round(median(results[k].map((m) => m.reqPerS)))} req/s`);
  return results;
}

/** The child side: prints the gate's port, then answers each stdin line with the CPU (µs) used since the previous one. */
export function reportCpuOnStdin(port) {
  process.stdout.write(`${port}\n`);
  let last = process.cpuUsage();
  process.on('SIGINT', () => process.exit(0));
  process.stdin.on('data', () => {
    const c = process.cpuUsage(last);
    last = process.cpuUsage();
    process.stdout.write(`${c.user + c.system}\n`);
  });
}
