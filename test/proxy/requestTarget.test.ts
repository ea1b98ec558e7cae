/**
 * The gate's reading of request lines and Host headers, and the fields it forwards, without
 * sockets: what used to be http-mitm-proxy's parsing (and the gate's checks after it) as data.
 */
import { describe, expect, it } from 'vitest';
import { readRequestTarget } from '../../src/proxy/requestTarget.js';
import { forwardedRequestHeaders, forwardedResponseHeaders } from '../../src/proxy/upstreamFetch.js';

const GATE_PORT = 3128;
const isGate = (h: string, p: number) => p === GATE_PORT && ['127.0.0.1', 'localhost', '::1'].includes(h);
const plain = { tls: false, connect: undefined, isGate };

describe('readRequestTarget', () => {
  it('absolute-form http:// names the destination; Host must agree', () => {
    expect(readRequestTarget('http://Example.COM:8080/a/b?x=1', 'example.com:8080', plain)).toEqual({
      kind: 'origin', scheme: 'http', host: 'example.com', port: 8080, path: '/a/b?x=1', url: 'http://example.com:8080/a/b?x=1',
    });
    expect(readRequestTarget('http://example.com', undefined, plain)).toMatchObject({ kind: 'origin', port: 80, path: '/', url: 'http://example.com/' });
    expect(readRequestTarget('http://example.com/x', 'other.com', plain)).toEqual({ kind: 'bad-host', why: 'Host header and request target disagree' });
    expect(readRequestTarget('http://example.com/x', 'a b', plain)).toEqual({ kind: 'bad-host', why: 'the Host header does not parse' });
  });

  it('origin-form outside a CONNECT, or absolute-form naming the gate, is for the gate itself', () => {
    expect(readRequestTarget('/wpad.dat', 'wpad', plain)).toEqual({ kind: 'self', path: '/wpad.dat' });
    expect(readRequestTarget('/x', undefined, plain)).toEqual({ kind: 'self', path: '/x' });
    expect(readRequestTarget(`http://127.0.0.1:${GATE_PORT}/proxy.pac`, undefined, plain)).toEqual({ kind: 'self', path: '/proxy.pac' });
    expect(readRequestTarget('*', `localhost:${GATE_PORT}`, plain)).toEqual({ kind: 'self', path: '*' });
  });

  it('targets that are neither origin-form nor http:// absolute-form, and ports that are none: bad-target (audited BAD_REQUEST)', () => {
    for (const t of ['*', '*@', 'HTTP://example.com/x', 'https://example.com/x', 'ftp://x/', '?x=1']) {
      expect(readRequestTarget(t, 'example.com', plain), t).toMatchObject({ kind: 'bad-target', host: 'example.com', path: t });
    }
    expect(readRequestTarget('http://127.0.0.1:99999/x.exe', undefined, plain)).toMatchObject({ kind: 'bad-target', path: '/x.exe', host: '127.0.0.1', why: 'the port is not a number from 1 to 65535' });
    expect(readRequestTarget('http://127.0.0.1:0x50/x.exe', undefined, plain)).toMatchObject({ kind: 'bad-target' });
    expect(readRequestTarget('http://127.0.0.1:/x.exe', undefined, plain)).toMatchObject({ kind: 'bad-target' });
  });

  it('host names that are not safe or canonical, IPv6 literals and userinfo: bad-host', () => {
    for (const t of ['http://:80/x', 'http://::1/x', 'http://::1:80/x', 'http://[::1/x', 'http://[example.com]/x', 'http://[127.0.0.1]/x', 'http://[::1]:80:80/x', 'http://[fe80::1%eth0]/x', 'http://@/x', 'http://a@b/x', 'http://127.1/x', 'http://2130706433/x', 'http://a..b/x', 'http://a_b/x']) {
      expect(readRequestTarget(t, undefined, plain).kind, t).toBe('bad-host');
    }
    expect(readRequestTarget('GET', undefined, { ...plain, tls: true, connect: { host: 'a', port: 443 } })).toMatchObject({ kind: 'bad-host', why: 'the request names no host (no Host header)' });
  });

  it('a bracketed IPv6 literal in absolute-form or Host: one canonical spelling, the port after the bracket', () => {
    expect(readRequestTarget('http://[::1]:8080/x.exe', '[::1]:8080', plain)).toEqual({
      kind: 'origin', scheme: 'http', host: '::1', port: 8080, path: '/x.exe', url: 'http://[::1]:8080/x.exe',
    });
    expect(readRequestTarget('http://[0:0:0:0:0:0:0:1]/x.exe', undefined, plain)).toMatchObject({ kind: 'origin', host: '::1', port: 80, url: 'http://[::1]/x.exe' });
    // An IPv4-mapped literal is the IPv4 address (host rules see one spelling).
    expect(readRequestTarget('http://[::ffff:127.0.0.1]:81/x', undefined, plain)).toMatchObject({ kind: 'origin', host: '127.0.0.1', url: 'http://127.0.0.1:81/x' });
    expect(readRequestTarget('http://[2001:db8::1]/x', '[2001:DB8:0::1]', plain)).toMatchObject({ kind: 'origin', host: '2001:db8::1' });
    expect(readRequestTarget('http://[2001:db8::1]/x', '[2001:db8::2]', plain)).toMatchObject({ kind: 'bad-host', why: 'Host header and request target disagree' });
    expect(readRequestTarget('http://[::1]:x/x', undefined, plain)).toMatchObject({ kind: 'bad-target' });
    // The gate itself, named by its IPv6 loopback: PAC or 404, never proxied back to itself.
    expect(readRequestTarget(`http://[::1]:${GATE_PORT}/wpad.dat`, undefined, plain)).toEqual({ kind: 'self', path: '/wpad.dat' });
    expect(readRequestTarget(`http://[0:0::1]:${GATE_PORT}/wpad.dat`, undefined, plain)).toEqual({ kind: 'self', path: '/wpad.dat' });
  });

  it('inside a CONNECT: origin-form takes Host, which must name the CONNECT host and port; the port is the CONNECT port', () => {
    const inTls = { tls: true, connect: { host: 'update.example.com', port: 8443 }, isGate };
    expect(readRequestTarget('/x.cab', 'update.example.com', inTls)).toEqual({
      kind: 'origin', scheme: 'https', host: 'update.example.com', port: 8443, path: '/x.cab', url: 'https://update.example.com:8443/x.cab',
    });
    expect(readRequestTarget('/x.cab', 'update.example.com:8443', inTls)).toMatchObject({ kind: 'origin', port: 8443 });
    expect(readRequestTarget('/x.cab', 'update.example.com:443', inTls)).toMatchObject({ kind: 'outside-connect', host: 'update.example.com' });
    expect(readRequestTarget('/x.cab', 'evil.example.com', inTls)).toMatchObject({ kind: 'outside-connect', url: 'https://evil.example.com/x.cab' });
    expect(readRequestTarget('http://evil.example.com/x.cab', 'evil.example.com', inTls)).toMatchObject({ kind: 'outside-connect' });
    // Plain HTTP inside a tunnel: never the gate itself, always the CONNECT's destination.
    const inTunnel = { tls: false, connect: { host: '127.0.0.1', port: GATE_PORT }, isGate };
    expect(readRequestTarget('/wpad.dat', `127.0.0.1:${GATE_PORT}`, inTunnel)).toMatchObject({ kind: 'origin', url: `http://127.0.0.1:${GATE_PORT}/wpad.dat` });
  });
});

