import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { isIPv4 } from 'node:net';
import dnsPacket from 'dns-packet';
import { encodeNameQuery, parseNbnsPacket } from './nbnsPacket.js';

export type NameProtocol = 'dns' | 'llmnr' | 'nbns' | 'mdns';

/** One answer heard: who sent it, for which name, and which addresses it gave. */
export interface NameAnswer {
  protocol: NameProtocol;
  /** The interface the query went out on ('' for DNS, which follows the host's routing). */
  interface: string;
  asked: string;
  responder: string;
  addresses: string[];
}

/** An interface to probe: its name and IPv4 address, the subnet's broadcast address, and an IPv6 address when it has one. */
export interface ProbeInterface {
  name: string;
  address: string;
  broadcast: string;
  /** Link-local (with its `%IF` scope) when there is one, else another IPv6 address: LLMNR over IPv6 goes from it. */
  address6?: string;
}

export const LLMNR_GROUP = '224.0.0.252';
export const LLMNR_GROUP6 = 'ff02::1:3';
export const LLMNR_PORT = 5355;
export const MDNS_GROUP = '224.0.0.251';
export const MDNS_PORT = 5353;
export const NBNS_PORT = 137;

/** Bounds of one probe: datagrams read (the rest are dropped) and the largest datagram parsed. */
const MAX_DATAGRAMS_PER_PROBE = 64;
const MAX_DATAGRAM = 1500;
const MAX_ADDRESSES_PER_ANSWER = 16;

/** A name no honest resolver knows: 12 random letters (fits NetBIOS' 15 characters). */
export function randomProbeName(): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let s = '';
  for (let i = 0; i < 12; i++) s += letters[randomInt(letters.length)];
  return s;
}

/**
 * Sends one datagram and collects the replies for `windowMs`: a socket of its own, bound to
 * `bindAddress` (the interface's address, so that broadcast and multicast leave by that interface
 * only), closed when the window ends. `read` turns a datagram into an answer or nothing.
 */
function exchange(o: {
  bindAddress: string; packet: Buffer; port: number; host: string; windowMs: number;
  setup?: (s: dgram.Socket) => void; read: (msg: Buffer, from: dgram.RemoteInfo) => NameAnswer | undefined;
}): Promise<NameAnswer[]> {
  const family = isIPv4(o.bindAddress) ? 'udp4' : 'udp6';
  const sock = dgram.createSocket({ type: family, reuseAddr: false });
  const answers: NameAnswer[] = [];
  let seen = 0;
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try { sock.close(); } catch { /* already closed */ }
      resolve(answers);
    };
    const timer = setTimeout(finish, o.windowMs);
    sock.on('error', (e) => {
      process.stderr.write(`patchgate: wpad-guard: ${o.host}:${o.port}: ${e.message}\n`);
      finish();
    });
    sock.on('message', (msg, from) => {
      if (++seen > MAX_DATAGRAMS_PER_PROBE || msg.length > MAX_DATAGRAM) return;
      let a: NameAnswer | undefined;
      // Whatever a datagram holds, it is an answer or it is dropped: nothing on the wire ends the process.
      try { a = o.read(msg, from); } catch { return; }
      if (a) answers.push({ ...a, addresses: a.addresses.slice(0, MAX_ADDRESSES_PER_ANSWER) });
    });
    sock.bind(0, o.bindAddress, () => {
      try {
        o.setup?.(sock);
      } catch (e) {
        process.stderr.write(`patchgate: wpad-guard: ${o.host}:${o.port}: ${(e as Error).message}\n`);
        return finish();
      }
      sock.send(o.packet, o.port, o.host, (e) => { if (e) sock.emit('error', e); });
    });
  });
}

const sameName = (a: string | undefined, b: string) => typeof a === 'string' && a.replace(/\.$/, '').toLowerCase() === b.toLowerCase();

/** A/AAAA records for `name` in a DNS-format reply (DNS, LLMNR, mDNS) with our id, else nothing (also for any malformed packet). */
export function dnsFormatAnswer(msg: Buffer, id: number | undefined, name: string): string[] | undefined {
  let p: dnsPacket.DecodedPacket;
  try { p = dnsPacket.decode(msg); } catch { return undefined; }
  if (p.type !== 'response' || (id !== undefined && p.id !== id)) return undefined;
  const addresses = (p.answers ?? [])
    .filter((a) => (a.type === 'A' || a.type === 'AAAA') && sameName(a.name, name))
    .map((a) => (a as { data?: unknown }).data)
    .filter((d): d is string => typeof d === 'string');
  return addresses.length ? addresses : undefined;
}

