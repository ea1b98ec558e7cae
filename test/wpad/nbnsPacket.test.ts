/**
 * The NBNS codec (src/wpad/nbnsPacket.ts): RFC 1002's own example of the name encoding, round
 * trips of queries and answers for any name, suffix, scope, id and address list (fast-check, fixed
 * seed), name compression, and the parser's bounds. The mutation fuzz is test/fuzz/nbns-fuzz.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  NBNS_CLASS_IN, NBNS_FLAG_BROADCAST, NBNS_TYPE_NB, NbnsFormatError, encodeNameQuery, encodeNameQueryResponse, encodeNetbiosName, parseNbnsPacket,
} from '../../src/wpad/nbnsPacket.js';

const SEED = 20261203;
const nameArb = fc.stringMatching(/^[A-Z0-9!#$%&'()\-@^_{}~]{1,15}$/);
const scopeArb = fc.array(fc.stringMatching(/^[a-z0-9-]{1,20}$/), { maxLength: 3 }).map((l) => l.join('.'));
const ipv4Arb = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));

describe('NBNS name encoding (RFC 1002 4.1)', () => {
  it('encodes RFC 1002\'s example FRED as EGFCEFEECACA...', () => {
    const enc = encodeNetbiosName({ name: 'FRED', suffix: 0x20 });
    expect(enc[0]).toBe(32);
    expect(enc.subarray(1, 33).toString('latin1')).toBe('EGFCEFEECACACACACACACACACACACACA');
    expect(enc[33]).toBe(0);
  });

  it('a WPAD query is a broadcast NB/IN question with the workstation suffix', () => {
    const p = parseNbnsPacket(encodeNameQuery({ id: 0x1234, name: 'wpad' }));
    expect(p).toMatchObject({ id: 0x1234, response: false, opcode: 0, answers: [] });
    expect(p.flags & NBNS_FLAG_BROADCAST).toBeTruthy();
    expect(p.questions).toEqual([{ name: 'WPAD', suffix: 0, scope: '', type: NBNS_TYPE_NB, class: NBNS_CLASS_IN }]);
  });

  it('refuses names it cannot encode', () => {
    for (const name of ['', 'SIXTEENCHARACTER', 'A B', 'A.B', 'é']) expect(() => encodeNetbiosName({ name })).toThrow(RangeError);
    expect(() => encodeNetbiosName({ name: 'A', suffix: 256 })).toThrow(RangeError);
  });
});

describe('NBNS packets: round trips (fast-check)', () => {
  it('any query parses back to its id, name, suffix and scope', () => {
    fc.assert(fc.property(fc.nat(0xffff), nameArb, fc.nat(255), scopeArb, (id, name, suffix, scope) => {
      const p = parseNbnsPacket(encodeNameQuery({ id, name, suffix, scope }));
      expect(p.id).toBe(id);
      expect(p.questions).toEqual([{ name, suffix, scope, type: NBNS_TYPE_NB, class: NBNS_CLASS_IN }]);
    }), { seed: SEED, numRuns: 300 });
  });

  it('any positive answer parses back to its name and addresses', () => {
    fc.assert(fc.property(fc.nat(0xffff), nameArb, scopeArb, fc.array(ipv4Arb, { minLength: 1, maxLength: 32 }), fc.nat(), (id, name, scope, addresses, ttl) => {
      const p = parseNbnsPacket(encodeNameQueryResponse({ id, name, scope, addresses, ttl }));
      expect(p.response).toBe(true);
      expect(p.questions).toEqual([]);
      expect(p.answers).toHaveLength(1);
      expect(p.answers[0]).toMatchObject({ name, scope, suffix: 0, ttl, type: NBNS_TYPE_NB });
      expect(p.answers[0]!.addresses.map((a) => a.address)).toEqual(addresses);
    }), { seed: SEED, numRuns: 300 });
  });

  it('any byte string parses or throws NbnsFormatError, nothing else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      try { parseNbnsPacket(bytes); } catch (e) { expect(e).toBeInstanceOf(NbnsFormatError); }
    }), { seed: SEED, numRuns: 2000 });
  });

  it('a valid header followed by random records parses or throws NbnsFormatError', () => {
    const head = fc.tuple(fc.nat(0xffff), fc.nat(0xffff), fc.nat(9), fc.nat(9), fc.nat(2), fc.nat(2)).map(([id, f, a, b, c, d]) => {
      const h = Buffer.alloc(12);
      [id, f, a, b, c, d].forEach((v, i) => h.writeUInt16BE(v, 2 * i));
      return h;
    });
    fc.assert(fc.property(head, fc.uint8Array({ maxLength: 300 }), (h, body) => {
      try { parseNbnsPacket(Buffer.concat([h, body])); } catch (e) { expect(e).toBeInstanceOf(NbnsFormatError); }
    }), { seed: SEED, numRuns: 2000 });
  });
});

describe('NBNS parser: compression and bounds', () => {
  const answerWithPointer = () => {
    // An answer whose RR_NAME is a pointer to the question's name (offset 12), as RFC 1002 4.2.1.2 allows.
    const q = encodeNameQuery({ id: 7, name: 'WPAD' });
    q.writeUInt16BE(0x8400, 2);
    q.writeUInt16BE(1, 6);
    const rr = Buffer.from([0xc0, 12, 0x00, 0x20, 0x00, 0x01, 0, 0, 0, 60, 0, 6, 0, 0, 10, 0, 0, 66]);
    return Buffer.concat([q, rr]);
  };

  it('follows a backward pointer', () => {
    const p = parseNbnsPacket(answerWithPointer());
    expect(p.answers).toEqual([{ name: 'WPAD', suffix: 0, scope: '', type: NBNS_TYPE_NB, class: NBNS_CLASS_IN, ttl: 60, addresses: [{ flags: 0, address: '10.0.0.66' }] }]);
  });

  it('refuses a pointer to itself or forwards (no loop)', () => {
    const b = answerWithPointer();
    const at = b.length - 18;
    b.writeUInt16BE(0xc000 | at, at);
    expect(() => parseNbnsPacket(b)).toThrow(/pointer/);
  });

  it('refuses oversized packets, too many records, bad nibbles, ragged NB data', () => {
    expect(() => parseNbnsPacket(Buffer.alloc(2000))).toThrow(/exceeds/);
    const many = encodeNameQuery({ id: 1, name: 'X' });
    many.writeUInt16BE(9, 4);
    expect(() => parseNbnsPacket(many)).toThrow(/more than 8/);
    const nibble = encodeNameQuery({ id: 1, name: 'X' });
    nibble[13] = 0x5a; // 'Z'
    expect(() => parseNbnsPacket(nibble)).toThrow(/A-P/);
    const ragged = answerWithPointer();
    ragged.writeUInt16BE(5, ragged.length - 8);
    expect(() => parseNbnsPacket(ragged.subarray(0, ragged.length - 1))).toThrow(/multiple of 6/);
    expect(() => parseNbnsPacket(Buffer.alloc(5))).toThrow(NbnsFormatError);
  });
});
