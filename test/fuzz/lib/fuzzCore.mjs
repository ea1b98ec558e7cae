// @ts-check
/**
 * The mutation-fuzzing oracle, shared by test/fuzz/mutation-fuzz.test.ts (short, in the suite) and
 * scripts/fuzz.mjs (long, in worker threads with a watchdog).
 *
 * Properties checked for every case:
 *  1. the core returns a Verdict (it never throws past verifyBytes);
 *  2. within a per-case time bound (the caller measures and judges `ms`);
 *  3. allow only when the fixture itself was allowed, the size is unchanged, and every changed byte
 *     lies where Authenticode does not look: the PE CheckSum (or the CAB header bytes the CAB digest
 *     skips). Changed bytes that are legitimately unsigned (the SignerInfo's unsigned attributes, a
 *     certificate of the bag that is not on the verified path, the WIN_CERTIFICATE header) do not
 *     fail the case but are reported with their offset and the ASN.1 element they hit
 *     ("closer look"). Anything else that still verifies is a false accept.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { mapFile, outline, locate, inRegion } from './regions.mjs';
import { aimFor, caseSeed, diffOffsets, mutate, rng } from './mutate.mjs';

/**
 * @typedef {{
 *   name: string,
 *   mode: 'file' | 'sig' | 'content',
 *   bytes: Uint8Array,
 *   other?: Uint8Array,          // the fixed half of a detached pair
 *   now: Date,
 *   baseAllowed: boolean,
 *   map: import('./regions.mjs').FileMap,
 *   aim: ReturnType<typeof aimFor>,
 *   nodes: import('./regions.mjs').Node[],
 *   policy: string,
 * }} Target
 */

/**
 * Every signed fixture of the manifest as fuzz targets (detached pairs twice: signature and
 * content), under each named policy. `verify(file, detachedSig, now, policyName)` runs the core.
 */
export function buildTargets(fixturesDir, manifest, verify, defaultNow, { only, policies = ['updateca'] } = {}) {
  /** @type {Target[]} */
  const out = [];
  for (const policy of policies) {
    for (const [name, f] of Object.entries(manifest.fixtures)) {
      if (only && !only.includes(name)) continue;
      if (name === 'distrusted' || name === 'notpe') continue; // same bytes as good.exe / not signed at all
      const now = f.at ? new Date(f.at) : defaultNow;
      const file = new Uint8Array(readFileSync(join(fixturesDir, f.file)));
      const label = policies.length > 1 || policy !== 'updateca' ? `${name}@${policy}` : name;
      if (f.detached) {
        const sig = new Uint8Array(readFileSync(join(fixturesDir, f.detached)));
        const base = verify(file, sig, now, policy).verdict === 'allow';
        out.push(makeTarget(`${label}:signature`, 'sig', sig, file, now, base, policy));
        if (name === 'payload') out.push(makeTarget(`${label}:content`, 'content', file, sig, now, base, policy));
      } else {
        out.push(makeTarget(label, 'file', file, undefined, now, verify(file, undefined, now, policy).verdict === 'allow', policy));
      }
    }
  }
  return out;
}

function makeTarget(name, mode, bytes, other, now, baseAllowed, policy) {
  const map = mapFile(bytes, mode === 'sig' ? 'p7s' : undefined);
  const aim = aimFor(bytes, map);
  const nodes = map.blobs.flatMap((b) => outline(bytes, b.start));
  return { name, mode, bytes, other, now, baseAllowed, map, aim, nodes, policy };
}

/** Runs the verifier on a (possibly mutated) target's bytes. */
export function verifyTarget(t, bytes, verify) {
  if (t.mode === 'file') return verify(bytes, undefined, t.now, t.policy);
  if (t.mode === 'sig') return verify(t.other, bytes, t.now, t.policy);
  return verify(bytes, t.other, t.now, t.policy);
}

/**
 * Names a changed offset: where it is and whether a change there may leave the verdict allow.
 * @returns {{ cls: 'excluded' | 'closer' | 'covered', where: string }}
 */
