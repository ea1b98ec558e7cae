/**
 * NetBIOS Name Service packets (RFC 1002 section 4.2): the name query the guard broadcasts, the
 * positive answer a responder sends, and a bounded parser for whatever comes back. No maintained
 * library covers NBNS, so this is ours; it is fuzzed (test/fuzz/nbns-fuzz.test.ts) like the other
 * parsers. The parser reads only what the packet claims and what the bounds below allow: it
 * returns a packet or throws NbnsFormatError, never anything else.
 */

export class NbnsFormatError extends Error {
  override readonly name = 'NbnsFormatError';
}

/** RR and question types (RFC 1002 4.2.1.2). */
export const NBNS_TYPE_NB = 0x0020;
export const NBNS_TYPE_NBSTAT = 0x0021;
export const NBNS_CLASS_IN = 0x0001;

/** Header flag bits (the NM_FLAGS field, shifted into the 16-bit flags word). */
export const NBNS_FLAG_RESPONSE = 0x8000;
export const NBNS_FLAG_AUTHORITATIVE = 0x0400;
export const NBNS_FLAG_TRUNCATED = 0x0200;
export const NBNS_FLAG_RECURSION_DESIRED = 0x0100;
export const NBNS_FLAG_RECURSION_AVAILABLE = 0x0080;
export const NBNS_FLAG_BROADCAST = 0x0010;

/** Bounds: a real answer has one question or one answer carrying a few addresses. */
export const NBNS_MAX_PACKET = 1024;
const MAX_RECORDS_PER_SECTION = 8;
const MAX_ADDRESSES_PER_RECORD = 32;
const MAX_POINTER_JUMPS = 8;
const MAX_ENCODED_NAME = 255;

export interface NetbiosName {
  /** The name as sent, without its padding (up to 15 characters). */
  name: string;
  /** The 16th byte: 0x00 workstation, 0x20 file server, 0x1c domain controllers... */
  suffix: number;
  /** The NetBIOS scope (dot-separated labels after the first), usually empty. */
  scope: string;
}

export interface NbnsQuestion extends NetbiosName {
  type: number;
  class: number;
}

export interface NbnsAddressEntry {
  /** NB_FLAGS: G (group) bit 0x8000, ONT (owner node type) bits 0x6000. */
  flags: number;
  address: string;
}

export interface NbnsAnswer extends NetbiosName {
  type: number;
  class: number;
  ttl: number;
  /** For NB records: the addresses (NB_FLAGS + IPv4 each); empty for other types. */
  addresses: NbnsAddressEntry[];
}

export interface NbnsPacket {
  id: number;
  flags: number;
  opcode: number;
  rcode: number;
  response: boolean;
  questions: NbnsQuestion[];
  answers: NbnsAnswer[];
}

const PAD = 0x20;

/**
 * The RFC 1002 4.1 "first-level" encoding: the 16-byte NetBIOS name (name padded with spaces to
 * 15 bytes, then the suffix byte), each byte split into two nibbles written as 'A' + nibble.
 */
export function encodeNetbiosName(n: { name: string; suffix?: number; scope?: string }): Buffer {
  const name = n.name.toUpperCase();
  if (name.length < 1 || name.length > 15) throw new RangeError(`a NetBIOS name has 1 to 15 characters, not ${name.length}`);
  if (!/^[\x21-\x7e]+$/.test(name) || name.includes('.')) throw new RangeError('a NetBIOS name is printable ASCII without spaces or dots');
  const suffix = n.suffix ?? 0;
  if (!Number.isInteger(suffix) || suffix < 0 || suffix > 255) throw new RangeError('the NetBIOS suffix is one byte');
  const raw = Buffer.alloc(16, PAD);
  raw.write(name, 0, 'latin1');
  raw[15] = suffix;
  const parts: Buffer[] = [Buffer.from([32])];
  const half = Buffer.alloc(32);
  for (let i = 0; i < 16; i++) {
    half[2 * i] = 0x41 + (raw[i]! >> 4);
    half[2 * i + 1] = 0x41 + (raw[i]! & 0x0f);
  }
  parts.push(half);
  for (const label of (n.scope ?? '').split('.').filter(Boolean)) {
    const b = Buffer.from(label, 'latin1');
    if (b.length > 63) throw new RangeError('a scope label has at most 63 bytes');
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > MAX_ENCODED_NAME) throw new RangeError('the encoded name exceeds 255 bytes');
  return out;
}

