import { gateReason, type GateReason } from './gateReason.js';

/**
 * What the gate and the ICAP service do with an inspected host's response before any body byte is
 * looked at, decided from its status line and headers alone (one rule for both):
 * - a transfer-coding other than chunked is refused 502 (the parser undoes only chunked: anything
 *   else would reach the verifier still coded; Squid refuses them too);
 * - a 206 is blocked (it answers no request of ours: the whole entity is always fetched, and a part
 *   cannot be verified);
 * - a redirect is relayed only towards a host the rules inspect (the client then fetches it through
 *   the gate), any other is blocked;
 * - HEAD, 204, 304 and 1xx carry no body to verify: relayed;
 * - anything else has its body inspected.
 */
export type ResponseDecision =
  | { kind: 'inspect' }
  | { kind: 'relay'; served: 'redirect' | 'head' | 'not-modified' }
  | { kind: 'block'; reason: GateReason; status?: number };

export interface ResponseFacts {
  method: string;
  status: number;
  /** The Location header, if any. */
  location?: string;
  /** The Transfer-Encoding header, if any (the ICAP service gets bodies de-chunked: none). */
  transferEncoding?: string;
  /** The request URL, against which a relative Location resolves. */
  url: string;
}

export function decideResponse(r: ResponseFacts, redirectAllowed: (target: URL) => boolean): ResponseDecision {
  const te = String(r.transferEncoding ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c && c !== 'chunked');
  if (te.length) return { kind: 'block', status: 502, reason: gateReason('UPSTREAM_ERROR', `unsupported transfer-coding "${te.join(', ')}" (only chunked is accepted)`) };
  if (r.status === 206) {
    return { kind: 'block', reason: gateReason('UPSTREAM_ERROR', 'the origin answered 206 Partial Content: a partial body cannot be verified and is never forwarded (the whole entity is fetched; behind Squid: range_offset_limit -1 for update hosts)') };
  }
  if (r.status >= 300 && r.status < 400 && r.location) {
    let target: URL | undefined;
    try { target = new URL(r.location, r.url); } catch { /* refused below */ }
    if (!target || (target.protocol !== 'http:' && target.protocol !== 'https:') || !redirectAllowed(target)) {
      return { kind: 'block', reason: gateReason('UPSTREAM_ERROR', `redirect to ${r.location}, a host the rules do not inspect`) };
    }
    return { kind: 'relay', served: 'redirect' };
  }
  if (r.method === 'HEAD') return { kind: 'relay', served: 'head' };
  if (r.status === 204 || r.status === 304 || r.status < 200) return { kind: 'relay', served: 'not-modified' };
  return { kind: 'inspect' };
}

/** Hop-by-hop fields (RFC 9110 §7.6.1): for one connection only, never passed on in either direction. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);

/**
 * Response headers never copied into a response patchgate writes itself: hop-by-hop ones and its
 * own `X-Patchgate-*` (an origin cannot speak for the gate).
 */
export const isHopByHop = (name: string): boolean => HOP_BY_HOP.has(name) || name.startsWith('x-patchgate');

/**
 * Also dropped when patchgate sends the entity it verified (decoded, maybe a range of it): the
 * representation headers that described the bytes as the origin coded them, set again by the sender.
 */
const REPRESENTATION = new Set(['content-length', 'content-encoding', 'content-range', 'accept-ranges']);
export const isDroppedForVerifiedEntity = (name: string): boolean => isHopByHop(name) || REPRESENTATION.has(name);
