// Summarises a V8 .cpuprofile (from `node --cpu-prof`): top functions by self and inclusive time.
//   node bench/lib/profile-top.mjs FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const shortUrl = (u) => u.replace(/^.*\/(node_modules\/|dist\/)/, '$1').replace(/^file:\/\/.*\/bench\//, 'bench/');

export function profileTop(file, n = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const parent = new Map();
  for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const key = (x) => `${x.callFrame.functionName || '(anonymous)'} ${shortUrl(x.callFrame.url)}${x.callFrame.url ? `:${x.callFrame.lineNumber + 1}` : ''}`;
  const self = new Map();
  const total = new Map();
  let all = 0;
  let idle = 0;
  // The probe's own work (starting and stopping this very profile) is not the gate's.
  const probe = new Set();
  for (const x of p.nodes) {
    for (let c = x.id; c !== undefined; c = parent.get(c)) if (byId.get(c).callFrame.url.includes('gate-probe.mjs')) { probe.add(x.id); break; }
  }
  for (const [id, t] of dt) {
    if (probe.has(id)) continue;
    all += t;
    const x = byId.get(id);
    if (x.callFrame.functionName === '(idle)') idle += t;
    self.set(key(x), (self.get(key(x)) ?? 0) + t);
    const seen = new Set();
    for (let c = id; c !== undefined; c = parent.get(c)) {
      const k = key(byId.get(c));
      if (!seen.has(k)) { seen.add(k); total.set(k, (total.get(k) ?? 0) + t); }
    }
  }
  const busy = all - idle;
  // Longest stretches of consecutive non-idle samples: what held the event loop (a stall's cause).
  const stretches = [];
  let cur;
  const isIdle = (x) => ['(idle)', '(program)'].includes(x.callFrame.functionName);
  for (let i = 0; i < p.samples.length; i++) {
    const x = byId.get(p.samples[i]);
    const d = p.timeDeltas[i + 1] ?? 0;
    if (probe.has(x.id)) continue;
    if (isIdle(x)) { if (cur) { stretches.push(cur); cur = undefined; } continue; }
    cur ??= { us: 0, fns: new Map() };
    cur.us += d;
    // Attribute the sample to the deepest frame from our code or a library (not node internals).
    let k;
    for (let c = x.id; c !== undefined; c = parent.get(c)) {
      const f = byId.get(c).callFrame;
      if (/\/(dist|node_modules)\//.test(f.url)) { k = key(byId.get(c)); break; }
    }
    k ??= key(x);
    cur.fns.set(k, (cur.fns.get(k) ?? 0) + d);
  }
  if (cur) stretches.push(cur);
  const longest = stretches.sort((a, b) => b.us - a.us).slice(0, 5).map((s) => ({
    ms: Math.round(s.us / 100) / 10,
    top: [...s.fns].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([name, us]) => `${Math.round(us / 100) / 10} ms ${name}`),
  }));
  const top = (m) => [...m].filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([name, t]) => ({ ms: Math.round(t / 1000), pctOfBusy: Math.round((1000 * t) / busy) / 10, name }));
  return { totalMs: Math.round(all / 1000), busyMs: Math.round(busy / 1000), self: top(self), inclusive: top(total), longestBusy: longest };
}

export function formatProfileTop(r) {
  const line = (e) => `${String(e.ms).padStart(7)} ms ${String(e.pctOfBusy).padStart(5)}%  ${e.name}`;
  return [`busy ${r.busyMs} ms of ${r.totalMs} ms`, '  self:', ...r.self.map((e) => '  ' + line(e)), '  inclusive:', ...r.inclusive.map((e) => '  ' + line(e)),
    '  longest busy stretches (event loop held):', ...(r.longestBusy ?? []).map((s) => `    ${s.ms} ms: ${s.top.join('; ')}`)].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log(formatProfileTop(profileTop(process.argv[2], Number(process.argv[3] ?? 20))));
}