describe('forwarded fields', () => {
  it('hop-by-hop fields, the ones Connection names and Proxy-* never reach the origin; a chunked body stays chunked', () => {
    const out = forwardedRequestHeaders({
      host: 'example.com', connection: 'keep-alive, x-secret', 'keep-alive': 'timeout=5', 'x-secret': '1', 'proxy-authorization': 'Basic eA==',
      'proxy-connection': 'keep-alive', te: 'trailers', upgrade: 'h2c', 'transfer-encoding': 'chunked', accept: '*/*',
    });
    expect(out).toEqual({ host: 'example.com', accept: '*/*', 'transfer-encoding': 'chunked' });
  });

  it('an upgrade keeps Connection: Upgrade and Upgrade (the handshake the origin must see)', () => {
    const out = forwardedRequestHeaders({ host: 'h', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, true);
    expect(out).toEqual({ host: 'h', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' });
  });

  it('responses: hop-by-hop fields and Public-Key-Pins dropped, the rest kept (Set-Cookie lists too)', () => {
    const out = forwardedResponseHeaders({
      'content-length': '10', 'transfer-encoding': 'chunked', connection: 'close, x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5',
      'public-key-pins': 'pin-sha256="x"', 'public-key-pins-report-only': 'x', 'set-cookie': ['a=1', 'b=2'], etag: '"e"',
    });
    expect(out).toEqual({ 'content-length': '10', 'set-cookie': ['a=1', 'b=2'], etag: '"e"' });
  });
});
