/**
 * How much of a payload may leave before its verdict in tail mode (src/inspect/tailHold.ts): the
 * per-format plan and the release lag, without sockets. The e2e side is test/proxy/tail-hold.e2e.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fx } from '../support/fixtures.js';
import { RELEASE_STEP_BYTES, TAIL_HOLD_BYTES, TailRelease, giveSlabs, tailPlan } from '../../src/inspect/tailHold.js';
import { SLAB_BYTES, spoolPoolSize } from '../../src/inspect/spool.js';
import { sniffFormat } from '../../src/verify/format/sniffFormat.js';
import { syntheticBytes, syntheticPe } from '../support/gateHarness.js';

const MiB = 1 << 20;
const MAX_HEADER = 1 << 20;

/** A synthetic signed PE, its .text (one section) and certificate table positions from its headers. */
function peWithSections(size: number) {
  const pe = syntheticPe(size, 3);
  const bytes = syntheticBytes(pe);
  const coff = bytes.readUInt32LE(0x3c) + 4;
  const sect = coff + 20 + bytes.readUInt16LE(coff + 16);
  return { pe, bytes, sect };
}

describe('tailPlan: what each format may stream', () => {
  it('a signed PE streams up to its sections\' end (here the certificate table) less the fixed tail', () => {
    const { pe, bytes } = peWithSections(3 * MiB);
    expect(tailPlan('pe', bytes.subarray(0, 4096), MAX_HEADER)).toEqual({ kind: 'stream', limit: pe.certTableOffset - TAIL_HOLD_BYTES });
  });

  it('a PE with data after its sections (an installer\'s overlay) streams only its sections: the overlay is withheld whole', () => {
    const { pe, bytes, sect } = peWithSections(3 * MiB);
    const h = Buffer.from(bytes.subarray(0, 4096));
    const raw = h.readUInt32LE(sect + 16);
    h.writeUInt32LE(raw - 1 * MiB, sect + 16); // the last MiB of .text becomes overlay
    expect(tailPlan('pe', h, MAX_HEADER)).toEqual({ kind: 'stream', limit: pe.certTableOffset - 1 * MiB - TAIL_HOLD_BYTES });
  });

  it('a PE whose certificate table comes before the end of its sections streams only up to the table', () => {
    const { bytes, sect } = peWithSections(3 * MiB);
    const h = Buffer.from(bytes.subarray(0, 4096));
    h.writeUInt32LE(h.readUInt32LE(sect + 16) + 5 * MiB, sect + 16);
    const coff = h.readUInt32LE(0x3c) + 4;
    const cert = h.readUInt32LE(coff + 20 + 112 + 32);
    expect(tailPlan('pe', h, MAX_HEADER)).toEqual({ kind: 'stream', limit: cert - TAIL_HOLD_BYTES });
  });

  it('a PE smaller than the fixed tail, an unsigned PE, or one whose headers do not parse: held whole', () => {
    const small = syntheticBytes(syntheticPe(512 * 1024, 2));
    expect(tailPlan('pe', small.subarray(0, 4096), MAX_HEADER).kind).toBe('whole');
    const unsigned = Buffer.from(readFileSync(fx('unsigned.exe')));
    expect(tailPlan('pe', unsigned, MAX_HEADER)).toMatchObject({ kind: 'whole', why: expect.stringContaining('unsigned') });
    const broken = Buffer.from(small.subarray(0, 4096));
    broken.write('XX', broken.readUInt32LE(0x3c), 'latin1');
    expect(tailPlan('pe', broken, MAX_HEADER)).toMatchObject({ kind: 'whole', why: expect.stringContaining('do not parse') });
  });

  it('asks for more bytes until the section table is in', () => {
    const { bytes, sect } = peWithSections(3 * MiB);
    expect(tailPlan('pe', bytes.subarray(0, 0x40), MAX_HEADER)).toMatchObject({ kind: 'need' });
    expect(tailPlan('pe', bytes.subarray(0, sect + 10), MAX_HEADER)).toEqual({ kind: 'need', bytes: sect + 40 });
  });

  it.each(['good.cab', 'good.msi', 'good.appx', 'payload.bin.p7s'])('%s is held whole: withholding a tail would not make it unusable', (name) => {
    const bytes = readFileSync(fx(name));
    const format = sniffFormat(bytes);
    expect(format).not.toBe('unknown');
    expect(tailPlan(format, bytes, MAX_HEADER)).toMatchObject({ kind: 'whole' });
  });
});