function header(id: number, flags: number, qd: number, an: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id & 0xffff, 0);
  h.writeUInt16BE(flags & 0xffff, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  return h;
}

/** A broadcast NAME QUERY REQUEST (RFC 1002 4.2.12) for one name, type NB, class IN. */
export function encodeNameQuery(q: { id: number; name: string; suffix?: number; scope?: string; broadcast?: boolean }): Buffer {
  const flags = NBNS_FLAG_RECURSION_DESIRED | (q.broadcast === false ? 0 : NBNS_FLAG_BROADCAST);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(NBNS_TYPE_NB, 0);
  tail.writeUInt16BE(NBNS_CLASS_IN, 2);
  return Buffer.concat([header(q.id, flags, 1, 0), encodeNetbiosName(q), tail]);
}

/** A POSITIVE NAME QUERY RESPONSE (RFC 1002 4.2.13): the name is at these IPv4 addresses. */
export function encodeNameQueryResponse(r: { id: number; name: string; suffix?: number; scope?: string; ttl?: number; addresses: string[] }): Buffer {
  if (r.addresses.length < 1 || r.addresses.length > MAX_ADDRESSES_PER_RECORD) throw new RangeError('an answer carries 1 to 32 addresses');
  const rdata = Buffer.alloc(6 * r.addresses.length);
  r.addresses.forEach((a, i) => {
    const octets = a.split('.').map(Number);
    if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) throw new RangeError(`"${a}" is not an IPv4 address`);
    rdata.writeUInt16BE(0, 6 * i); // B-node, unique name
    octets.forEach((o, j) => { rdata[6 * i + 2 + j] = o; });
  });
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(NBNS_TYPE_NB, 0);
  fixed.writeUInt16BE(NBNS_CLASS_IN, 2);
  fixed.writeUInt32BE((r.ttl ?? 300) >>> 0, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  const flags = NBNS_FLAG_RESPONSE | NBNS_FLAG_AUTHORITATIVE | NBNS_FLAG_RECURSION_DESIRED;
  return Buffer.concat([header(r.id, flags, 0, 1), encodeNetbiosName(r), fixed, rdata]);
}

class Reader {
  constructor(readonly buf: Buffer) {}
  need(at: number, n: number, what: string): void {
    if (at < 0 || at + n > this.buf.length) throw new NbnsFormatError(`truncated ${what} at offset ${at}`);
  }
  u16(at: number, what: string): number {
    this.need(at, 2, what);
    return this.buf.readUInt16BE(at);
  }
  u32(at: number, what: string): number {
    this.need(at, 4, what);
    return this.buf.readUInt32BE(at);
  }
}

