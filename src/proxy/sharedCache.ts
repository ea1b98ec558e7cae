import type { IncomingHttpHeaders } from 'node:http';

/** What may be done with one upstream response besides answering the request that fetched it. */
export interface Sharing {
  /** Other clients may be served this response (those waiting now, and later ones while it is kept). */
  share: boolean;
  /** How long the verified copy may be kept for later requests (0: not kept). */
  keepMs: number;
  /** Why it is not shared or kept (for the debug log). */
  why?: string;
}

function directives(headers: IncomingHttpHeaders): Map<string, string | true> {
  const out = new Map<string, string | true>();
  const raw = ([] as string[]).concat(headers['cache-control'] ?? []).join(',');
  for (const part of raw.split(',')) {
    const m = /^\s*([a-z0-9!#$%&'*+.^_`|~-]+)\s*(?:=\s*"?([^",]*)"?)?\s*$/i.exec(part);
    if (m) out.set(m[1]!.toLowerCase(), m[2] ?? true);
  }
  return out;
}

const seconds = (v: string | true | undefined): number | undefined => (typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined);

/**
 * RFC 9111 for the gate's shared copies (concurrent requests joined to one download, and the
 * verified copy kept `ttlMs` for range requests): `no-store` and `private` responses are served only
 * to the request that fetched them; a response to a request with credentials (Authorization) is
 * shared only when it says `public`, `s-maxage` or `must-revalidate` (§3.5); `Vary` on anything but
 * Accept-Encoding (which the gate sets itself and undoes) is not honoured by keying, so such
 * responses are not shared; `no-cache` and a zero freshness are shared with the requests waiting
 * now but not kept; `s-maxage`/`max-age` shorten the time kept.
 */
export function responseSharing(headers: IncomingHttpHeaders, requestHasCredentials: boolean, ttlMs: number): Sharing {
  const cc = directives(headers);
  if (cc.has('no-store')) return { share: false, keepMs: 0, why: 'Cache-Control: no-store' };
  if (cc.has('private')) return { share: false, keepMs: 0, why: 'Cache-Control: private' };
  const vary = String(headers.vary ?? '').split(',').map((v) => v.trim().toLowerCase()).filter((v) => v && v !== 'accept-encoding');
  if (vary.length) return { share: false, keepMs: 0, why: `Vary: ${vary.join(', ')}` };
  if (requestHasCredentials && !cc.has('public') && !cc.has('s-maxage') && !cc.has('must-revalidate')) {
    return { share: false, keepMs: 0, why: 'a response to a request with credentials, not marked public' };
  }
  if (cc.has('no-cache')) return { share: true, keepMs: 0, why: 'Cache-Control: no-cache' };
  const fresh = seconds(cc.get('s-maxage')) ?? seconds(cc.get('max-age'));
  return { share: true, keepMs: fresh === undefined ? ttlMs : Math.min(ttlMs, fresh * 1000) };
}
