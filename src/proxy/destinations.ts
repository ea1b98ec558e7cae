import { lookup } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import { networkInterfaces } from 'node:os';
import { addressIdentity, plainAddress, type AccessDenial, type AccessPolicy } from '../policy/accessPolicy.js';
import type { HostRules } from '../policy/hostRules.js';

/**
 * A destination's addresses, as the gate will connect to them. A literal is itself; a name is
 * resolved once here, and the connection is then made to exactly these addresses (pinnedLookup),
 * so that a name cannot resolve to a public address for the check and to loopback for the connect.
 * Through an upstream proxy the gate does not resolve (the proxy does): only literals, and the
 * `localhost` names (RFC 6761), are known.
 */
export async function destinationAddresses(host: string, viaUpstreamProxy: boolean): Promise<string[]> {
  if (isIP(host)) return [host];
  if (host === 'localhost' || host.endsWith('.localhost')) return viaUpstreamProxy ? ['127.0.0.1'] : resolve(host);
  if (viaUpstreamProxy) return [];
  return resolve(host);
}

/** How long a name's addresses are reused (one lookup per host and period, not one per request); failures are not kept. */
const RESOLVED_TTL_MS = 10_000;
const RESOLVED_MAX = 1000;
const resolved = new Map<string, { addresses: string[]; at: number }>();

async function resolve(host: string): Promise<string[]> {
  const hit = resolved.get(host);
  if (hit && Date.now() - hit.at < RESOLVED_TTL_MS) return hit.addresses;
  const addresses = (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
  resolved.delete(host);
  resolved.set(host, { addresses, at: Date.now() });
  if (resolved.size > RESOLVED_MAX) resolved.delete(resolved.keys().next().value!);
  return addresses;
}

/** A `lookup` for http.request / net.connect that answers with the addresses already checked. */
export function pinnedLookup(addresses: string[]): LookupFunction {
  const entries = addresses.map((address) => ({ address, family: isIP(address) }));
  return ((_host: string, opts: { all?: boolean } | number | ((...a: unknown[]) => void), cb?: (...a: unknown[]) => void) => {
    const callback = (typeof opts === 'function' ? opts : cb)!;
    const all = typeof opts === 'object' && opts?.all;
    if (all) return process.nextTick(callback, null, entries);
    process.nextTick(callback, null, entries[0]!.address, entries[0]!.family);
  }) as unknown as LookupFunction;
}

/**
 * The gate's own endpoints (its proxy port and admin port): a destination never reached through
 * the proxy. An endpoint bound to an unspecified address covers every address of this machine.
 */
export function ownEndpointCheck(endpoints: () => { host: string; port: number }[]): (address: string, port: number) => boolean {
  const local = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) local.add(plainAddress(i.address));
  const isThisMachine = (a: string) => addressIdentity(a) === 'this-machine' || local.has(plainAddress(a));
  return (address, port) => endpoints().some((e) => {
    if (e.port !== port) return false;
    const h = plainAddress(e.host);
    if (h === '0.0.0.0' || h === '::' || h === '') return isThisMachine(address);
    if (isIP(h)) return plainAddress(address) === h || (addressIdentity(h) === 'this-machine' && addressIdentity(address) === 'this-machine');
    return isThisMachine(address); // a name (localhost): treat as this machine
  });
}

/**
 * `inspectAddresses`: the addresses of the inspected hosts named exactly, resolved again when
 * older than `ttlMs`, to tell whether another name (or literal) is an alias of one of them.
 * Loopback and unspecified addresses count as one (they all reach this machine).
 */
export class InspectedAddresses {
  private identities = new Set<string>();
  private resolvedAt = 0;
  private pending: Promise<void> | undefined;

  constructor(private readonly names: string[], private readonly ttlMs = 30_000) {}

  async isAlias(addresses: string[]): Promise<boolean> {
    if (addresses.length === 0 || this.names.length === 0) return false;
    if (Date.now() - this.resolvedAt > this.ttlMs) await this.refresh();
    return addresses.some((a) => this.identities.has(addressIdentity(a)));
  }

  private refresh(): Promise<void> {
    this.pending ??= (async () => {
      const ids = new Set<string>();
      await Promise.all(this.names.map(async (n) => {
        try {
          for (const a of await destinationAddresses(n, false)) ids.add(addressIdentity(a));
        } catch { /* a name that does not resolve has no aliases */ }
      }));
      this.identities = ids;
      this.resolvedAt = Date.now();
    })().finally(() => { this.pending = undefined; });
    return this.pending;
  }
}

/**
 * May the gate take a client to host:port? By name and port first (rules: passThrough, ports),
 * then by the addresses the name resolves to (never the gate itself; loopback and link-local only
 * for a host a rule names exactly). The addresses returned are the ones to connect to. One
 * admission for CONNECTs, requests and WebSocket upgrades.
 */
export class DestinationAdmission {
  private readonly own: (address: string, port: number) => boolean;
  private readonly inspected: InspectedAddresses | undefined;
  /**
   * Address decisions already made (host, port, the addresses it resolved to): the rules, the
   * gate's endpoints and this machine's interfaces are fixed for the gate's life, so the same
   * question has the same answer. Bounded: cleared when full.
   */
  private readonly byAddresses = new Map<string, AccessDenial | null>();

  constructor(private readonly o: { access: AccessPolicy; hostRules: HostRules; viaUpstreamProxy: boolean; ownEndpoints: () => { host: string; port: number }[] }) {
    this.own = ownEndpointCheck(o.ownEndpoints);
    this.inspected = o.access.rules.inspectAddresses ? new InspectedAddresses(o.hostRules.exactNames('inspect')) : undefined;
  }

  /** `tunnelled`: a request inside an admitted CONNECT (its port was checked then; the addresses are checked again). */
  async admit(host: string, port: number, kind: 'connect' | 'http' | 'tunnelled'): Promise<AccessDenial | { addresses: string[]; unresolved?: string }> {
    const byName = kind === 'tunnelled' ? undefined : this.o.access.destination(host, port, kind);
    if (byName) return byName;
    let addresses: string[];
    try {
      addresses = await destinationAddresses(host, this.o.viaUpstreamProxy);
    } catch (e) {
      // Nothing to connect to: the caller answers as for an unreachable upstream (an interception goes on: each request resolves again).
      return { addresses: [], unresolved: `${host} does not resolve (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
    }
    const key = `${host}|${port}|${addresses.join(',')}`;
    let denial = this.byAddresses.get(key);
    if (denial === undefined) {
      denial = this.o.access.addresses(host, port, addresses, this.own) ?? null;
      if (this.byAddresses.size >= 4096) this.byAddresses.clear();
      this.byAddresses.set(key, denial);
    }
    return denial ?? { addresses };
  }

  /** inspectAddresses: is a destination an alias (same address) of an inspected host named exactly? */
  async isInspectedAlias(addresses: string[]): Promise<boolean> {
    return this.inspected ? this.inspected.isAlias(addresses) : false;
  }
}