/** Reads a (possibly compressed) name at `at`: the decoded name and the offset after it in place. */
function readName(r: Reader, at: number): { value: NetbiosName; end: number } {
  const labels: Buffer[] = [];
  let pos = at;
  let end = -1;
  let jumps = 0;
  let total = 0;
  for (;;) {
    r.need(pos, 1, 'name label');
    const len = r.buf[pos]!;
    if ((len & 0xc0) === 0xc0) {
      const ptr = r.u16(pos, 'name pointer') & 0x3fff;
      if (end < 0) end = pos + 2;
      if (++jumps > MAX_POINTER_JUMPS) throw new NbnsFormatError('too many name pointers');
      if (ptr >= pos) throw new NbnsFormatError('a name pointer that does not point backwards');
      pos = ptr;
      continue;
    }
    if (len & 0xc0) throw new NbnsFormatError(`reserved label type 0x${len.toString(16)}`);
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    r.need(pos + 1, len, 'name label');
    total += len + 1;
    if (total > MAX_ENCODED_NAME) throw new NbnsFormatError('name longer than 255 bytes');
    labels.push(r.buf.subarray(pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  const first = labels[0];
  if (!first || first.length !== 32) throw new NbnsFormatError('the first label of a NetBIOS name is 32 bytes');
  const raw = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) {
    const hi = first[2 * i]! - 0x41;
    const lo = first[2 * i + 1]! - 0x41;
    if (hi < 0 || hi > 15 || lo < 0 || lo > 15) throw new NbnsFormatError('a NetBIOS name encodes each nibble as A-P');
    raw[i] = (hi << 4) | lo;
  }
  const name = raw.subarray(0, 15).toString('latin1').replace(/ +$/, '');
  const scope = labels.slice(1).map((l) => l.toString('latin1')).join('.');
  return { value: { name, suffix: raw[15]!, scope }, end };
}

/** Parses an NBNS packet (bounded: at most NBNS_MAX_PACKET bytes, 8 records per section). */
export function parseNbnsPacket(input: Uint8Array): NbnsPacket {
  if (input.length > NBNS_MAX_PACKET) throw new NbnsFormatError(`packet of ${input.length} bytes exceeds ${NBNS_MAX_PACKET}`);
  const r = new Reader(Buffer.from(input.buffer, input.byteOffset, input.byteLength));
  r.need(0, 12, 'header');
  const id = r.u16(0, 'header');
  const flags = r.u16(2, 'header');
  const counts = [r.u16(4, 'header'), r.u16(6, 'header'), r.u16(8, 'header'), r.u16(10, 'header')];
  if (counts.some((c) => c > MAX_RECORDS_PER_SECTION)) throw new NbnsFormatError(`more than ${MAX_RECORDS_PER_SECTION} records in a section`);
  let pos = 12;
  const questions: NbnsQuestion[] = [];
  for (let i = 0; i < counts[0]!; i++) {
    const n = readName(r, pos);
    questions.push({ ...n.value, type: r.u16(n.end, 'question'), class: r.u16(n.end + 2, 'question') });
    pos = n.end + 4;
  }
  const answers: NbnsAnswer[] = [];
  // Answer, authority and additional records share one layout; the guard reads answers only.
  for (let i = 0; i < counts[1]! + counts[2]! + counts[3]!; i++) {
    const n = readName(r, pos);
    const type = r.u16(n.end, 'resource record');
    const cls = r.u16(n.end + 2, 'resource record');
    const ttl = r.u32(n.end + 4, 'resource record');
    const rdlength = r.u16(n.end + 8, 'resource record');
    const rdata = n.end + 10;
    r.need(rdata, rdlength, 'RDATA');
    pos = rdata + rdlength;
    if (i >= counts[1]!) continue;
    const addresses: NbnsAddressEntry[] = [];
    if (type === NBNS_TYPE_NB) {
      if (rdlength % 6 !== 0) throw new NbnsFormatError(`NB RDATA of ${rdlength} bytes is not a multiple of 6`);
      if (rdlength / 6 > MAX_ADDRESSES_PER_RECORD) throw new NbnsFormatError(`more than ${MAX_ADDRESSES_PER_RECORD} addresses in one record`);
      for (let off = rdata; off < pos; off += 6) {
        addresses.push({ flags: r.buf.readUInt16BE(off), address: `${r.buf[off + 2]}.${r.buf[off + 3]}.${r.buf[off + 4]}.${r.buf[off + 5]}` });
      }
    }
    answers.push({ ...n.value, type, class: cls, ttl, addresses });
  }
  // Bytes after the last record are ignored (padding some stacks add): a detector must not drop
  // a poisoner's answer over them.
  return { id, flags, opcode: (flags >> 11) & 0x0f, rcode: flags & 0x0f, response: (flags & NBNS_FLAG_RESPONSE) !== 0, questions, answers };
}
