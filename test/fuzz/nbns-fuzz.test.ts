/**
 * Mutation fuzzing of the NBNS parser (src/wpad/nbnsPacket.ts), short and deterministic (fixed
 * seed, fixed case count, a wall-clock cap as a safety net), with the seeded PRNG of the core's
 * fuzzer (test/fuzz/lib/mutate.mjs). Seeds: queries and answers with and without scope, an answer
 * whose name is a compression pointer, an answer with many addresses. Mutations: bit flips,
 * interesting bytes (label lengths, pointer bytes 0xc0-0xff), counts and RDLENGTH set to large
 * values, truncations, insertions, duplicated slices.
 *
 * Properties: the parser returns or throws NbnsFormatError, nothing else; each case is fast; what it
 * returns respects the bounds (8 records a section, 32 addresses a record, names of at most 15
 * characters and scopes of at most 255 bytes).
 *
 * The same mutations run through the guard's DNS/LLMNR/mDNS answer reader (dns-packet underneath):
 * it returns addresses or nothing and never throws.
 */
import { describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import { NbnsFormatError, encodeNameQuery, encodeNameQueryResponse, parseNbnsPacket } from '../../src/wpad/nbnsPacket.js';
import { dnsFormatAnswer } from '../../src/wpad/nameProbes.js';
// Plain-JS PRNG shared with the core's fuzzer.
import { caseSeed, rng } from './lib/mutate.mjs';

const SEED = 0x4e42_4e53;
const CASES = 30_000;
// dns-packet refuses by throwing (a stack trace each): fewer cases keep the test quick.
const DNS_CASES = 10_000;
// A parse of at most 1 KiB takes microseconds; the bound leaves room for a GC pause on a loaded machine.
const CASE_BOUND_MS = 250;
const WALL_CAP_MS = 20_000;
const INTERESTING = [0x00, 0x01, 0x0f, 0x20, 0x21, 0x3f, 0x40, 0x41, 0x50, 0x7f, 0x80, 0xc0, 0xc1, 0xff];

function seeds(): Buffer[] {
  const pointer = encodeNameQuery({ id: 7, name: 'WPAD' });
  pointer.writeUInt16BE(0x8400, 2);
  pointer.writeUInt16BE(1, 6);
  return [
    encodeNameQuery({ id: 1, name: 'WPAD' }),
    encodeNameQuery({ id: 2, name: 'Q7XK2PZ9', suffix: 0x20, scope: 'corp.example' }),
    encodeNameQueryResponse({ id: 3, name: 'WPAD', addresses: ['10.0.0.66'] }),
    encodeNameQueryResponse({ id: 4, name: 'FILESERVER', scope: 'a.b', addresses: Array.from({ length: 32 }, (_, i) => `10.0.${i}.1`) }),
    Buffer.concat([pointer, Buffer.from([0xc0, 12, 0x00, 0x20, 0x00, 0x01, 0, 0, 0, 60, 0, 6, 0, 0, 10, 0, 0, 66])]),
  ];
}

function mutate(base: Buffer, r: ReturnType<typeof rng>): Buffer {
  let b = Buffer.from(base);
  const ops = 1 + r.int(4);
  for (let k = 0; k < ops; k++) {
    const at = r.int(b.length);
    switch (r.int(7)) {
      case 0: b[at] = b[at]! ^ (1 << r.int(8)); break;
      case 1: b[at] = r.pick(INTERESTING); break;
      case 2: if (b.length >= 12) b.writeUInt16BE(r.pick([0, 1, 2, 8, 9, 0xff, 0xffff]), 4 + 2 * r.int(4)); break;
      case 3: b = b.subarray(0, r.int(b.length + 1)); break;
      case 4: b = Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: 1 + r.int(16) }, () => r.int(256))), b.subarray(at)]); break;
      case 5: { const len = 1 + r.int(40); b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + len), b.subarray(at)]); break; }
      default: if (at + 1 < b.length) b.writeUInt16BE(r.pick([0xc000, 0xc00c, 0xffff, 0x3fff, 0x0006, 0xfff0]), at);
    }
    if (b.length === 0) break;
  }
  return b;
}

