#!/usr/bin/env node
// Every fixture's Verdict, as JSON lines, under the bundled rules and under each fixture's own trust
// (test/fixtures/out/manifest.json), for checking that a change to the core's parsing or caching
// leaves every verdict byte-identical:
//
//   node bench/verdict-snapshot.mjs --write /tmp/before.jsonl     # on the old build
//   node bench/verdict-snapshot.mjs --compare /tmp/before.jsonl   # on the new one: exit 1 on any difference
//
// Needs `npm run build && npm run fixtures` (each `npm run fixtures` signs afresh: compare snapshots
// of the same fixtures). Each configuration keeps one Verifier for all its files and verifies them
// three times in one process: cold caches, then warm (every other fixture's certificates and
// signatures cached in between), then fed in 4 KiB chunks. The three verdicts of a
// file must be identical, or the run fails whatever the comparison: a cache that answers for other
// bytes than its own shows here as a verdict that changes on the second pass.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO, DIST } from './lib/common.mjs';

const argv = process.argv.slice(2);
const opt = (f) => { const i = argv.indexOf(f); return i >= 0 ? argv[i + 1] : undefined; };
const imp = (p) => import(pathToFileURL(join(DIST, p)).href);
const { Verifier } = await imp('verify/verifier.js');
const { loadRulesFile } = await imp('policy/rulesFile.js');
const { buildPolicy } = await imp('policy/buildPolicy.js');

const OUT = join(REPO, 'test', 'fixtures', 'out');
const manifest = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8'));
const all = { ...manifest.fixtures, ...manifest.randomAccessFixtures };
const AT = new Date('2026-06-01T00:00:00Z');
const rules = loadRulesFile(join(REPO, 'rules', 'default.yaml'));

/** One pass over a file's bytes: whole, or in `chunk`-byte pieces; random-access formats read the buffer. */
async function verdictOf(verifier, bytes, { now, detached, chunk }) {
  const v = verifier.stream({ now, detachedSignature: detached });
  if (chunk) for (let at = 0; at < bytes.byteLength; at += chunk) v.update(bytes.subarray(at, at + chunk));
  else v.update(bytes);
  if (!v.needsRandomAccess) return v.finish();
  return v.finishFrom({ size: bytes.byteLength, readAt: async (o, n) => bytes.subarray(o, o + n) });
}

const configs = [];
// The bundled rules as shipped (the fixtures' CAs are not approved there: most verdicts are blocks).
configs.push({ name: 'bundled', policy: buildPolicy(rules), files: Object.entries(all) });
// The bundled rules with the lab's CAs pinned, as `patchgate verify --anchor --tsa-anchor` would.
configs.push({
  name: 'bundled+lab-anchors',
  policy: buildPolicy(rules, { anchorFiles: [join(OUT, 'pki/updateca.pem')], tsaAnchorFiles: [join(OUT, 'pki/tsaroot.pem')] }),
  files: Object.entries(all),
});
// Each fixture's own trust (anchors, TSA anchors, distrust list), grouped so that one Verifier sees many files.
const groups = new Map();
for (const [name, f] of Object.entries(all)) {
  const key = JSON.stringify([f.anchors, f.tsaAnchors, f.distrust]);
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key).push([name, f]);
}
for (const [key, files] of groups) {
  const [anchors, tsaAnchors, distrust] = JSON.parse(key);
  configs.push({
    name: `manifest:${key}`,
    policy: buildPolicy(rules, {
      anchorFiles: anchors.map((a) => join(OUT, a)), tsaAnchorFiles: tsaAnchors.map((a) => join(OUT, a)),
      ...(distrust ? { distrustFile: join(OUT, distrust) } : {}),
    }),
    files,
  });
}

const lines = [];
let unstable = 0;
for (const c of configs) {
  const verifier = new Verifier(c.policy);
  const inputs = c.files.map(([name, f]) => ({
    name, bytes: new Uint8Array(readFileSync(join(OUT, f.file))),
    now: f.at ? new Date(f.at) : AT, detached: f.detached ? new Uint8Array(readFileSync(join(OUT, f.detached))) : undefined,
  }));
  const passes = [];
  for (const chunk of [0, 0, 4096]) {
    const out = [];
    for (const i of inputs) out.push(JSON.stringify(await verdictOf(verifier, i.bytes, { now: i.now, detached: i.detached, chunk })));
    passes.push(out);
  }
  inputs.forEach((i, k) => {
    if (passes[1][k] !== passes[0][k] || passes[2][k] !== passes[0][k]) {
      unstable++;
      console.error(`UNSTABLE ${c.name} ${i.name}:\n  cold ${passes[0][k]}\n  warm ${passes[1][k]}\n  4 KiB chunks ${passes[2][k]}`);
    }
    lines.push(`${JSON.stringify({ config: c.name, fixture: i.name })}\t${passes[0][k]}`);
  });
}
const text = lines.join('\n') + '\n';
console.error(`verdict-snapshot: ${lines.length} verdicts in ${configs.length} configurations; ${unstable} changed between passes`);
if (opt('--write')) writeFileSync(opt('--write'), text);
let differ = 0;
if (opt('--compare')) {
  const before = readFileSync(opt('--compare'), 'utf8').split('\n').filter(Boolean);
  const now = text.split('\n').filter(Boolean);
  const index = new Map(before.map((l) => [l.split('\t')[0], l.split('\t')[1]]));
  for (const l of now) {
    const [k, v] = l.split('\t');
    if (index.get(k) !== v) {
      differ++;
      console.error(`DIFFERS ${k}\n  before ${index.get(k) ?? '(absent)'}\n  now    ${v}`);
    }
    index.delete(k);
  }
  for (const k of index.keys()) { differ++; console.error(`MISSING ${k}`); }
  console.error(`verdict-snapshot: ${differ} verdicts differ from ${opt('--compare')}`);
}
if (!opt('--write') && !opt('--compare')) process.stdout.write(text);
process.exit(unstable || differ ? 1 : 0);
