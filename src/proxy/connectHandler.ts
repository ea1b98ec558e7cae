import http, { type IncomingMessage } from 'node:http';
import tls from 'node:tls';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { gateReason } from '../inspect/gateReason.js';
import { canonicalHost, isSafeHostName, targetHost, type HostRules } from '../policy/hostRules.js';
import type { AccessDenial, AccessPolicy } from '../policy/accessPolicy.js';
import type { AuditLog } from '../audit/auditLog.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import type { FaultSite } from '../metrics/gateObserver.js';
import { newAuditId } from './heldDownload.js';
import type { InterceptionCa } from './interceptionCa.js';
import { pinnedLookup, type DestinationAdmission } from './destinations.js';
import type { ConnectMark } from './requestTarget.js';

const CONNECT_FIRST_BYTE_MS = 10_000;
/** A blind tunnel with no byte either way for this long is closed (Squid's read_timeout). */
export const TUNNEL_IDLE_MS = 15 * 60_000;

/** Refuses a CONNECT and really closes the socket, even if the client keeps its half open. */
function refuseConnect(socket: Duplex, response: string): void {
  socket.end(response, () => socket.destroy());
  setTimeout(() => socket.destroy(), 1000).unref();
}

export interface ConnectSettings {
  access: AccessPolicy;
  hostRules: HostRules;
  destinations: DestinationAdmission;
  audit: AuditLog;
  rulesSha256: string;
  upstreamProxy?: URL;
  tunnelIdleMs: number;
  fault: (where: FaultSite, err: unknown) => void;
  /** Plain HTTP inside a CONNECT tunnel: a socket for the proxy's own HTTP server. */
  serveHttp: (socket: Socket) => void;
  /** HTTP inside the TLS the gate terminated on a CONNECT socket. */
  serveTls: (socket: tls.TLSSocket) => void;
}

/**
 * CONNECT: who may open one and to where (admission), then for an inspected host the gate
 * terminates TLS itself with a leaf from its own CA (interception), and for any other host a blind
 * TCP tunnel with an idle timeout. What each socket was admitted for is kept here (markOf), so that
 * requests inside may name no other destination.
 */
export class ConnectHandler {
  readonly tunnels = new Set<Duplex>();
  private readonly marks = new WeakMap<object, ConnectMark>();
  /** Secure contexts of the interception leaves, by host, while the leaf stays the same. */
  private readonly contexts = new Map<string, { certPem: string; ctx: tls.SecureContext }>();
  private ca: InterceptionCa | undefined;

  constructor(private readonly s: ConnectSettings) {}

  /** The interception CA, once loaded (at start). */
  useCa(ca: InterceptionCa): void { this.ca = ca; }

  /** The CONNECT a socket (or the TLS over it) came through, if any. */
  markOf(socket: object): ConnectMark | undefined { return this.marks.get(socket); }

  onConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const target = req.url ?? '';
    const client = (req.socket as Socket).remoteAddress ?? '?';
    if (!this.s.access.clientAllowed(client)) {
      return this.deny(socket, client, target || '(none)', '', { status: 403, why: `client ${client} is not in the rules' clients (or --allow-client)` });
    }
    const m = /^(\[[^\]]+\]|[^:/\\\s]+):(\d{1,5})$/.exec(target);
    const host = m ? targetHost(m[1]!) ?? '' : '';
    const port = m ? Number(m[2]) : 0;
    if (!m || !isSafeHostName(host) || port < 1 || port > 65535) {
      refuseConnect(socket, 'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    this.admit(client, target, host, port, socket, head).catch((e: Error) => {
      this.s.fault('connect', e);
      this.deny(socket, client, target, host, { status: 403, why: `internal error: ${e.message}` });
    });
  }

  /** Destination checks (name, port, then the addresses it resolves to), then interception or a tunnel. */
  private async admit(client: string, target: string, host: string, port: number, socket: Duplex, head: Buffer): Promise<void> {
    const admitted = await this.s.destinations.admit(host, port, 'connect');
    if (socket.destroyed) return;
    if ('status' in admitted) return this.deny(socket, client, target, host, admitted);
    let decision = this.s.hostRules.decideConnect(host);
    // An alias of an inspected origin (inspectAddresses) is inspected too; a pinned host stays pinned.
    if (decision.mode === 'pass' && await this.s.destinations.isInspectedAlias(admitted.addresses)) decision = { mode: 'inspect' };
    if (socket.destroyed) return;
    if (decision.mode === 'inspect') {
      if (!this.ca?.covers(host)) {
        this.audit(client, target, host, 'blocked', 403, [gateReason('INTERNAL_ERROR', 'the interception CA cannot issue for this host: refused rather than tunnelled blind')]);
        refuseConnect(socket, 'HTTP/1.1 403 Forbidden\r\nx-patchgate-verdict: block\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      // A socket detached by CONNECT has no HTTP timeouts: close it when the client ends it, and if
      // no TLS byte arrives in time (else each abandoned CONNECT would keep a descriptor).
      socket.once('end', () => socket.destroy());
      (socket as Socket).setTimeout?.(CONNECT_FIRST_BYTE_MS, () => socket.destroy());
      this.intercept(socket as Socket, head, host, port);
      return;
    }
    if (decision.mode === 'pinned') this.audit(client, target, host, 'tunnel', 200, []);
    else this.s.audit.debug({ client, connect: target }, 'tunnel');
    if (admitted.unresolved) return void refuseConnect(socket, 'HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
    this.tunnel(socket, head, host, port, admitted.addresses);
  }

  private deny(socket: Duplex, client: string, target: string, host: string, d: AccessDenial): void {
    this.audit(client, target, host, 'blocked', d.status, [gateReason('ACCESS_DENIED', d.why)]);
    const text = `${d.why}\n`;
    refuseConnect(socket, `HTTP/1.1 ${d.status} ${d.status === 400 ? 'Bad Request' : 'Forbidden'}\r\ncontent-type: text/plain; charset=utf-8\r\nx-patchgate-verdict: block\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
  }

  /**
   * Answers the CONNECT and terminates TLS on the client's socket itself, with a leaf for the
   * CONNECT host from patchgate's CA; the HTTP inside goes to one shared server (serveTls). A
   * tunnel whose first byte is not a TLS handshake carries plain HTTP: it goes to the proxy's HTTP
   * server (serveHttp), where the usual rules apply to each request.
   */
  private intercept(socket: Socket, head: Buffer, host: string, port: number): void {
    const mark: ConnectMark = { host, port };
    const start = (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(first);
      this.marks.set(socket, mark);
      if (first[0] !== 0x16) {
        // The socket's parser from the CONNECT was detached: a new one reads what is buffered, then the rest.
        this.s.serveHttp(socket);
        socket.resume();
        return;
      }
      let ctx: tls.SecureContext;
      try {
        ctx = this.contextFor(host);
      } catch {
        socket.destroy();
        return;
      }
      // The socket's buffered bytes (the ClientHello) are fed to TLS first (TLSSocket's initRead).
      const t = new tls.TLSSocket(socket, { isServer: true, secureContext: ctx, ALPNProtocols: ['http/1.1'] });
      t.on('error', () => t.destroy());
      this.marks.set(t, mark);
      this.s.serveTls(t);
    };
    // The first byte arrives outside the CONNECT entry: a guard of its own.
    const guarded = (first: Buffer) => {
      try { start(first); } catch (e) { this.s.fault('connect', e); socket.destroy(); }
    };
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) return guarded(head);
    socket.once('data', guarded);
  }

  private contextFor(host: string): tls.SecureContext {
    const leaf = this.ca!.certificateFor(canonicalHost(host));
    const hit = this.contexts.get(host);
    if (hit && hit.certPem === leaf.certPem) return hit.ctx;
    const ctx = tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
    this.contexts.delete(host);
    this.contexts.set(host, { certPem: leaf.certPem, ctx });
    if (this.contexts.size > 1000) this.contexts.delete(this.contexts.keys().next().value!);
    return ctx;
  }

  private audit(client: string, target: string, host: string, served: AuditRecord['served'], status: number, reasons: AuditRecord['reasons']): void {
    this.s.audit.record({
      id: newAuditId(), kind: 'connect', client, method: 'CONNECT', url: target, host, inspected: false, served, status,
      verdict: reasons.length ? 'block' : 'pass', reasons, rulesSha256: this.s.rulesSha256, durations: {},
    });
  }

  /**
   * Joins two sockets byte for byte (a blind tunnel, an upgraded WebSocket): either side ending
   * ends both (what is queued for the other side is flushed first, as Squid's do), and no byte
   * either way for the idle time closes both.
   */
  splice(client: Duplex, server: Duplex): void {
    this.tunnels.add(client);
    const close = () => { client.destroy(); server.destroy(); };
    client.once('close', () => { this.tunnels.delete(client); server.destroy(); });
    server.once('close', () => client.destroy());
    server.on('error', close);
    client.on('error', close);
    // Left half-open, a tunnel whose client left while the far end stays open would keep two descriptors for ever.
    const endFrom = (from: Duplex, to: Duplex) => from.once('end', () => to.end(close));
    endFrom(client, server);
    endFrom(server, client);
    // No byte either way for this long (net.Socket counts reads and writes): closed.
    for (const x of [client, server]) (x as Socket).setTimeout?.(this.s.tunnelIdleMs, close);
    server.pipe(client, { end: false });
    client.pipe(server, { end: false });
  }

  /** A blind TCP tunnel, direct or through the upstream proxy's CONNECT. */
  private tunnel(client: Duplex, head: Buffer, host: string, port: number, addresses: string[]): void {
    const up = this.s.upstreamProxy;
    const refuse = () => { if (!client.destroyed) client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n'); };
    const wire = (server: Duplex) => {
      try {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) server.write(head);
        this.splice(client, server);
      } catch (e) {
        this.s.fault('tunnel', e);
        client.destroy();
        server.destroy();
      }
    };
    if (!up) {
      const s = net.connect({ host, port, ...(addresses.length ? { lookup: pinnedLookup(addresses) } : {}) });
      s.once('connect', () => wire(s));
      s.once('error', refuse);
      return;
    }
    const r = http.request({ host: up.hostname, port: Number(up.port) || 80, method: 'CONNECT', path: `${host.includes(':') ? `[${host}]` : host}:${port}` });
    r.once('connect', (res, s) => (res.statusCode === 200 ? wire(s) : (s.destroy(), refuse())));
    r.once('error', refuse);
    r.end();
  }

  stop(): void {
    for (const t of this.tunnels) t.destroy();
  }
}
