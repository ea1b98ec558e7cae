// @ts-check
/**
 * Seeded mutation of signed fixtures: byte flips, interesting bytes, truncations, insertions,
 * deletions, duplicated slices and inflated length fields (DER lengths of 2^31 and more, PE and CAB
 * size fields). Deterministic: the same (seed, case index) gives the same mutation on the same
 * fixture bytes. Plain ESM: shared by the vitest suites and scripts/fuzz.mjs.
 */
import { outline } from './regions.mjs';

/** splitmix32: small, fast, good enough for fuzzing; state is one uint32. */
export function rng(seed) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const r = {
    u32: next,
    /** integer in [0, n) */
    int: (n) => (n <= 0 ? 0 : next() % n),
    chance: (p) => next() / 2 ** 32 < p,
    pick: (a) => a[next() % a.length],
    between: (lo, hi) => lo + (next() % Math.max(1, hi - lo)),
  };
  return r;
}

/** A case seed from the run seed and the case index (so any case can be replayed alone). */
export const caseSeed = (seed, index) => (Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) + Math.imul(index + 1, 0x165667b1)) >>> 0;

const INTERESTING = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x0f, 0x10, 0x1f, 0x20, 0x30, 0x31, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x88, 0xa0, 0xa3, 0xfe, 0xff];
const HUGE_U32 = [0x7fffffff, 0x80000000, 0x80000001, 0xffffffff, 0xfffffff8, 0xfffffff0, 0x00ffffff, 0x01000000, 0];

/**
 * @typedef {{ start: number, end: number }} Span
 * @typedef {{
 *   bytes: Uint8Array,
 *   op: string,
 *   desc: string,
 *   sameSize: boolean,
 * }} Mutation
 */

/**
 * Per-fixture information the mutator uses to aim: the signature area, the DER length fields of
 * every blob, and the little-endian size fields of the container.
 */
export function aimFor(bytes, map) {
  const derHeaders = [];
  const certSpans = [];
  for (const blob of map.blobs) {
    for (const n of outline(bytes, blob.start)) {
      derHeaders.push({ start: n.start, hdrEnd: n.hdrEnd, end: n.end, path: n.path });
      if (/certificates\.\[\d+\]$/.test(n.path)) certSpans.push({ start: n.start, end: n.end });
    }
  }
  return { map, derHeaders, certSpans, signature: map.signature };
}

function pickOffset(r, aim, size) {
  const roll = r.int(100);
  if (aim.signature && roll < 45) return r.between(aim.signature.start, Math.min(size, aim.signature.end));
  if (aim.certSpans.length && roll < 65) {
    const c = r.pick(aim.certSpans);
    return r.between(c.start, Math.min(size, c.end));
  }
  if (aim.derHeaders.length && roll < 80) {
    const h = r.pick(aim.derHeaders);
    return r.between(h.start, Math.min(size, h.hdrEnd));
  }
  if (roll < 88) return r.int(Math.min(size, 1024)); // headers
  return r.int(size);
}

/**
 * One mutation of `bytes` (never modified in place).
 * @returns {Mutation}
 */
