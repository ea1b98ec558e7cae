/**
 * The shared inspection pipeline (src/inspect/payloadInspection.ts) without sockets: raw body bytes
 * pushed in as a front end would push them, the real core deciding. The e2e suites (test/proxy,
 * test/icap) check the same paths through their plumbing; these pin the pipeline's own contract:
 * decode before sniffing, hold and verify a payload, pass metadata only where the rules say, bound
 * the decoded size, and in tail mode let out only what the format allows before the verdict.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { PayloadInspection, type InspectionResult, type InspectionSettings, type PassSink, type TailSink } from '../../src/inspect/payloadInspection.js';
import { makeSpoolDir, removeSpoolDir, type Spool } from '../../src/inspect/spool.js';
import { TAIL_HOLD_BYTES } from '../../src/inspect/tailHold.js';
import { Verifier } from '../../src/verify/verifier.js';
import { AT, fx, labPolicy } from '../support/fixtures.js';
import { syntheticBytes, syntheticPe } from '../support/gateHarness.js';

let base: string;
let spoolDir: string;
beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'pg-inspection-'));
  spoolDir = makeSpoolDir(base);
});
afterAll(() => {
  removeSpoolDir(spoolDir);
  rmSync(base, { recursive: true, force: true });
});

function settings(over: Partial<InspectionSettings> = {}): InspectionSettings {
  return {
    verifier: new Verifier(labPolicy()), spoolDir, memoryHoldBytes: 256 * 1024, maxPayloadBytes: 0,
    nonPayload: 'pass', unsignedDeltas: 'block', now: () => AT, ...over,
  };
}

/** Pushes `raw` in chunks of `chunk` bytes, honouring push()'s back-pressure, then ends it. */
async function feed(p: PayloadInspection, raw: Buffer, chunk = 16 * 1024): Promise<InspectionResult> {
  for (let off = 0; off < raw.length; off += chunk) {
    if (!p.push(raw.subarray(off, off + chunk))) await new Promise<void>((r) => p.onDrain(r));
  }
  p.end();
  return p.result;
}