describe('TailRelease: the lag behind the arrival front', () => {
  it('releases in order, never the last TAIL bytes that arrived nor anything past the limit', () => {
    const { pe, bytes } = peWithSections(4 * MiB);
    const t = new TailRelease('pe', MAX_HEADER);
    const out: Buffer[] = [];
    const piece = 100_000;
    for (let at = 0; at < bytes.byteLength; at += piece) {
      out.push(...t.offer(bytes.subarray(at, Math.min(bytes.byteLength, at + piece))));
      const arrived = Math.min(bytes.byteLength, at + piece);
      expect(t.releasedBytes).toBeLessThanOrEqual(Math.max(0, arrived - TAIL_HOLD_BYTES));
    }
    const released = Buffer.concat(out);
    expect(released.byteLength).toBe(pe.certTableOffset - TAIL_HOLD_BYTES);
    expect(released.equals(bytes.subarray(0, released.byteLength))).toBe(true);
  });

  it('releases nothing before the headers are in, then catches up', () => {
    const { bytes } = peWithSections(3 * MiB);
    const t = new TailRelease('pe', MAX_HEADER);
    expect(t.offer(bytes.subarray(0, 100))).toEqual([]);
    expect(t.planned).toBe(false);
    const out = t.offer(bytes.subarray(100, 2 * MiB));
    expect(t.planned).toBe(true);
    expect(Buffer.concat(out).equals(bytes.subarray(0, 1 * MiB))).toBe(true);
  });

  it('a CAB releases nothing at all', () => {
    const t = new TailRelease('cab', MAX_HEADER);
    expect(t.offer(readFileSync(fx('good.cab')))).toEqual([]);
    expect(t.whole).toMatch(/held whole/);
  });
});

describe('TailRelease: a head trickled in tiny chunks', () => {
  it('is joined only when the bytes asked for are in, and plans as if it came at once', () => {
    const { pe, bytes } = peWithSections(3 * MiB);
    const t = new TailRelease('pe', MAX_HEADER);
    for (let at = 0; at < 4096; at += 7) t.offer(bytes.subarray(at, Math.min(4096, at + 7)));
    expect(t.planned).toBe(true);
    const out = t.offer(bytes.subarray(4096));
    expect(Buffer.concat(out).equals(bytes.subarray(0, pe.certTableOffset - TAIL_HOLD_BYTES))).toBe(true);
  });
});

describe('TailRelease: bounded memory, pooled buffers', () => {
  it('keeps at most the withheld tail plus one release step and one buffer, whatever the chunking, and releases in steps', () => {
    const { pe, bytes } = peWithSections(12 * MiB);
    const t = new TailRelease('pe', MAX_HEADER);
    const out: Buffer[] = [];
    let most = 0;
    for (let at = 0, i = 0; at < bytes.byteLength; i++) {
      const n = [1, 4096, 65536, 700_000, 13][i % 5]!;
      const batch = t.offer(bytes.subarray(at, Math.min(bytes.byteLength, at + n)));
      at += n;
      most = Math.max(most, t.keptBytes);
      // Every batch but the last (at the limit) is at least a step: few, big writes to the client.
      const size = batch.reduce((k, b) => k + b.byteLength, 0);
      if (size && t.releasedBytes < pe.certTableOffset - TAIL_HOLD_BYTES) expect(size).toBeGreaterThanOrEqual(RELEASE_STEP_BYTES);
      out.push(...batch);
    }
    expect(most).toBeLessThanOrEqual(TAIL_HOLD_BYTES + RELEASE_STEP_BYTES + 700_000);
    expect(Buffer.concat(out).equals(bytes.subarray(0, pe.certTableOffset - TAIL_HOLD_BYTES))).toBe(true);
  });

  it('hands each fully released buffer out once; given back after the writes, they are reused, and the bytes already handed out stay intact until then', () => {
    const { pe, bytes } = peWithSections(6 * MiB);
    const t = new TailRelease('pe', MAX_HEADER);
    const views: Buffer[] = [];
    const finished: Buffer[] = [];
    for (let at = 0; at < bytes.byteLength; at += 65536) {
      views.push(...t.offer(bytes.subarray(at, Math.min(bytes.byteLength, at + 65536))));
      finished.push(...t.takeFinished());
    }
    const limit = pe.certTableOffset - TAIL_HOLD_BYTES;
    expect(new Set(finished).size).toBe(finished.length);
    expect(finished.length).toBe(Math.ceil(limit / SLAB_BYTES));
    // Nothing was given back yet: the views still hold the payload's bytes.
    expect(Buffer.concat(views).equals(bytes.subarray(0, limit))).toBe(true);
    const before = spoolPoolSize();
    giveSlabs(finished);
    expect(spoolPoolSize()).toBeGreaterThan(before);
    t.dispose();
  });
});