export function classifyOffset(t, mutated, offset, verdict) {
  for (const r of t.map.excluded) {
    if (!inRegion(r, offset) || r === t.map.signature || r.name === 'certificate table' || r.name === 'CAB signature') continue;
    if (r.name === 'OptionalHeader.CheckSum') return { cls: 'excluded', where: r.name };
    // CAB header bytes the CAB digest skips, and the PE security directory entry: excluded from the
    // digest by specification, but worth a look when they still verify after a change.
    return { cls: 'closer', where: `${r.name} (excluded from the digest)` };
  }
  const sig = t.map.signature;
  if (!sig || !inRegion(sig, offset)) {
    if (t.mode === 'content') return { cls: 'covered', where: `detached content byte ${offset}` };
    return { cls: 'covered', where: `byte ${offset} (covered by the file digest)` };
  }
  const loc = locate(t.nodes, offset);
  if (!loc) {
    const hdr = t.map.checked.find((r) => inRegion(r, offset));
    if (hdr) return { cls: 'closer', where: hdr.name };
    return { cls: 'covered', where: `certificate-table byte ${offset} outside every PKCS#7 blob (padding)` };
  }
  const path = loc.node.path;
  if (/signerInfos\.\[0\]\.unsignedAttrs/.test(path)) return { cls: 'closer', where: loc.describe };
  const cert = /^(.*?certificates\.\[\d+\])/.exec(path);
  if (cert) {
    const node = t.nodes.find((n) => n.path === cert[1]);
    if (node) {
      const sha = createHash('sha256').update(mutated.subarray(node.start, node.end)).digest('hex');
      const onPath = (verdict.chain ?? []).some((c) => c.sha256 === sha);
      if (!onPath) return { cls: 'closer', where: `${loc.describe} [bag certificate not on the verified path]` };
      return { cls: 'covered', where: `${loc.describe} [certificate ON the verified path]` };
    }
  }
  return { cls: 'covered', where: loc.describe };
}

/**
 * @typedef {{
 *   target: string, seed: number, index: number, op: string, desc: string,
 *   outcome: 'block' | 'allow-excluded' | 'allow-closer' | 'false-accept' | 'crash' | 'noop',
 *   codes: string[], ms: number, where?: string[], error?: string,
 * }} CaseResult
 */

/**
 * One fuzz case: mutate (seeded), verify, judge.
 * @param {Target} t @returns {CaseResult}
 */
export function runCase(t, seed, index, verify) {
  const r = rng(caseSeed(seed, index));
  const m = mutate(t.bytes, t.aim, r);
  return judge(t, m, seed, index, verify);
}

export function judge(t, m, seed, index, verify) {
  const base = { target: t.name, seed, index, op: m.op, desc: m.desc };
  const t0 = performance.now();
  let v;
  try {
    v = verifyTarget(t, m.bytes, verify);
  } catch (err) {
    return { ...base, outcome: 'crash', codes: [], ms: performance.now() - t0, error: String(/** @type {Error} */ (err)?.stack ?? err) };
  }
  const ms = performance.now() - t0;
  const codes = [...new Set((v.reasons ?? []).map((x) => x.code))].sort();
  if (v.verdict !== 'allow') {
    if (!Array.isArray(v.reasons) || v.reasons.length === 0) return { ...base, outcome: 'crash', codes, ms, error: 'block without a reason' };
    return { ...base, outcome: 'block', codes, ms };
  }
  if (!t.baseAllowed) return { ...base, outcome: 'false-accept', codes, ms, where: ['a blocked fixture became allowed'] };
  if (!m.sameSize || m.bytes.length !== t.bytes.length) return { ...base, outcome: 'false-accept', codes, ms, where: [`size changed ${t.bytes.length} -> ${m.bytes.length}`] };
  const diff = diffOffsets(t.bytes, m.bytes);
  if (!diff.length) return { ...base, outcome: 'noop', codes, ms };
  const classes = diff.map((o) => ({ o, ...classifyOffset(t, m.bytes, o, v) }));
  const where = classes.map((c) => `@${c.o}: ${c.where}`);
  if (classes.some((c) => c.cls === 'covered')) return { ...base, outcome: 'false-accept', codes, ms, where };
  if (classes.some((c) => c.cls === 'closer')) return { ...base, outcome: 'allow-closer', codes, ms, where };
  return { ...base, outcome: 'allow-excluded', codes, ms, where };
}

/**
 * Same-size structural sweep: for every ASN.1 element outside the certificates' bodies (and each
 * certificate's top-level headers), change its tag and length octets and the first value octet;
 * for every little-endian field, a few lies. Deterministic and exhaustive where random flips are
 * thin. Yields mutations.
 */
