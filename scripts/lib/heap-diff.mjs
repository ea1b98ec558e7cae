#!/usr/bin/env node
// Compares two V8 heap snapshots (.heapsnapshot, as written by v8.writeHeapSnapshot): live objects
// counted by constructor/type name, and the names whose count or self size grew most from A to B.
// `node scripts/lib/heap-diff.mjs A.heapsnapshot B.heapsnapshot [--top N] [--json]`
//
// A name whose count grows with the number of transfers between two snapshots taken in the same
// state (both idle, or both under the same load) is what a leak looks like; one that stays put
// (or grows by a constant) is not.
import { readFileSync } from 'node:fs';

/** {name -> {count, size}} for one snapshot, by node type and name (objects by constructor). */
export function summarize(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const meta = snap.snapshot.meta;
  const fields = meta.node_fields;
  const types = meta.node_types[0];
  const nf = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const { nodes, strings } = snap;
  const out = new Map();
  let total = 0;
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + iType]];
    const raw = strings[nodes[i + iName]] ?? '';
    // Strings, numbers and code are grouped by type; objects by constructor name.
    const key = type === 'object' || type === 'closure' || type === 'native' ? `${type}:${raw.slice(0, 80)}` : `(${type})`;
    const size = nodes[i + iSize];
    total += size;
    const e = out.get(key) ?? { count: 0, size: 0 };
    e.count++;
    e.size += size;
    out.set(key, e);
  }
  return { byName: out, totalSize: total, nodeCount: nodes.length / nf };
}

export function diff(a, b, top = 30) {
  const names = new Set([...a.byName.keys(), ...b.byName.keys()]);
  const rows = [];
  for (const n of names) {
    const x = a.byName.get(n) ?? { count: 0, size: 0 };
    const y = b.byName.get(n) ?? { count: 0, size: 0 };
    rows.push({ name: n, countA: x.count, countB: y.count, dCount: y.count - x.count, sizeA: x.size, sizeB: y.size, dSize: y.size - x.size });
  }
  return {
    totalA: a.totalSize, totalB: b.totalSize, nodesA: a.nodeCount, nodesB: b.nodeCount,
    byCount: [...rows].sort((p, q) => q.dCount - p.dCount).slice(0, top),
    bySize: [...rows].sort((p, q) => q.dSize - p.dSize).slice(0, top),
    patchgate: rows.filter((r) => /HeldDownload|Spool|UpdateGate|AuditLog|GateMetrics|Waiter|IncrementalVerifier/.test(r.name)),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [fa, fb] = process.argv.slice(2).filter((x) => !x.startsWith('--'));
  const i = process.argv.indexOf('--top');
  const top = i > 0 ? Number(process.argv[i + 1]) : 30;
  const d = diff(summarize(fa), summarize(fb), top);
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(d, null, 2));
  } else {
    const kb = (n) => (n / 1024).toFixed(0).padStart(8);
    console.log(`A ${fa}: ${d.nodesA} nodes, ${(d.totalA / 1048576).toFixed(1)} MiB; B ${fb}: ${d.nodesB} nodes, ${(d.totalB / 1048576).toFixed(1)} MiB`);
    const show = (title, rows) => {
      console.log(`\n${title}\n${'count A'.padStart(9)} ${'count B'.padStart(9)} ${'Δ'.padStart(7)} ${'KiB A'.padStart(8)} ${'KiB B'.padStart(8)}  name`);
      for (const r of rows) console.log(`${String(r.countA).padStart(9)} ${String(r.countB).padStart(9)} ${String(r.dCount).padStart(7)} ${kb(r.sizeA)} ${kb(r.sizeB)}  ${r.name}`);
    };
    show('largest growth in count', d.byCount);
    show('largest growth in self size', d.bySize);
    show("patchgate's own classes", d.patchgate);
  }
}