export function mutate(bytes, aim, r) {
  const size = bytes.length;
  const copy = () => Uint8Array.from(bytes);
  const op = r.pick(['flip', 'flip', 'flip', 'flips', 'byte', 'byte', 'truncate', 'insert', 'delete', 'dup', 'derlen', 'derlen', 'field']);
  switch (op) {
    case 'flip': {
      const b = copy();
      const at = pickOffset(r, aim, size);
      const bit = 1 << r.int(8);
      b[at] ^= bit;
      return { bytes: b, op, desc: `flip bit 0x${bit.toString(16)} at ${at}`, sameSize: true };
    }
    case 'flips': {
      const b = copy();
      const n = 2 + r.int(7);
      const at0 = pickOffset(r, aim, size);
      const at = [];
      for (let i = 0; i < n; i++) {
        const o = r.chance(0.6) ? Math.min(size - 1, at0 + r.int(32)) : pickOffset(r, aim, size);
        b[o] ^= 1 << r.int(8);
        at.push(o);
      }
      return { bytes: b, op, desc: `flip ${n} bits at ${at.join(',')}`, sameSize: true };
    }
    case 'byte': {
      const b = copy();
      const at = pickOffset(r, aim, size);
      const v = r.chance(0.7) ? r.pick(INTERESTING) : r.int(256);
      b[at] = v;
      return { bytes: b, op, desc: `byte ${at} = 0x${v.toString(16)}`, sameSize: true };
    }
    case 'truncate': {
      const at = r.chance(0.7) && aim.signature ? r.between(aim.signature.start, aim.signature.end) : r.int(size);
      return { bytes: bytes.slice(0, at), op, desc: `truncate to ${at}`, sameSize: false };
    }
    case 'insert': {
      const at = pickOffset(r, aim, size);
      const n = 1 + r.int(r.chance(0.8) ? 16 : 4096);
      const ins = new Uint8Array(n);
      const fill = r.int(3);
      for (let i = 0; i < n; i++) ins[i] = fill === 0 ? 0 : fill === 1 ? r.int(256) : r.pick(INTERESTING);
      const b = new Uint8Array(size + n);
      b.set(bytes.subarray(0, at), 0);
      b.set(ins, at);
      b.set(bytes.subarray(at), at + n);
      return { bytes: b, op, desc: `insert ${n} bytes at ${at}`, sameSize: false };
    }
    case 'delete': {
      const at = pickOffset(r, aim, size);
      const n = Math.min(1 + r.int(16), size - at);
      const b = new Uint8Array(size - n);
      b.set(bytes.subarray(0, at), 0);
      b.set(bytes.subarray(at + n), at);
      return { bytes: b, op, desc: `delete ${n} bytes at ${at}`, sameSize: false };
    }
    case 'dup': {
      // Copy a slice (often a whole certificate) somewhere else: duplicated bags, overlapping elements.
      const src = aim.certSpans.length && r.chance(0.5) ? r.pick(aim.certSpans) : (() => { const s = pickOffset(r, aim, size); return { start: s, end: Math.min(size, s + 1 + r.int(512)) }; })();
      const at = pickOffset(r, aim, size);
      const slice = bytes.slice(src.start, src.end);
      const b = new Uint8Array(size + slice.length);
      b.set(bytes.subarray(0, at), 0);
      b.set(slice, at);
      b.set(bytes.subarray(at), at + slice.length);
      return { bytes: b, op, desc: `duplicate ${src.start}..${src.end} at ${at}`, sameSize: false };
    }
    case 'derlen': {
      if (!aim.derHeaders.length) return mutate(bytes, { ...aim, derHeaders: [] }, r);
      const h = r.pick(aim.derHeaders);
      const tagLen = 1; // fixtures use low tag numbers
      const lenAt = h.start + tagLen;
      const oldLen = h.hdrEnd - lenAt;
      const choice = r.int(6);
      let repl;
      let what;
      if (choice === 0) { repl = [0x84, 0x80, 0x00, 0x00, 0x00]; what = '2^31'; }
      else if (choice === 1) { repl = [0x84, 0xff, 0xff, 0xff, 0xff]; what = '2^32-1'; }
      else if (choice === 2) { repl = [0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]; what = '2^64-1'; }
      else if (choice === 3) { repl = [0x80]; what = 'indefinite'; }
      else if (choice === 4) { repl = [0x85, 0x01, 0x00, 0x00, 0x00, 0x00]; what = '2^32 (5 octets)'; }
      else {
        // Same width, bigger value: keeps every offset, lies about the size.
        const n = oldLen - 1; // length octets after the first
        const max = n === 0 ? 0x7f : 256 ** n - 1;
        const cur = h.end - h.hdrEnd;
        const v = Math.min(max, cur + 1 + r.int(Math.max(1, max - cur)));
        if (n === 0) repl = [v];
        else {
          repl = [0x80 | n];
          for (let i = n - 1; i >= 0; i--) repl.push(Math.floor(v / 256 ** i) % 256);
        }
        what = `same-width ${v}`;
      }
      const b = new Uint8Array(size - oldLen + repl.length);
      b.set(bytes.subarray(0, lenAt), 0);
      b.set(repl, lenAt);
      b.set(bytes.subarray(lenAt + oldLen), lenAt + repl.length);
      return { bytes: b, op, desc: `DER length of ${h.path} at ${lenAt} -> ${what}`, sameSize: repl.length === oldLen };
    }
    case 'field': {
      const fields = aim.map.lengthFields;
      if (!fields.length) return mutate(bytes, aim, r);
      const f = r.pick(fields);
      const b = copy();
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const cur = f.width === 4 ? dv.getUint32(f.at, true) : dv.getUint16(f.at, true);
      const v = r.chance(0.6) ? r.pick(HUGE_U32) : (cur + r.pick([-8, -7, -1, 1, 7, 8, 4096, -4096])) >>> 0;
      if (f.at + f.width > b.length) return mutate(bytes, aim, r);
      if (f.width === 4) dv.setUint32(f.at, v >>> 0, true);
      else dv.setUint16(f.at, v & 0xffff, true);
      return { bytes: b, op, desc: `${f.name} at ${f.at}: ${cur} -> ${f.width === 4 ? v >>> 0 : v & 0xffff}`, sameSize: true };
    }
  }
  throw new Error(`unknown op ${op}`);
}

/** Offsets at which two equal-length buffers differ. */
export function diffOffsets(a, b) {
  const out = [];
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) out.push(i);
  return out;
}