describe('NBNS parser mutation fuzzing (seeded)', () => {
  it(`${CASES} mutations of valid packets: a packet or NbnsFormatError, within bounds, fast`, () => {
    const base = seeds();
    const outcomes = { parsed: 0, refused: 0 };
    const crashes: string[] = [];
    const slow: string[] = [];
    const started = Date.now();
    let i = 0;
    for (; i < CASES && Date.now() - started < WALL_CAP_MS; i++) {
      const r = rng(caseSeed(SEED, i));
      const input = mutate(r.pick(base), r);
      const t0 = performance.now();
      try {
        const p = parseNbnsPacket(input);
        outcomes.parsed++;
        if (p.questions.length > 8 || p.answers.length > 8) crashes.push(`case ${i}: record bound exceeded`);
        for (const n of [...p.questions, ...p.answers]) {
          if (n.name.length > 15 || n.scope.length > 255) crashes.push(`case ${i}: name bound exceeded`);
        }
        for (const a of p.answers) if (a.addresses.length > 32) crashes.push(`case ${i}: address bound exceeded`);
      } catch (e) {
        if (e instanceof NbnsFormatError) outcomes.refused++;
        else crashes.push(`case ${i}: ${(e as Error)?.stack ?? String(e)} on ${input.toString('hex')}`);
      }
      const ms = performance.now() - t0;
      if (ms > CASE_BOUND_MS) slow.push(`case ${i}: ${ms.toFixed(1)} ms`);
    }
    console.log(`[nbns] ${i} cases in ${Date.now() - started} ms: ${JSON.stringify(outcomes)}`);
    expect(i, 'the wall-clock cap cut the run short').toBe(CASES);
    expect(crashes).toEqual([]);
    expect(slow).toEqual([]);
    // The fuzzer must reach both outcomes, or it tests nothing.
    expect(outcomes.parsed).toBeGreaterThan(CASES / 20);
    expect(outcomes.refused).toBeGreaterThan(CASES / 20);
  });

  it(`${DNS_CASES} mutations of DNS/LLMNR/mDNS answers through the guard's reader (dns-packet): addresses or nothing, never a throw`, () => {
    const base = [
      dnsPacket.encode({ type: 'response', id: 9, flags: 0, questions: [{ type: 'A', name: 'wpad' }], answers: [{ type: 'A', name: 'wpad', ttl: 30, data: '10.66.0.66' }] }),
      dnsPacket.encode({ type: 'response', id: 9, flags: 0, questions: [{ type: 'A', name: 'wpad.lab.test' }], answers: [
        { type: 'A', name: 'wpad.lab.test', ttl: 30, data: '10.66.0.66' }, { type: 'AAAA', name: 'wpad.lab.test', ttl: 30, data: 'fd66::66' },
        { type: 'CNAME', name: 'wpad.lab.test', ttl: 30, data: 'x.lab.test' }] }),
    ];
    const names = ['wpad', 'wpad.lab.test'];
    const crashes: string[] = [];
    let found = 0;
    const started = Date.now();
    let i = 0;
    for (; i < DNS_CASES && Date.now() - started < WALL_CAP_MS; i++) {
      const r = rng(caseSeed(SEED ^ 0xd45, i));
      const input = mutate(r.pick(base), r);
      try {
        const a = dnsFormatAnswer(input, r.chance(0.5) ? 9 : undefined, r.pick(names));
        if (a) {
          found++;
          if (!a.every((x) => typeof x === 'string')) crashes.push(`case ${i}: non-string address`);
        }
      } catch (e) {
        crashes.push(`case ${i}: ${(e as Error)?.stack ?? String(e)}`);
      }
    }
    console.log(`[dns-format] ${i} cases in ${Date.now() - started} ms, ${found} with addresses`);
    expect(i).toBe(DNS_CASES);
    expect(crashes).toEqual([]);
    expect(found).toBeGreaterThan(DNS_CASES / 20);
  });
});