/** DNS: A? `name` to `server` port 53 (or `port`), answers only from that server with our id. */
export function probeDns(o: { name: string; server: string; port?: number; windowMs: number }): Promise<NameAnswer[]> {
  const id = randomInt(0x10000);
  const port = o.port ?? 53;
  return exchange({
    bindAddress: isIPv4(o.server) ? '0.0.0.0' : '::', port, host: o.server, windowMs: o.windowMs,
    packet: dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: o.name }] }),
    read: (msg, from) => {
      if (from.address !== o.server || from.port !== port) return undefined;
      const addresses = dnsFormatAnswer(msg, id, o.name);
      return addresses && { protocol: 'dns', interface: '', asked: o.name, responder: from.address, addresses };
    },
  });
}

/** LLMNR (RFC 4795): A? `name` to 224.0.0.252:5355, TTL 1, from the interface's address; every responder answers by unicast. */
export function probeLlmnr(o: { name: string; iface: ProbeInterface; windowMs: number }): Promise<NameAnswer[]> {
  const id = randomInt(0x10000);
  return exchange({
    bindAddress: o.iface.address, port: LLMNR_PORT, host: LLMNR_GROUP, windowMs: o.windowMs,
    packet: dnsPacket.encode({ type: 'query', id, flags: 0, questions: [{ type: 'A', name: o.name }] }),
    setup: (s) => { s.setMulticastInterface(o.iface.address); s.setMulticastTTL(1); s.setMulticastLoopback(false); },
    read: (msg, from) => {
      const addresses = dnsFormatAnswer(msg, id, o.name);
      return addresses && { protocol: 'llmnr', interface: o.iface.name, asked: o.name, responder: from.address, addresses };
    },
  });
}

/** LLMNR over IPv6: A? `name` to ff02::1:3 port 5355, hop limit 1, from the interface's IPv6 address. */
export function probeLlmnr6(o: { name: string; iface: ProbeInterface & { address6: string }; windowMs: number }): Promise<NameAnswer[]> {
  const id = randomInt(0x10000);
  return exchange({
    bindAddress: o.iface.address6, port: LLMNR_PORT, host: `${LLMNR_GROUP6}%${o.iface.name}`, windowMs: o.windowMs,
    packet: dnsPacket.encode({ type: 'query', id, flags: 0, questions: [{ type: 'A', name: o.name }] }),
    setup: (s) => { s.setMulticastInterface(`::%${o.iface.name}`); s.setMulticastTTL(1); s.setMulticastLoopback(false); },
    read: (msg, from) => {
      const addresses = dnsFormatAnswer(msg, id, o.name);
      return addresses && { protocol: 'llmnr', interface: o.iface.name, asked: o.name, responder: from.address.replace(/%.*$/, ''), addresses };
    },
  });
}

/**
 * mDNS (RFC 6762): A? `name`.local to 224.0.0.251:5353 from an ephemeral port, a "legacy
 * unicast" query that responders answer by unicast to that port (6.7), with the query's id.
 */
export function probeMdns(o: { name: string; iface: ProbeInterface; windowMs: number }): Promise<NameAnswer[]> {
  const id = randomInt(0x10000);
  return exchange({
    bindAddress: o.iface.address, port: MDNS_PORT, host: MDNS_GROUP, windowMs: o.windowMs,
    packet: dnsPacket.encode({ type: 'query', id, flags: 0, questions: [{ type: 'A', name: o.name }] }),
    setup: (s) => { s.setMulticastInterface(o.iface.address); s.setMulticastTTL(255); s.setMulticastLoopback(false); },
    // Some responders put id 0 in legacy unicast answers: the name decides.
    read: (msg, from) => {
      const addresses = dnsFormatAnswer(msg, undefined, o.name);
      return addresses && { protocol: 'mdns', interface: o.iface.name, asked: o.name, responder: from.address, addresses };
    },
  });
}

/** NBNS (RFC 1002): a broadcast name query for `name` to the subnet's broadcast address, port 137. */
export function probeNbns(o: { name: string; iface: ProbeInterface; windowMs: number; port?: number }): Promise<NameAnswer[]> {
  const id = randomInt(0x10000);
  const wanted = o.name.toUpperCase();
  return exchange({
    bindAddress: o.iface.address, port: o.port ?? NBNS_PORT, host: o.iface.broadcast, windowMs: o.windowMs,
    packet: encodeNameQuery({ id, name: o.name }),
    setup: (s) => s.setBroadcast(true),
    read: (msg, from) => {
      let p;
      try { p = parseNbnsPacket(msg); } catch { return undefined; }
      if (!p.response || p.id !== id || p.rcode !== 0) return undefined;
      const addresses = p.answers.filter((a) => a.name === wanted).flatMap((a) => a.addresses.map((x) => x.address));
      return addresses.length ? { protocol: 'nbns', interface: o.iface.name, asked: o.name, responder: from.address, addresses } : undefined;
    },
  });
}
