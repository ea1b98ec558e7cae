import { isIP } from 'node:net';
import { isSafeHostName, targetHost } from '../policy/hostRules.js';

/** What a CONNECT named: the one destination requests inside its tunnel (plain or TLS) may name. */
export interface ConnectMark { host: string; port: number }

/** Where an admitted request goes, as the gate will fetch it. */
export interface OriginTarget {
  kind: 'origin';
  scheme: 'http' | 'https';
  /** targetHost's canonical spelling. */
  host: string;
  port: number;
  /** Origin-form: what goes on the upstream request line. */
  path: string;
  url: string;
}

/** How the gate reads one request line and Host header (pure: no socket, no rule). */
export type RequestTarget =
  | OriginTarget
  /** A request for the gate itself (origin-form outside any CONNECT, or absolute-form naming it): PAC file or 404. */
  | { kind: 'self'; path: string }
  /** Neither origin-form nor `http://` absolute-form, or a port that is no port: 400, audited BAD_REQUEST. */
  | { kind: 'bad-target'; path: string; host: string; why: string }
  /** A host name, Host header or disagreement that cannot be served: 400. */
  | { kind: 'bad-host'; why: string }
  /** Inside a CONNECT, a request naming another destination: 400, audited ACCESS_DENIED. */
  | { kind: 'outside-connect'; url: string; host: string; why: string };

/**
 * The host (and port) a Host header names. Hosts in absolute-form and Host must agree: a
 * disagreement is how smuggling starts. null: a Host header that does not parse (refused, never
 * ignored); undefined: none.
 */
export function hostOfHeader(h: string | undefined): { host: string; port?: number } | null | undefined {
  if (h === undefined) return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]\s/\\@?#]+)(?::(\d{1,5}))?$/.exec(h.trim());
  if (!m) return null;
  return { host: targetHost(m[1]!) ?? '(non-canonical)', ...(m[2] !== undefined ? { port: Number(m[2]) } : {}) };
}

const ABSOLUTE_HTTP = /^http:\/\/([^/]+)(.*)$/s;
/** An authority: a bracketed IPv6 literal or a name without colons, then an optional port. */
const AUTHORITY = /^(\[[^\]]*\]|[^:[\]]*)(?::([^:]*))?$/s;

/**
 * Reads a request's target. `http://host[:port]/path` (absolute-form) names its destination; an
 * origin-form target takes it from Host, and is for the gate itself unless it arrived through a
 * CONNECT or inside intercepted TLS. Inside a CONNECT the destination must be the CONNECT's.
 * An IPv6 literal is bracketed, in a target as in Host (`http://[::1]:8080/x`).
 */
export function readRequestTarget(
  rawTarget: string,
  hostHeader: string | undefined,
  via: { tls: boolean; connect: ConnectMark | undefined; isGate: (host: string, port: number) => boolean },
): RequestTarget {
  const abs = ABSOLUTE_HTTP.exec(rawTarget);
  const path = abs ? abs[2] || '/' : rawTarget;
  const outside = !via.tls && !via.connect;
  if (outside && !abs && rawTarget.startsWith('/')) return { kind: 'self', path };
  const authority = abs ? abs[1]! : hostHeader;
  if (authority === undefined) return { kind: 'bad-host', why: 'the request names no host (no Host header)' };
  // host[:port], where an IPv6 literal is bracketed (RFC 3986): `[::1]:8080`.
  const hostPort = AUTHORITY.exec(authority);
  if (!hostPort) return { kind: 'bad-host', why: 'bad host name (an IPv6 literal must be in brackets)' };
  const named = hostPort[1]!;
  const portText = hostPort[2];
  // Brackets hold an IPv6 literal and nothing else (`[example.com]` is no name).
  if (named.startsWith('[') && isIP(named.slice(1, -1)) !== 6) return { kind: 'bad-host', why: 'bad host name (brackets hold only an IPv6 literal)' };
  const defaultPort = via.tls ? 443 : 80;
  const namedPort = portText === undefined ? defaultPort : /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  // isGate sees the one spelling of an address (`[0::1]` is `::1`).
  if (outside && via.isGate(targetHost(named) ?? named, namedPort)) return { kind: 'self', path };
  const auditHost = targetHost(named) ?? named.trim().toLowerCase();
  // `*`, `HTTP://…`, `https://…`, `ftp://…`, `*@`: no resource the gate can fetch.
  if (!path.startsWith('/')) return { kind: 'bad-target', path, host: auditHost, why: 'the request target is neither origin-form (/path) nor http:// absolute-form' };
  if (!(Number.isInteger(namedPort) && namedPort >= 1 && namedPort <= 65535)) return { kind: 'bad-target', path, host: auditHost, why: 'the port is not a number from 1 to 65535' };
  const host = targetHost(named) ?? '';
  if (!host || !isSafeHostName(host)) return { kind: 'bad-host', why: 'bad host name (or a non-canonical IP address spelling)' };
  const hdr = hostOfHeader(hostHeader);
  if (hdr === null) return { kind: 'bad-host', why: 'the Host header does not parse' };
  if (hdr !== undefined && hdr.host !== host) return { kind: 'bad-host', why: 'Host header and request target disagree' };
  const scheme = via.tls ? 'https' : 'http';
  let port = namedPort;
  if (via.connect) {
    // The CONNECT named the destination and was admitted for it: a request inside may not name another.
    const c = via.connect;
    if (host !== c.host || (hdr?.port !== undefined && hdr.port !== c.port)) {
      return { kind: 'outside-connect', url: `${scheme}://${hostHeader ?? host}${path}`, host, why: `the request inside the CONNECT to ${c.host}:${c.port} names ${hdr ? hostHeader : host}` };
    }
    port = c.port;
  }
  const isDefault = (scheme === 'https' && port === 443) || (scheme === 'http' && port === 80);
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}${isDefault ? '' : `:${port}`}${path}`;
  return { kind: 'origin', scheme, host, port, path, url };
}
