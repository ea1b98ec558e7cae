// @ts-check
/**
 * Seeded mutation fuzzing of MSI/MSP packages (OLE compound files), shared by
 * test/fuzz/msi-fuzz.test.ts and scripts/fuzz.mjs. Mutations aim at the structures a hostile
 * package would forge: header fields, FAT and DIFAT entries (chains that loop, leave the file or
 * overlap), directory entries (names, types, sibling/child links, start sectors, sizes), the
 * DigitalSignature stream, truncations and random bytes anywhere.
 *
 * Oracle: the verifier never throws or hangs, and a mutant it allows must verify with
 * osslsigncode too with the same digest (an independent MSI parser and digest): an allowed mutant
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

/** One seeded mutation of a package: { bytes, desc }. */
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
export function osslsigncodeDigest(bytes) {
  const dir = mkdtempSync(join(tmpdir(), 'pg-msifuzz-'));
  try {
    const f = join(dir, 'm.msi');
    writeFileSync(f, bytes);
    const r = spawnSync('osslsigncode', ['verify', '-in', f], { encoding: 'utf8', timeout: 20_000 });
    const out = `${r.stdout}${r.stderr}`;
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
  const m = mutateMsi(target.bytes, target.layout, seed, index);
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
      const ref = osslsigncodeDigest(m.bytes);
      outcome = ref.digestIntact ? 'allow-agreed' : ref.parsed ? 'false-accept' : 'closer-look';
    }
  } catch (e) {
    outcome = 'crash';
    error = String(e?.stack ?? e);
  }
  return { target: target.name, index, desc: m.desc, outcome, codes, ms: performance.now() - t0, error };
}
