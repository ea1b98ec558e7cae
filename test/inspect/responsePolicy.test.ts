/**
 * The response rules the gate and the ICAP service share (src/inspect/responsePolicy.ts), from a
 * status line and headers alone, without sockets; the e2e suites check each through its plumbing.
 */
import { describe, expect, it } from 'vitest';
import { decideResponse, isDroppedForVerifiedEntity, isHopByHop } from '../../src/inspect/responsePolicy.js';

const url = 'http://updates.test/a/b.exe';
const inspected = (u: URL) => u.hostname.endsWith('updates.test');
const decide = (f: Partial<Parameters<typeof decideResponse>[0]>) => decideResponse({ method: 'GET', status: 200, url, ...f }, inspected);

describe('decideResponse', () => {
  it('inspects an ordinary 200', () => {
    expect(decide({})).toEqual({ kind: 'inspect' });
    expect(decide({ transferEncoding: 'chunked' })).toEqual({ kind: 'inspect' });
  });

  it('refuses 502 a transfer-coding other than chunked', () => {
    expect(decide({ transferEncoding: 'gzip, chunked' })).toMatchObject({ kind: 'block', status: 502, reason: { code: 'UPSTREAM_ERROR', message: expect.stringContaining('"gzip"') } });
  });

  it('blocks a 206: a part cannot be verified', () => {
    expect(decide({ status: 206 })).toMatchObject({ kind: 'block', reason: { code: 'UPSTREAM_ERROR' } });
  });

  it('relays a redirect only to a host the rules inspect (relative ones resolve against the request)', () => {
    expect(decide({ status: 302, location: '/c.exe' })).toEqual({ kind: 'relay', served: 'redirect' });
    expect(decide({ status: 301, location: 'http://cdn.updates.test/c.exe' })).toEqual({ kind: 'relay', served: 'redirect' });
    for (const location of ['http://elsewhere.test/c.exe', 'ftp://updates.test/c.exe', 'http://[bad']) {
      expect(decide({ status: 302, location })).toMatchObject({ kind: 'block', reason: { code: 'UPSTREAM_ERROR' } });
    }
    expect(decide({ status: 302 })).toEqual({ kind: 'inspect' }); // no Location: a body like any other
  });

  it('relays HEAD, 204, 304 and 1xx: no body to verify', () => {
    expect(decide({ method: 'HEAD' })).toEqual({ kind: 'relay', served: 'head' });
    for (const status of [204, 304, 100]) expect(decide({ status })).toEqual({ kind: 'relay', served: 'not-modified' });
  });
});

describe('header rules', () => {
  it('hop-by-hop and X-Patchgate-* headers are never copied; representation headers only not for a verified entity', () => {
    for (const h of ['connection', 'transfer-encoding', 'keep-alive', 'x-patchgate-verdict']) {
      expect(isHopByHop(h)).toBe(true);
      expect(isDroppedForVerifiedEntity(h)).toBe(true);
    }
    for (const h of ['content-length', 'content-encoding', 'content-range', 'accept-ranges']) {
      expect(isHopByHop(h)).toBe(false);
      expect(isDroppedForVerifiedEntity(h)).toBe(true);
    }
    for (const h of ['etag', 'last-modified', 'content-type', 'cache-control']) expect(isDroppedForVerifiedEntity(h)).toBe(false);
  });
});
