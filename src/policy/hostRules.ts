import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { HostRule } from './rulesFile.js';

export type HostMode = 'inspect' | 'pinned' | 'pass';

export interface HostDecision {
  mode: HostMode;
  /** The rule that matched, or undefined for "no rule" (which means pass). */
  rule?: HostRule;
}

/** Lower-cases and strips a trailing dot and IPv6 brackets: the form host patterns compare against. */
export function canonicalHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

/**
 * One spelling per address, so that host patterns cannot be walked around: an IPv4-mapped IPv6
 * literal becomes its IPv4 address; numeric forms other than the canonical dotted quad
 * (`127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1`, `127.000.000.001`) give undefined: refuse them.
 */
export function targetHost(host: string): string | undefined {
  const h = canonicalHost(host);
  if (isIP(h) === 6) {
    // A zone index (`fe80::1%eth0`) names an interface of this machine, not a destination: refused.
    if (h.includes('%')) return undefined;
    const normal = new URL(`http://[${h}]/`).hostname.slice(1, -1);
    const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(normal);
    if (m) {
      const hi = parseInt(m[1]!, 16);
      const lo = parseInt(m[2]!, 16);
      return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    }
    return normal;
  }
  if (isIP(h) === 4) return h;
  // Anything made only of digits, dots and hex prefixes is a numeric spelling resolvers accept: refuse.
  if (/^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$/i.test(h)) return undefined;
  return h;
}

/** The spelling a host and a pattern compare in: canonicalHost, and an IP literal in its one form (targetHost). */
function comparableHost(host: string): string {
  const h = canonicalHost(host);
  return isIP(h) ? targetHost(h) ?? h : h;
}

/**
 * `*.example.com` matches any name below example.com (not example.com itself); others match exactly,
 * an IP literal whatever its spelling (`::1` is `0:0:0:0:0:0:0:1`). The one host matcher: the rules
 * and the interception CA's current host list both ask it.
 */
export function hostMatches(pattern: string, host: string): boolean {
  return matchesHost(compileHostPattern(pattern), comparableHost(host));
}

/**
 * Host patterns read once, for a caller that asks about many hosts (trust channels, per request):
 * the same matching as hostMatches.
 */
export function hostPatternsMatcher(patterns: readonly string[]): (host: string) => boolean {
  const compiled = patterns.map(compileHostPattern);
  return (host) => {
    const h = comparableHost(host);
    return compiled.some((p) => matchesHost(p, h));
  };
}

/** Path patterns read once: the same matching as pathMatches. */
export function pathPatternsMatcher(patterns: readonly string[]): (path: string) => boolean {
  const compiled = patterns.map(pathPattern);
  return (path) => {
    const p = path.split('?')[0] ?? '';
    return compiled.some((r) => r.test(p));
  };
}

/** A host pattern read once: a suffix (`.example.com` for `*.example.com`) or one exact host. */
type HostPattern = { suffix: string } | { exact: string };

function compileHostPattern(pattern: string): HostPattern {
  const p = canonicalHost(pattern);
  return p.startsWith('*.') ? { suffix: p.slice(1) } : { exact: comparableHost(p) };
}

/** `host` in comparableHost's spelling. */
function matchesHost(p: HostPattern, host: string): boolean {
  return 'suffix' in p ? host.length > p.suffix.length && host.endsWith(p.suffix) : p.exact === host;
}

const DNS_CHARS = /^[A-Za-z0-9.-]+$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]+$/;

/**
 * A name safe to connect to, to issue a certificate for (and anywhere it might become part of a
 * path): an LDH DNS name (labels 1-63 characters, no leading or trailing hyphen, at most 253
 * characters, no leading or trailing dot, a last label that is not all digits), an IPv4 dotted quad
 * (no leading zeros) or a bracket-less IPv6 literal without a zone. Everything else (`..`, `/`, `\`,
 * `%`, control characters, spaces, brackets, empty) is refused.
 */
export function isSafeHostName(host: string): boolean {
  if (typeof host !== 'string' || host.length === 0 || host.length > 253) return false;
  if (host.includes(':')) return IPV6_CHARS.test(host) && isIPv6(host);
  if (isIPv4(host)) return true;
  if (!DNS_CHARS.test(host)) return false;
  const labels = host.split('.');
  for (const label of labels) {
    if (label.length < 1 || label.length > 63) return false;
    if (label.startsWith('-') || label.endsWith('-')) return false;
  }
  // An all-numeric last label is no DNS name (RFC 3696 2), and it is not a valid IPv4 literal either.
  return !/^\d+$/.test(labels[labels.length - 1] ?? '');
}

/** Path patterns: `*` matches any run of characters (including `/`); the query string is ignored. */
export function pathMatches(pattern: string, path: string): boolean {
  return pathPattern(pattern).test(path.split('?')[0] ?? '');
}

function pathPattern(pattern: string): RegExp {
  return new RegExp('^' + pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
}

/**
 * Which mode applies to a host (and path): the first rule whose pattern matches wins. A host no
 * rule names is passed untouched. Paths only narrow `inspect`: an inspect rule whose paths do not
 * match the request falls through to the next rule.
 */
export class HostRules {
  /** The rules' patterns read once (decide runs several times per request). */
  private readonly compiled: { rule: HostRule; host: HostPattern; paths: RegExp[] | undefined }[];

  constructor(private readonly rules: HostRule[]) {
    this.compiled = rules.map((rule) => ({ rule, host: compileHostPattern(rule.pattern), paths: rule.paths?.map(pathPattern) }));
  }

  decide(host: string, path?: string): HostDecision {
    const h = comparableHost(host);
    const p = path === undefined ? undefined : path.split('?')[0] ?? '';
    for (const c of this.compiled) {
      if (!matchesHost(c.host, h)) continue;
      if (c.paths && p !== undefined && !c.paths.some((re) => re.test(p))) continue;
      return { mode: c.rule.mode, rule: c.rule };
    }
    return { mode: 'pass' };
  }

  /** Mode for a CONNECT, where no path is known: paths do not narrow it. */
  decideConnect(host: string): HostDecision {
    const h = comparableHost(host);
    for (const c of this.compiled) if (matchesHost(c.host, h)) return { mode: c.rule.mode, rule: c.rule };
    return { mode: 'pass' };
  }

  /** Does a rule name this host exactly (a pattern without wildcard)? Such a host may be loopback or link-local. */
  namesExactly(host: string): boolean {
    const h = comparableHost(host);
    return this.compiled.some((c) => 'exact' in c.host && c.host.exact === h);
  }

  /** Patterns named exactly (no wildcard) in a mode: the names whose addresses `inspectAddresses` compares against. */
  exactNames(mode: HostMode): string[] {
    return this.rules.filter((r) => r.mode === mode && !r.pattern.includes('*')).map((r) => canonicalHost(r.pattern));
  }

  /** Inspected patterns all of whose rules hold in tail mode (`hosts[].hold: tail`), for the Squid configuration's delay pool. */
  tailPatterns(): string[] {
    const inspect = this.rules.filter((r) => r.mode === 'inspect');
    return [...new Set(inspect.map((r) => r.pattern))].filter((p) => inspect.every((r) => r.pattern !== p || r.hold === 'tail'));
  }

  /** Patterns in a given mode, for the PAC file and the interception CA's name constraints. */
  patterns(mode: HostMode): string[] {
    return this.rules.filter((r) => r.mode === mode).map((r) => r.pattern);
  }
}
