// @ts-check
/**
 * Seeded mutation fuzzing of the random-access formats: MSI/MSP packages (OLE compound files) and
 * APPX/MSIX packages (ZIP), shared by
 * test/fuzz/msi-fuzz.test.ts and scripts/fuzz.mjs. Mutations aim at the structures a hostile
 * package would forge: header fields, FAT and DIFAT entries (chains that loop, leave the file or
 * overlap), directory entries (names, types, sibling/child links, start sectors, sizes), the
 * DigitalSignature stream, truncations and random bytes anywhere.
 *
 * For ZIPs: end record, central directory and local header fields, data bytes, truncations.
 *
 * Oracle: the verifier never throws or hangs, and a mutant it allows must verify with
 * osslsigncode too with the same digest (an independent parser and digest): an allowed mutant
 * osslsigncode calls MISMATCH is a false accept; one osslsigncode cannot parse is listed for a
 * closer look.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { caseSeed, rng } from './mutate.mjs';

const U32S = [0, 1, 2, 0x7f, 0x80, 0xff, 0x1000, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffa, 0xfffffffb, 0xfffffffc, 0xfffffffd, 0xfffffffe, 0xffffffff];

/** Where the structures of a package lie (from its header; the fixture is well formed). */
export function msiLayout(bytes) {
  const b = Buffer.from(bytes);
  const ss = 1 << b.readUInt16LE(30);
  const at = (s) => (s + 1) * ss;
  const fat = [];
  for (let i = 0; i < Math.min(109, b.readUInt32LE(44)); i++) fat.push(b.readUInt32LE(76 + 4 * i));
  const fatEntry = (s) => b.readUInt32LE(at(fat[Math.floor(s / (ss / 4))] ?? 0) + 4 * (s % (ss / 4)));
  const dir = [];
  for (let s = b.readUInt32LE(48), n = 0; s < 0xfffffffa && n < 1024; s = fatEntry(s), n++) dir.push(at(s));
  const sigOid = Buffer.from('06092a864886f70d010702', 'hex');
  const sig = b.indexOf(sigOid);
  return { ss, fatSectors: fat.map(at), dirSectors: dir, signatureAt: sig > 8 ? sig - 8 : -1 };
}

/** Where the structures of a ZIP package lie (from its end record; the fixture is well formed). */
export function zipLayout(bytes) {
  const b = Buffer.from(bytes);
  const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const cd = b.readUInt32LE(eocd + 16);
  const records = [];
  const locals = [];
  for (let p = cd, i = 0; i < b.readUInt16LE(eocd + 10); i++) {
    records.push(p);
    locals.push(b.readUInt32LE(p + 42));
    p += 46 + b.readUInt16LE(p + 28) + b.readUInt16LE(p + 30) + b.readUInt16LE(p + 32);
  }
  return { zip: true, eocd, records, locals };
}

function mutateZip(bytes, layout, r) {
  const b = Buffer.from(bytes);
  const put = (o, bits, what) => {
    if (o + bits / 8 > b.length) return `${what}: out of range`;
    const v = bits === 16 ? r.pick([0, 1, 8, 0x7fff, 0xfffe, 0xffff, r.int(0x10000)]) : r.pick(U32S.concat([r.int(b.length + 64)]));
    if (bits === 16) b.writeUInt16LE(v & 0xffff, o); else b.writeUInt32LE(v >>> 0, o);
    return `${what} @${o} = 0x${v.toString(16)}`;
  };
  switch (r.int(7)) {
    case 0: { const f = r.pick([[4, 16], [6, 16], [8, 16], [10, 16], [12, 32], [16, 32], [20, 16]]); return { bytes: b, desc: put(layout.eocd + f[0], f[1], 'end record') }; }
    case 1: case 2: { const f = r.pick([[8, 16], [10, 16], [16, 32], [20, 32], [24, 32], [28, 16], [30, 16], [32, 16], [34, 16], [42, 32]]); return { bytes: b, desc: put(r.pick(layout.records) + f[0], f[1], `directory field +${f[0]}`) }; }
    case 3: { const f = r.pick([[6, 16], [8, 16], [14, 32], [18, 32], [22, 32], [26, 16], [28, 16]]); return { bytes: b, desc: put(r.pick(layout.locals) + f[0], f[1], `local header field +${f[0]}`) }; }
    case 4: { const o = r.int(b.length); b[o] ^= 1 << r.int(8); return { bytes: b, desc: `bit flip @${o}` }; }
    case 5: { const n = r.int(b.length); return { bytes: b.subarray(0, n), desc: `truncated to ${n}` }; }
    default: { const o = r.pick(layout.records) + 46 + r.int(8); b[o] ^= 0x20; return { bytes: b, desc: `directory name byte @${o} case-flipped` }; }
  }
}

/** One seeded mutation of a package (MSI or ZIP layout): { bytes, desc }. */
export function mutatePackage(bytes, layout, seed, index) {
  if (layout.zip) return mutateZip(bytes, layout, rng(caseSeed(seed, index)));
  return mutateMsi(bytes, layout, seed, index);
}