export function* structuralMutations(t) {
  const b = t.bytes;
  const set = (at, v, desc) => {
    if (at >= b.length || b[at] === v) return undefined;
    const c = Uint8Array.from(b);
    c[at] = v;
    return { bytes: c, op: 'sweep', desc, sameSize: true };
  };
  for (const n of t.nodes) {
    const depthInCert = /certificates\.\[\d+\]\.tbsCertificate\./.test(n.path) || /unsignedAttrs\.\[\d+\][^.]*\./.test(n.path);
    if (depthInCert) continue;
    const tagAt = n.start;
    for (const x of [0x01, 0x20, 0x80]) {
      const m = set(tagAt, b[tagAt] ^ x, `tag of ${n.path} at ${tagAt} ^ 0x${x.toString(16)}`);
      if (m) yield m;
    }
    if (n.hdrEnd < n.end) {
      const v0 = n.hdrEnd;
      for (const v of [b[v0] ^ 0x01, 0xff]) {
        const m = set(v0, v, `first value octet of ${n.path} at ${v0} = 0x${v.toString(16)}`);
        if (m) yield m;
      }
    }
    // The last value octet of small primitives (INTEGER versions, NULLs, BIT STRING unused bits, OIDs).
    if (!n.el.idBlock.isConstructed && n.end - n.hdrEnd <= 16 && n.end - 1 > n.hdrEnd) {
      const m = set(n.end - 1, b[n.end - 1] ^ 0x01, `last value octet of ${n.path} at ${n.end - 1} ^ 0x01`);
      if (m) yield m;
    }
  }
  // Every byte the digest skips outside the signature (CheckSum, CAB header fields): two flips each.
  for (const r of t.map.excluded) {
    if (r === t.map.signature) continue;
    for (let at = r.start; at < r.end; at++) {
      for (const x of [0x01, 0x80]) {
        const m = set(at, b[at] ^ x, `${r.name} byte ${at} ^ 0x${x.toString(16)}`);
        if (m) yield m;
      }
    }
  }
  for (const f of t.map.lengthFields) {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (f.at + f.width > b.length) continue;
    const cur = f.width === 4 ? dv.getUint32(f.at, true) : dv.getUint16(f.at, true);
    for (const d of [-3, -1, 1, 8]) {
      const c = Uint8Array.from(b);
      const cv = new DataView(c.buffer);
      if (f.width === 4) cv.setUint32(f.at, (cur + d) >>> 0, true);
      else cv.setUint16(f.at, (cur + d) & 0xffff, true);
      yield { bytes: c, op: 'sweep', desc: `${f.name} at ${f.at}: ${cur} -> ${cur + d}`, sameSize: true };
    }
  }
}

/** Summary counts of a list of case results. */
export function tally(results) {
  const t = { cases: results.length, block: 0, 'allow-excluded': 0, 'allow-closer': 0, 'false-accept': 0, crash: 0, noop: 0, maxMs: 0 };
  for (const r of results) {
    t[r.outcome]++;
    if (r.ms > t.maxMs) t.maxMs = r.ms;
  }
  return t;
}

/**
 * The verify function the fuzzers use, from the core's modules (src/ in vitest, dist/ in the
 * script): policy `updateca` pins the lab's Update CA (the fixtures' intent: the bag's copy of it is
 * then off the verified path), `root` pins the Vendor Root (every bag certificate is then on it).
 */
export function makeVerify(core, pkiDir) {
  const tsa = core.pinCertificateFile(join(pkiDir, 'tsaroot.pem'));
  const policies = {
    updateca: core.emptyPolicy({ anchors: core.pinCertificateFile(join(pkiDir, 'updateca.pem')), tsaAnchors: tsa, fileDigests: core.fileDigestsFor(false) }),
    root: core.emptyPolicy({ anchors: core.pinCertificateFile(join(pkiDir, 'root.pem')), tsaAnchors: tsa, fileDigests: core.fileDigestsFor(false) }),
  };
  return (file, sig, now, policy = 'updateca') => core.verifyBytes(file, policies[policy], { now, detachedSignature: sig });
}

/** Groups "closer look" results by the element they hit (bag certificate, unsigned attribute, header). */
export function groupCloser(results) {
  const groups = new Map();
  for (const r of results) {
    if (r.outcome !== 'allow-closer') continue;
    for (const w of r.where ?? []) {
      const m = /(certificates\.\[\d+\]|unsignedAttrs\.\[\d+\]\([^)]*\)|WIN_CERTIFICATE\[\d+\] header|CFHEADER\.[A-Za-z0-9.]+|DataDirectory\[SECURITY\]|OptionalHeader\.CheckSum)/.exec(w);
      const key = `${r.target.replace(/:.*$/, '')} ${m ? m[1] : w.replace(/^@\d+: /, '').replace(/ \(.*$/, '')}${/not on the verified path/.test(w) ? ' (off-path)' : ''}`;
      const g = groups.get(key) ?? { key, count: 0, examples: [] };
      g.count++;
      if (g.examples.length < 3) g.examples.push(`${r.desc} => ${w}`);
      groups.set(key, g);
    }
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}
