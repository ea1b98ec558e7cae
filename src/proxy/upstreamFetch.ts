import http, { type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { pinnedLookup } from './destinations.js';
// Hop-by-hop fields are never forwarded either way, nor any field the Connection header names.
// (Proxy-Authorization is the gate's, not the origin's.)
import { HOP_BY_HOP } from '../inspect/responsePolicy.js';

/** A destination the gate has admitted, and the addresses it checked (empty: let the resolver or the upstream proxy decide). */
export interface UpstreamTarget {
  tls: boolean;
  host: string;
  port: number;
  /** Origin-form path and query. */
  path: string;
  /** The absolute URL (for an upstream proxy's request line). */
  url: string;
  addresses: string[];
}


function connectionTokens(h: IncomingHttpHeaders): Set<string> | undefined {
  const c = h.connection;
  if (!c) return undefined;
  return new Set(String(c).split(',').map((t) => t.trim().toLowerCase()).filter(Boolean));
}

/**
 * A client's request fields as the gate sends them upstream: hop-by-hop fields and the client's
 * Proxy-* fields dropped; a chunked body stays chunked (the parser took the framing off).
 * `upgrade`: keep Connection: Upgrade and Upgrade (a WebSocket handshake the origin must see).
 */
export function forwardedRequestHeaders(h: IncomingHttpHeaders, upgrade = false): OutgoingHttpHeaders {
  const named = connectionTokens(h);
  const out: OutgoingHttpHeaders = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || HOP_BY_HOP.has(k) || k.startsWith('proxy-') || named?.has(k)) continue;
    out[k] = v;
  }
  if (h['transfer-encoding'] !== undefined) out['transfer-encoding'] = 'chunked';
  if (upgrade && h.upgrade !== undefined) {
    out.connection = 'Upgrade';
    out.upgrade = h.upgrade;
  }
  return out;
}

/**
 * An origin's response fields as the gate sends them to the client: hop-by-hop fields dropped (the
 * gate frames the body for its own connection) and Public-Key-Pins* dropped (a pin set through an
 * intercepting proxy would pin the client to the gate's leaf).
 */
export function forwardedResponseHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(h);
  const out: OutgoingHttpHeaders = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || HOP_BY_HOP.has(k) || named?.has(k) || k.startsWith('public-key-pins')) continue;
    out[k] = v;
  }
  return out;
}

/** A plain-text refusal that closes the connection. */
export function refuse(res: ServerResponse, status: number, text: string): void {
  if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text + '\n'), connection: 'close' });
  res.end(text + '\n');
}

/**
 * The gate's one way to an origin: keep-alive agents, the gate's trust for upstream TLS (system
 * store plus upstreamCaFile), the addresses admission checked (pinned), and the upstream proxy when
 * one is set (absolute-form for HTTP, CONNECT for HTTPS). Holds and pass-through use it alike.
 */
export class UpstreamFetch {
  readonly httpAgent = new http.Agent({ keepAlive: true });
  readonly httpsAgent: https.Agent;
  private readonly viaProxy: HttpsProxyAgent<string> | undefined;

  constructor(private readonly o: { upstreamProxy?: URL; upstreamCaFile?: string }) {
    const ca = o.upstreamCaFile ? [...tls.rootCertificates, readFileSync(o.upstreamCaFile, 'utf8')] : undefined;
    this.httpsAgent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
    this.viaProxy = o.upstreamProxy ? new HttpsProxyAgent(o.upstreamProxy.href, { keepAlive: true, ...(ca ? { ca } : {}) }) : undefined;
  }

  /** An upstream request (not yet ended). Its errors are the caller's to handle. */
  request(t: UpstreamTarget, method: string, headers: OutgoingHttpHeaders): ClientRequest {
    const up = this.o.upstreamProxy;
    const lookup = !up && t.addresses.length ? pinnedLookup(t.addresses) : undefined;
    if (!t.tls) {
      const opts: http.RequestOptions = up
        ? { host: up.hostname, port: Number(up.port) || 80, path: t.url, method, headers, agent: this.httpAgent }
        : { host: t.host, port: t.port, path: t.path, method, headers, agent: this.httpAgent, ...(lookup ? { lookup } : {}) };
      return http.request(opts);
    }
    return https.request({ host: t.host, port: t.port, path: t.path, method, headers, agent: this.viaProxy ?? this.httpsAgent, ...(lookup ? { lookup } : {}) });
  }

  /**
   * Passes one request through untouched but for hop-by-hop fields: the body both ways as it
   * comes. An upstream that cannot be reached gets the client a 502; one that fails mid-body
   * ends the client's response short (never a complete-looking one).
   */
  forward(req: IncomingMessage, res: ServerResponse, t: UpstreamTarget, onFault: (e: unknown) => void): void {
    const out = this.request(t, req.method ?? 'GET', forwardedRequestHeaders(req.headers));
    out.on('response', (r) => {
      r.on('error', () => res.destroy());
      r.on('close', () => { if (!r.complete) res.destroy(); });
      try {
        res.writeHead(r.statusCode ?? 502, r.statusMessage, forwardedResponseHeaders(r.headers));
      } catch (e) {
        // A field Node refuses to write (it accepted it from the origin): this response only.
        onFault(e);
        r.destroy();
        return refuse(res, 502, 'patchgate: the upstream response cannot be forwarded');
      }
      r.pipe(res);
    });
    out.on('error', (e) => {
      if (!res.headersSent) refuse(res, 502, `upstream: ${e.message}`);
      else res.destroy();
    });
    res.on('close', () => { if (!res.writableFinished) out.destroy(); });
    req.pipe(out);
  }

  /**
   * Relays an HTTP Upgrade (WebSocket) handshake; once the origin answers 101, `wire` gets both
   * sockets (the bytes after that are not HTTP). Any other answer is passed on as a response.
   */
  upgrade(req: IncomingMessage, client: Duplex, head: Buffer, t: UpstreamTarget, wire: (client: Duplex, server: Duplex) => void): void {
    const out = this.request(t, req.method ?? 'GET', forwardedRequestHeaders(req.headers, true));
    const fail = (status: number) => {
      if (!client.destroyed) client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`, () => client.destroy());
    };
    out.on('upgrade', (r, server, serverHead) => {
      server.on('error', () => server.destroy());
      const fields: string[] = [];
      for (let i = 0; i + 1 < r.rawHeaders.length; i += 2) fields.push(`${r.rawHeaders[i]}: ${r.rawHeaders[i + 1]}\r\n`);
      client.write(`HTTP/1.1 101 ${r.statusMessage || 'Switching Protocols'}\r\n${fields.join('')}\r\n`);
      if (serverHead.length) client.write(serverHead);
      if (head.length) server.write(head);
      wire(client, server);
    });
    out.on('response', (r) => {
      const fields = forwardedResponseHeaders(r.headers);
      const lines = Object.entries(fields).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x}\r\n`));
      client.write(`HTTP/1.1 ${r.statusCode} ${r.statusMessage ?? ''}\r\n${lines.join('')}connection: close\r\n\r\n`);
      r.pipe(client);
      r.on('error', () => client.destroy());
    });
    out.on('error', () => fail(502));
    client.on('close', () => out.destroy());
    out.end();
  }

  destroy(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
    this.viaProxy?.destroy();
  }
}