/** One seeded mutation of an MSI package: { bytes, desc }. */
export function mutateMsi(bytes, layout, seed, index) {
  const r = rng(caseSeed(seed, index));
  const b = Buffer.from(bytes);
  const putU32 = (o, what) => {
    if (o + 4 > b.length) return `${what}: out of range`;
    const v = r.chance(0.5) ? r.pick(U32S) : r.int(Math.max(1, b.length / layout.ss + 4));
    b.writeUInt32LE(v >>> 0, o);
    return `${what} @${o} = 0x${(v >>> 0).toString(16)}`;
  };
  const kind = r.int(9);
  switch (kind) {
    case 0: return { bytes: b, desc: putU32(24 + 4 * r.int(122), 'header u32') };
    case 1: {
      const s = r.pick(layout.fatSectors);
      return { bytes: b, desc: putU32(s + 4 * r.int(layout.ss / 4), 'FAT entry') };
    }
    case 2: case 3: {
      const d = r.pick(layout.dirSectors);
      const entry = d + 128 * r.int(layout.ss / 128);
      const field = r.pick([64, 66, 68, 72, 76, 116, 120, 124]);
      if (field === 64) { b.writeUInt16LE(r.pick([0, 1, 2, 63, 64, 66, 0xffff]), entry + 64); return { bytes: b, desc: `dir name length @${entry}` }; }
      if (field === 66) { b[entry + 66] = r.pick([0, 1, 2, 3, 5, 0xff]); return { bytes: b, desc: `dir type @${entry} = ${b[entry + 66]}` }; }
      return { bytes: b, desc: putU32(entry + field, `dir field +${field}`) };
    }
    case 4: {
      const d = r.pick(layout.dirSectors);
      const o = d + r.int(layout.ss);
      b[o] ^= 1 << r.int(8);
      return { bytes: b, desc: `dir bit flip @${o}` };
    }
    case 5: {
      if (layout.signatureAt < 0) return { bytes: b, desc: 'no signature' };
      const o = layout.signatureAt + r.int(2000);
      if (o < b.length) b[o] ^= 1 << r.int(8);
      return { bytes: b, desc: `signature bit flip @${o}` };
    }
    case 6: {
      const n = r.int(b.length);
      return { bytes: b.subarray(0, n), desc: `truncated to ${n}` };
    }
    case 7: {
      const o = r.int(b.length);
      b[o] = r.u32() & 0xff;
      return { bytes: b, desc: `random byte @${o}` };
    }
    default: {
      // Two links at once: a directory link and a FAT entry pointing at each other's targets.
      const d = r.pick(layout.dirSectors) + 128 * r.int(layout.ss / 128);
      putU32(d + r.pick([68, 72, 76, 116]), 'dir link');
      const s = r.pick(layout.fatSectors);
      return { bytes: b, desc: `dir link and FAT entry ${putU32(s + 4 * r.int(layout.ss / 4), 'FAT')}` };
    }
  }
}

/** osslsigncode's view of a package: did it compute the signed digest? */
export function osslsigncodeDigest(bytes, zip = false) {
  const dir = mkdtempSync(join(tmpdir(), 'pg-msifuzz-'));
  try {
    const f = join(dir, zip ? 'm.appx' : 'm.msi');
    writeFileSync(f, bytes);
    const r = spawnSync('osslsigncode', ['verify', '-verbose', '-in', f], { encoding: 'utf8', timeout: 20_000 });
    const out = `${r.stdout}${r.stderr}`;
    if (zip) {
      // APPX: osslsigncode prints the blob it computed and MISMATCH for any part that differs.
      const parsed = /Hash of file/.test(out);
      return { parsed, digestIntact: parsed && !/MISMATCH/.test(out) && /Checking Central Directory hashes/.test(out), out };
    }
    const cur = out.match(/Current DigitalSignature\s*:\s*([0-9A-F]+)/)?.[1];
    const calc = out.match(/Calculated DigitalSignature\s*:\s*([0-9A-F]+)/)?.[1];
    return { parsed: !!calc, digestIntact: !!cur && cur === calc, out };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs one case: `verify(bytes)` is the async verifier (a Promise of a Verdict). Outcome: 'block',
 * 'allow-agreed' (osslsigncode computes the same intact digest), 'closer-look' (allowed, and
 * osslsigncode cannot parse it), 'false-accept' (allowed, osslsigncode says the digest differs),
 * 'crash' (threw).
 */
export async function runMsiCase(target, seed, index, verify) {
  const m = mutatePackage(target.bytes, target.layout, seed, index);
  const t0 = performance.now();
  let outcome;
  let codes = [];
  let error;
  try {
    const v = await verify(m.bytes);
    codes = [...new Set(v.reasons.map((x) => x.code))].sort();
    if (v.verdict !== 'allow') outcome = 'block';
    else if (Buffer.compare(Buffer.from(m.bytes), Buffer.from(target.bytes)) === 0) outcome = 'noop';
    else {
      const ref = osslsigncodeDigest(m.bytes, !!target.layout.zip);
      outcome = ref.digestIntact ? 'allow-agreed' : ref.parsed ? 'false-accept' : 'closer-look';
    }
  } catch (e) {
    outcome = 'crash';
    error = String(e?.stack ?? e);
  }
  return { target: target.name, index, desc: m.desc, outcome, codes, ms: performance.now() - t0, error };
}