async function spooled(s: Spool): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s.read()) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('PayloadInspection (no sockets)', () => {
  it('holds a signed PE, lets the core decide allow, and keeps the exact bytes in its spool', async () => {
    const good = readFileSync(fx('good.exe'));
    const r = await feed(new PayloadInspection(settings(), { pathname: '/good.exe', declaredLength: good.length }), good, 1000);
    expect(r.kind).toBe('verdict');
    if (r.kind !== 'verdict') return;
    expect(r.verdict.verdict).toBe('allow');
    expect(r.verdict.sha256).toBe(sha(good));
    expect(sha(await spooled(r.spool!))).toBe(sha(good));
    r.spool!.release();
  });

  it('a tampered PE gets the core\'s block with its reason', async () => {
    const r = await feed(new PayloadInspection(settings(), { pathname: '/t.exe' }), readFileSync(fx('tampered.exe')));
    // A verified block comes back as a block carrying the core's Verdict (nothing to serve, no spool).
    expect(r.kind).toBe('block');
    if (r.kind !== 'block') return;
    expect(r.verdict?.verdict).toBe('block');
    expect(r.reasons.map((x) => x.code)).toContain('DIGEST_MISMATCH');
    expect(r.verdict?.reasons.map((x) => x.code)).toContain('DIGEST_MISMATCH');
  });

  it('decodes a gzip body before sniffing and verifying: the verdict is over the bytes the client runs', async () => {
    const good = readFileSync(fx('good.exe'));
    const r = await feed(new PayloadInspection(settings(), { pathname: '/good.exe', contentEncoding: 'gzip' }), gzipSync(good), 700);
    expect(r.kind).toBe('verdict');
    if (r.kind !== 'verdict') return;
    expect(r.verdict.verdict).toBe('allow');
    expect(r.verdict.sha256).toBe(sha(good));
    r.spool!.release();
  });

  it('a coding it cannot undo, or a body that does not decode, is blocked', async () => {
    const p = new PayloadInspection(settings(), { pathname: '/a.exe', contentEncoding: 'compress' });
    expect(await p.result).toMatchObject({ kind: 'block', reasons: [{ code: 'UNSUPPORTED_FORMAT' }] });
    const bad = await feed(new PayloadInspection(settings(), { pathname: '/a.exe', contentEncoding: 'gzip' }), Buffer.from('not gzip at all, not even close'));
    expect(bad).toMatchObject({ kind: 'block', reasons: [{ code: 'UPSTREAM_ERROR' }] });
  });

  it('a decoded body past maxPayloadBytes is OVERSIZE before its end (a gzip bomb stops at the limit)', async () => {
    // A PE head (so it is held as a payload) followed by 8 MiB of zeros: 8 KiB on the wire.
    const bomb = gzipSync(Buffer.concat([readFileSync(fx('good.exe')), Buffer.alloc(8 << 20)]));
    const r = await feed(new PayloadInspection(settings({ maxPayloadBytes: 1 << 20 }), { pathname: '/b.exe', contentEncoding: 'gzip' }), bomb);
    expect(r).toMatchObject({ kind: 'block', reasons: [{ code: 'OVERSIZE' }] });
  });

  it('metadata passes to the sink only where the rules pass it; unknown binary is never passed', async () => {
    const xml = Buffer.from(`<?xml version="1.0"?><updates>${'<u/>'.repeat(2000)}</updates>`);
    const got: Buffer[] = [];
    let ended = false;
    const sink: PassSink = { start: (head) => void got.push(head), data: (c) => (got.push(c), true), end: () => void (ended = true), error: () => {} };
    const r = await feed(new PayloadInspection(settings(), { pathname: '/feed.xml', pass: sink }), xml, 333);
    expect(r).toMatchObject({ kind: 'pass' });
    expect(ended).toBe(true);
    expect(Buffer.concat(got).equals(xml)).toBe(true);

    const blocked = await feed(new PayloadInspection(settings({ nonPayload: 'block' }), { pathname: '/feed.xml', pass: sink }), xml);
    expect(blocked.kind).toBe('block');

    const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(8192, 7)]);
    const unknown = await feed(new PayloadInspection(settings(), { pathname: '/tool', pass: sink }), elf);
    expect(unknown).toMatchObject({ kind: 'block', reasons: [{ code: 'UNSUPPORTED_FORMAT' }] });
  });

  it('fail() from outside (a timeout) blocks with that reason; later bytes change nothing', async () => {
    const good = readFileSync(fx('good.exe'));
    const p = new PayloadInspection(settings(), { pathname: '/good.exe' });
    p.push(good.subarray(0, 4096));
    p.fail({ code: 'TIMEOUT', message: 'upstream idle' });
    p.push(good.subarray(4096));
    p.end();
    expect(await p.result).toMatchObject({ kind: 'block', reasons: [{ code: 'TIMEOUT' }] });
  });

  describe('tail mode', () => {
    it('a large signed PE streams before the verdict, never its last TAIL_HOLD_BYTES, then is allowed', async () => {
      const bytes = syntheticBytes(syntheticPe(3 << 20, 7));
      let streams: boolean | undefined;
      const out: Buffer[] = [];
      const tail: TailSink = { start: (s) => void (streams = s), data: (c) => (out.push(...c), true) };
      const p = new PayloadInspection(settings(), { pathname: '/big.exe', tail, declaredLength: bytes.length });
      let releasedBeforeEnd = 0;
      for (let off = 0; off < bytes.length; off += 64 * 1024) {
        if (!p.push(bytes.subarray(off, off + 64 * 1024))) await new Promise<void>((r) => p.onDrain(r));
      }
      releasedBeforeEnd = p.releasedBytes;
      p.end();
      const r = await p.result;
      expect(streams).toBe(true);
      expect(releasedBeforeEnd).toBeGreaterThan(0);
      expect(releasedBeforeEnd).toBeLessThanOrEqual(bytes.length - TAIL_HOLD_BYTES);
      // What left early is exactly a prefix of the payload.
      const early = Buffer.concat(out);
      expect(early.length).toBe(p.releasedBytes);
      expect(early.equals(bytes.subarray(0, early.length))).toBe(true);
      expect(r.kind).toBe('verdict');
      if (r.kind === 'verdict') {
        expect(r.verdict.verdict).toBe('allow');
        r.spool!.release();
      }
    });

    it('a PE too small to leave anything after the withheld end is held whole: nothing leaves', async () => {
      const good = readFileSync(fx('good.exe'));
      let streams: boolean | undefined;
      let sent = 0;
      const tail: TailSink = { start: (s) => void (streams = s), data: (c) => ((sent += c.reduce((n, b) => n + b.length, 0)), true) };
      const p = new PayloadInspection(settings(), { pathname: '/good.exe', tail });
      const r = await feed(p, good);
      expect(streams).toBe(false);
      expect(sent).toBe(0);
      expect(p.heldWholeBecause).toMatch(/held whole/);
      if (r.kind === 'verdict') r.spool?.release();
    });
  });
});
