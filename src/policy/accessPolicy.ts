import { BlockList, isIP } from 'node:net';
import type { HostRules } from './hostRules.js';
import { canonicalHost } from './hostRules.js';

/**
 * Who may use the gate and where it may take them (Squid's defaults as the model: `http_access
 * deny !localnet`, `deny CONNECT !SSL_ports`, `deny !Safe_ports`, `deny to_localhost`).
 * Pure decisions over names, ports and addresses; resolving names is the proxy's job.
 */
export interface AccessRules {
  /** Client address ranges (CIDR) allowed to use the proxy. */
  clients: string[];
  /** Hosts that are neither inspected nor pinned (nor named by a `pass` rule): proxied or refused. */
  passThrough: 'forward' | 'deny';
  /** Ports a CONNECT may reach (a host rule's `ports` add to it for that host). */
  connectPorts: number[];
  /** Ports plain HTTP may reach. */
  httpPorts: number[];
  /** Also inspect hosts whose resolved addresses are those of an inspected host named exactly. */
  inspectAddresses: boolean;
}

/** Loopback, the private ranges of RFC 1918, IPv6 unique-local and link-local: Squid's `localnet` plus loopback. */
export const DEFAULT_CLIENTS = ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7', 'fe80::/10'];
export const DEFAULT_CONNECT_PORTS = [443];
/** Plain HTTP: the web port and its usual alternative; WSUS (8530) and others must be named. */
export const DEFAULT_HTTP_PORTS = [80, 8080];

export function defaultAccessRules(): AccessRules {
  return { clients: [...DEFAULT_CLIENTS], passThrough: 'forward', connectPorts: [...DEFAULT_CONNECT_PORTS], httpPorts: [...DEFAULT_HTTP_PORTS], inspectAddresses: false };
}

/** Parses `a.b.c.d/n`, `x::y/n` or a bare address (a /32 or /128); undefined when it is not one. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const m = /^([^/\s]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  if (!m) return undefined;
  const address = m[1]!.replace(/^\[|\]$/g, '');
  const v = isIP(address);
  if (!v) return undefined;
  const max = v === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) return undefined;
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

/** An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports) as its IPv4 address. */
export function plainAddress(address: string): string {
  const a = canonicalHost(address);
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  return m ? m[1]! : a;
}

export function cidrList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c);
    if (!p) throw new Error(`"${c}" is not an address range (CIDR)`);
    list.addSubnet(p.address, p.prefix, p.family);
  }
  return list;
}

/** Is `address` (IPv4-mapped forms included) in `list`? */
export function inList(list: BlockList, address: string): boolean {
  const a = plainAddress(address);
  const v = isIP(a);
  return v !== 0 && list.check(a, v === 4 ? 'ipv4' : 'ipv6');
}

/** Addresses that reach this machine or its link only: never a destination unless a rule names the host. */
const NEVER_BY_DEFAULT = cidrList(['127.0.0.0/8', '0.0.0.0/8', '169.254.0.0/16', '::1/128', '::/128', 'fe80::/10']);

/** Is `address` loopback, unspecified ("this host") or link-local? */
export function isLocalOnlyAddress(address: string): boolean {
  return inList(NEVER_BY_DEFAULT, address);
}

/** Loopback and unspecified addresses all reach this machine: one identity when comparing origins. */
export function addressIdentity(address: string): string {
  const a = plainAddress(address);
  return inList(THIS_MACHINE, a) ? 'this-machine' : a;
}
const THIS_MACHINE = cidrList(['127.0.0.0/8', '0.0.0.0/32', '::1/128', '::/128']);

export type AccessDenial = { status: 403 | 400; why: string };

/** The access decisions for one gate: clients, destinations by name and port, then by address. */
export class AccessPolicy {
  private readonly clientList: BlockList;

  constructor(readonly rules: AccessRules, private readonly hostRules: HostRules) {
    this.clientList = cidrList(rules.clients);
  }

  /** Clients seen, and whether they may use the gate (a rules lookup per request otherwise; bounded). */
  private readonly clientsSeen = new Map<string, boolean>();

  clientAllowed(address: string | undefined): boolean {
    if (!address) return false;
    let ok = this.clientsSeen.get(address);
    if (ok === undefined) {
      ok = inList(this.clientList, address);
      if (this.clientsSeen.size >= 4096) this.clientsSeen.clear();
      this.clientsSeen.set(address, ok);
    }
    return ok;
  }

  /**
   * Destination by name and port, before any name is resolved. `kind` is how the client asked:
   * CONNECT (a tunnel or interception) or plain HTTP.
   */
  destination(host: string, port: number, kind: 'connect' | 'http'): AccessDenial | undefined {
    const d = kind === 'connect' ? this.hostRules.decideConnect(host) : this.hostRules.decide(host);
    if (!d.rule && this.rules.passThrough === 'deny') return { status: 403, why: `${host} is neither inspected nor pinned, and the rules' passThrough is deny` };
    const ports = kind === 'connect' ? this.rules.connectPorts : this.rules.httpPorts;
    const named = d.rule?.ports;
    if (!ports.includes(port) && !(named === 'any' || named?.includes(port))) {
      return { status: 403, why: `port ${port} is not allowed for ${kind === 'connect' ? 'CONNECT' : 'plain HTTP'} (rules: ports.${kind}, or a host rule's ports)` };
    }
    return undefined;
  }

  /**
   * Destination by address (a literal, or what the name resolved to): loopback, unspecified and
   * link-local addresses only for a host a rule names exactly (no wildcard); the gate's own
   * listening and admin endpoints never.
   */
  addresses(host: string, port: number, addresses: string[], own: (address: string, port: number) => boolean): AccessDenial | undefined {
    for (const a of addresses) {
      if (own(a, port)) return { status: 403, why: `${host}:${port} is the gate's own listening or admin address` };
      if (isLocalOnlyAddress(a) && !this.hostRules.namesExactly(host)) {
        return { status: 403, why: `${host} resolves to ${a}, a loopback or link-local address that no rule names` };
      }
    }
    return undefined;
  }
}
