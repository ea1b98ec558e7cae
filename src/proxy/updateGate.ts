import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { Proxy as MitmProxy } from 'http-mitm-proxy';
import { HttpsProxyAgent } from 'https-proxy-agent';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import { Verifier } from '../verify/verifier.js';
import { gateReason } from '../inspect/gateReason.js';
import type { HostRules } from '../policy/hostRules.js';
import type { HoldMode } from '../policy/rulesFile.js';
import type { UnverifiableRule } from '../policy/rulesFile.js';
import type { TrustChannel } from '../policy/trustChannels.js';
import { canonicalHost, targetHost } from '../policy/hostRules.js';
import type { AuditLog } from '../audit/auditLog.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import { reportFault, type FaultSite, type GateObserver } from '../metrics/gateObserver.js';
import { HeldDownload, newAuditId, type HoldSettings, type Waiter } from './heldDownload.js';
import { DiskBudget, MEMORY_TOTAL_FACTOR, MemoryBudget, makeSpoolDir, removeSpoolDir } from '../inspect/spool.js';
import { DigestPool } from '../inspect/digestPool.js';

export { MEMORY_TOTAL_FACTOR };
import { pacFile } from './pacFile.js';
import { isSafeHostName, loadOrCreateInterceptionCa, type InterceptionCa } from './interceptionCa.js';
import { makeLibraryCaDecoy } from './libraryCaDecoy.js';
import { AccessPolicy, defaultAccessRules, type AccessDenial, type AccessRules } from '../policy/accessPolicy.js';
import { InspectedAddresses, destinationAddresses, ownEndpointCheck, pinnedLookup } from './destinations.js';

export interface GateLimits {
  maxPayloadBytes: number;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  memoryHoldBytes: number;
  /** How long a verified entity stays available for further (range) requests. */
  cacheTtlMs: number;
  /**
   * What held and cached payloads may keep in memory together (default MEMORY_TOTAL_FACTOR ×
   * memoryHoldBytes). Past it the least recently used cached entities are dropped (a later request
   * fetches and verifies again), and holds that still do not fit go to the disk spool.
   */
  memoryTotalBytes?: number;
  /**
   * What the spool may keep on disk (holds in flight and verified copies together); default
   * SPOOL_FREE_FRACTION of the spool folder's free space at start. One client's share:
   * SPOOL_CLIENT_FRACTION of it. Past it, least recently used verified copies go, then holds are refused (OVERSIZE).
   */
  maxSpoolBytes?: number;
  /** One client's share of maxSpoolBytes (default SPOOL_CLIENT_FRACTION of it). */
  maxSpoolBytesPerClient?: number;
  /** A blind CONNECT tunnel idle (no byte either way) for this long is closed (default TUNNEL_IDLE_MS). */
  tunnelIdleTimeoutMs?: number;
  /** A request head must be complete this long after it started (default REQUEST_HEAD_TIMEOUT_MS). */
  requestHeadTimeoutMs?: number;
}


export interface GateOptions {
  listen: { host: string; port: number };
  policy: ApprovedCaPolicy;
  /** Per-channel trust (src/policy/trustChannels.ts); without it every request gets `policy`. */
  trustFor?: (host: string, path: string) => TrustChannel;
  hostRules: HostRules;
  rulesSha256: string;
  audit: AuditLog;
  caDir: string;
  upstreamProxy?: URL;
  limits: GateLimits;
  nonPayload: 'pass' | 'block';
  unsignedDeltas: 'pass' | 'block';
  /** Known kinds the verifier cannot check, by path pattern (rules: unverifiable). */
  unverifiable?: UnverifiableRule[];
  spoolBase?: string;
  /** PEM file of extra CAs the gate trusts for upstream TLS (besides the system store). */
  upstreamCaFile?: string;
  /** Verification instant for tests (the core's `now`). */
  now?: () => Date;
  /** Metrics hooks, passed to every hold (src/metrics/gateMetrics.ts). */
  observer?: GateObserver;
  /** Digest threads (0: hash on the event loop). Default: one per spare core, at least one. */
  digestThreads?: number;
  /** A payload's audit record cannot be written: refuse it (`block`, default) or serve it. */
  auditOnError?: 'block' | 'serve';
  /** Who may use the gate and where it may take them (default: defaultAccessRules()). */
  access?: AccessRules;
  /** The gate's other endpoints (the admin address): never a destination, like its own port. */
  ownEndpoints?: { host: string; port: number }[];
}

const CONNECT_FIRST_BYTE_MS = 10_000;
/** A request head (HTTP or ICAP) must be complete this long after its first byte, or its connection closes. */
export const REQUEST_HEAD_TIMEOUT_MS = 30_000;
/** A blind tunnel with no byte either way for this long is closed (Squid's read_timeout). */
export const TUNNEL_IDLE_MS = 15 * 60_000;

/** http-mitm-proxy's entry points (not in its typings): each gets one guard (guardLibraryEntries). */
interface MitmInternals {
  _onHttpServerRequest(isSSL: boolean, req: IncomingMessage, res: ServerResponse): void;
  _onHttpServerConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  _onWebSocketServerConnect(isSSL: boolean, ws: { terminate(): void }, req: IncomingMessage): void;
  _onResponse(ctx: any, callback: (err?: Error) => void): void;
}

/** Ends a client's request after an internal error: a 500 if nothing was sent yet, else the connection. */
function endAfterFault(res: ServerResponse | undefined): void {
  if (!res) return;
  try {
    if (!res.headersSent) {
      const text = 'patchgate: internal error (this request was refused)\n';
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', connection: 'close', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    } else res.destroy();
  } catch {
    res.socket?.destroy();
  }
}

/** Refuses a CONNECT and really closes the socket, even if the client keeps its half open. */
function refuseConnect(socket: Duplex, response: string): void {
  socket.end(response, () => socket.destroy());
  setTimeout(() => socket.destroy(), 1000).unref();
}

/**
 * Hosts in absolute-form and Host header must agree: a disagreement is how smuggling starts.
 * null: a Host header that does not parse (refused, never ignored); undefined: none.
 */
function hostOfHeader(h: string | undefined): { host: string; port?: number } | null | undefined {
  if (h === undefined) return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]\s/\\@?#]+)(?::(\d{1,5}))?$/.exec(h.trim());
  if (!m) return null;
  return { host: targetHost(m[1]!) ?? '(non-canonical)', ...(m[2] !== undefined ? { port: Number(m[2]) } : {}) };
}

/** http-mitm-proxy's options for the upstream request (ours: `lookup`, pinned to the addresses checked). */
interface UpstreamOptions { host: string; port: number; path: string; headers: Record<string, string | string[] | undefined>; agent?: unknown; lookup?: unknown }

/** What a CONNECT left on its socket (and on the TLS socket over it): the target requests inside must name. */
interface ConnectMark { patchgateConnectHost?: string; patchgateConnectPort?: number }

/**
 * The gate: http-mitm-proxy does the proxying; this addon decides, per request, whether the
 * response is an update payload to hold and verify (rules: inspected hosts), a CONNECT to tunnel
 * untouched (pinned and other hosts) or one to intercept (inspected hosts over HTTPS).
 * It never decides a verdict itself: HeldDownload feeds the core and reports what it says.
 */
export class UpdateGate {
  private readonly proxy = new MitmProxy();
  private ca!: InterceptionCa;
  private spoolDir!: string;
  private readonly downloads = new Map<string, HeldDownload>();
  /** Verified entities lingering for cacheTtlMs, least recently used first. */
  private readonly cached = new Map<HeldDownload, NodeJS.Timeout>();
  /** Memory of all spools together; full, it drops cached entities (reclaim) before holds go to disk. */
  private readonly memory: MemoryBudget;
  /** Disk of all spools together, and each client's share (limits.maxSpoolBytes); made at start. */
  private disk!: DiskBudget;
  /** Verified copies kept, by URL-without-query and strong ETag: one copy per upstream entity. */
  private readonly entities = new Map<string, HeldDownload>();
  /** Every hold not yet settled (GET, HEAD and other methods alike), for stop() and inFlight. */
  private readonly active = new Set<HeldDownload>();
  private readonly tunnels = new Set<Duplex>();
  private readonly httpsAgent: HttpsProxyAgent<string> | undefined;
  private port = 0;
  private stopping = false;
  private decoy: { dir: string; remove: () => void } | undefined;
  private digests: DigestPool | undefined;
  /**
   * HTTP over the TLS that patchgate terminates on each intercepted CONNECT socket itself: one
   * server for every host (no listening socket per host, no extra loopback hop per byte).
   */
  private readonly intercepted = http.createServer({ connectionsCheckingInterval: 1000 });
  /** Secure contexts of the interception leaves, by host, while the leaf stays the same. */
  private readonly contexts = new Map<string, { certPem: string; ctx: tls.SecureContext }>();
  private readonly access: AccessPolicy;
  private readonly own = ownEndpointCheck(() => [{ host: this.o.listen.host, port: this.port }, ...(this.o.ownEndpoints ?? [])]);
  private readonly inspectedAddresses: InspectedAddresses | undefined;
  /** Built once from the rules' trust: the requests no trust channel names are judged by it. */
  private readonly verifier: Verifier;

  constructor(private readonly o: GateOptions) {
    this.verifier = new Verifier(o.policy);
    const ca = o.upstreamCaFile ? [...tls.rootCertificates, readFileSync(o.upstreamCaFile, 'utf8')] : undefined;
    const l = o.limits;
    this.memory = new MemoryBudget(l.memoryTotalBytes ?? MEMORY_TOTAL_FACTOR * l.memoryHoldBytes, (bytes) => this.reclaim(bytes));
    this.access = new AccessPolicy(o.access ?? defaultAccessRules(), o.hostRules);
    this.inspectedAddresses = this.access.rules.inspectAddresses ? new InspectedAddresses(o.hostRules.exactNames('inspect')) : undefined;
    this.httpsAgent = o.upstreamProxy ? new HttpsProxyAgent(o.upstreamProxy.href, { keepAlive: true, ...(ca ? { ca } : {}) }) : undefined;
  }

  get address(): { host: string; port: number } { return { host: this.o.listen.host, port: this.port }; }
  get caCertificatePath(): string { return this.ca.caCertificatePath; }
  get inFlight(): number { return [...this.active].filter((d) => !d.settled).length; }
  /** Bytes in the spool of holds in flight and of verified copies still cached (for metrics). */
  get spoolBytes(): number {
    let n = 0;
    for (const d of new Set([...this.active, ...this.downloads.values()])) n += d.spoolBytes;
    return n;
  }
  /** The spool's disk budget and what is in use (for /healthz and metrics). */
  get spoolDisk(): { limit: number; perClient: number; used: number } {
    return { limit: this.disk.limit, perClient: this.disk.perOwnerLimit, used: this.disk.usedBytes };
  }
  /** Bytes all spools keep in memory (held, cached, or dropped from the cache but still being read). */
  get spoolMemoryBytes(): number { return this.memory.usedBytes; }
  /** The most that spools may keep in memory together. */
  get spoolMemoryLimit(): number { return this.memory.limit; }

  async start(): Promise<void> {
    this.spoolDir = makeSpoolDir(this.o.spoolBase ?? tmpdir());
    this.disk = DiskBudget.forSpool(this.spoolDir, this.o.limits, (bytes, owner) => this.reclaimDisk(bytes, owner));
    if (this.o.digestThreads !== 0) {
      this.digests = new DigestPool(this.o.digestThreads);
      await this.digests.ready();
    }
    this.ca = loadOrCreateInterceptionCa(this.o.caDir, { permittedHosts: this.o.hostRules.patterns('inspect') });
    const proxy = this.proxy;
    // Leaf certificates come from patchgate's own CA, in memory; the library's file-named certificates are never used.
    proxy.onCertificateRequired = (hostname: string, cb: (err: Error | null, files: { keyFile: string; certFile: string; hosts: string[] }) => void) =>
      cb(null, { keyFile: '/nonexistent/patchgate', certFile: '/nonexistent/patchgate', hosts: [hostname] });
    proxy.onCertificateMissing = (ctx: { hostname: string }, _files: unknown, cb: (err: Error | null, files?: { keyFileData: string; certFileData: string; hosts: string[] }) => void) => {
      try {
        const leaf = this.ca.certificateFor(canonicalHost(ctx.hostname));
        cb(null, { keyFileData: leaf.keyPem, certFileData: leaf.certPem, hosts: [ctx.hostname] });
      } catch (err) {
        cb(err as Error);
      }
    };
    this.guardLibraryEntries();
    proxy.onConnect((req, socket, head, callback) => this.onConnect(req, socket, head, callback));
    // Requests inside intercepted TLS enter http-mitm-proxy's pipeline as its own HTTPS servers' would.
    this.intercepted.on('request', (req: IncomingMessage, res: ServerResponse) => (this.proxy as unknown as MitmInternals)._onHttpServerRequest(true, req, res));
    // No WebSocket to an inspected host (no byte unverified): an upgrade inside interception is refused.
    this.intercepted.on('upgrade', (_req: IncomingMessage, socket: Duplex) => socket.destroy());
    this.intercepted.on('clientError', (_err: Error, socket: Duplex) => socket.destroy());
    // The server never listens (sockets are handed to it), but its header and request timeouts
    // must run as on a listening one (slowloris inside intercepted TLS): Node starts the checks
    // on 'listening'.
    this.intercepted.emit('listening');
    proxy.onRequest((ctx, callback) => this.onRequest(ctx, callback));
    // WebSocket upgrades bypass onRequest entirely: none to an inspected host (no byte unverified).
    proxy.onWebSocketConnection((ctx: any, callback: (err?: Error) => void) => {
      const refuse = () => {
        // http-mitm-proxy's close handler reads proxyToServerWebSocket: give it a closed stand-in.
        ctx.proxyToServerWebSocket = { readyState: 3, close() {}, send() {}, ping() {}, pong() {} };
        try { ctx.clientToProxyWebSocket.terminate(); } catch { /* gone */ }
      };
      this.admitWebSocket(ctx).then((ok) => (ok ? callback() : refuse()), refuse);
    });
    proxy.onError((ctx, err) => {
      const held = ctx && (ctx as unknown as { patchgateHold?: HeldDownload }).patchgateHold;
      if (held) held.fail(gateReason('UPSTREAM_ERROR', `upstream: ${err?.message ?? err}`));
    });
    this.decoy = makeLibraryCaDecoy();
    await new Promise<void>((resolve, reject) => {
      const extraCa = this.o.upstreamCaFile ? readFileSync(this.o.upstreamCaFile, 'utf8') : undefined;
      const httpsAgent = new https.Agent({ keepAlive: true, ...(extraCa ? { ca: [...tls.rootCertificates, extraCa] } : {}) });
      proxy.listen({ host: this.o.listen.host, port: this.o.listen.port, sslCaDir: this.decoy!.dir, keepAlive: true, httpsAgent } as any, (err?: Error | null) => (err ? reject(err) : resolve()));
    });
    this.port = proxy.httpPort;
    // A request head must be complete this long after it started (slowloris), as ICAP's.
    proxy.httpServer!.headersTimeout = this.o.limits.requestHeadTimeoutMs ?? REQUEST_HEAD_TIMEOUT_MS;
    // Before http-mitm-proxy rewrites an absolute-form target to its path: remember the form.
    proxy.httpServer!.prependListener('request', (req: IncomingMessage) => {
      (req as unknown as { patchgateOriginForm?: boolean }).patchgateOriginForm = (req.url ?? '').startsWith('/');
    });
  }

  /**
   * Defence in depth: whatever throws while one client's request, CONNECT, WebSocket or upstream
   * response is handled (patchgate's code or the library's) ends that exchange, never the process.
   * One guard at each entry from http-mitm-proxy (the intercepted server enters through the same
   * request entry); each catch is counted (patchgate_internal_errors_total) and told on stderr.
   */
  private guardLibraryEntries(): void {
    const lib = this.proxy as unknown as MitmInternals;
    const request = lib._onHttpServerRequest.bind(lib);
    lib._onHttpServerRequest = (isSSL, req, res) => {
      try { request(isSSL, req, res); } catch (e) { this.fault('request', e); endAfterFault(res); }
    };
    const connect = lib._onHttpServerConnect.bind(lib);
    lib._onHttpServerConnect = (req, socket, head) => {
      try { connect(req, socket, head); } catch (e) { this.fault('connect', e); socket.destroy(); }
    };
    const webSocket = lib._onWebSocketServerConnect.bind(lib);
    lib._onWebSocketServerConnect = (isSSL, ws, req) => {
      try { webSocket(isSSL, ws, req); } catch (e) { this.fault('websocket', e); try { ws.terminate(); } catch { /* gone */ } }
    };
    const response = lib._onResponse.bind(lib);
    lib._onResponse = (ctx, callback) => {
      try {
        response(ctx, callback);
      } catch (e) {
        this.fault('response', e);
        const held = (ctx as { patchgateHold?: HeldDownload }).patchgateHold;
        held?.fail(gateReason('INTERNAL_ERROR', `internal error: ${e instanceof Error ? e.message : String(e)}`));
        (ctx.serverToProxyResponse as IncomingMessage | undefined)?.destroy();
        if (!held) endAfterFault(ctx.proxyToClientResponse);
      }
    };
  }

  private fault(where: FaultSite, err: unknown): void {
    reportFault(this.o.observer, where, err);
  }

  /** Graceful stop: no new connections; in-flight holds get `graceMs` to finish, then are blocked. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    try { this.proxy.httpServer?.close(); } catch { /* already closed */ }
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const d of [...this.active, ...this.downloads.values()]) d.fail(gateReason('INTERNAL_ERROR', 'patchgate is shutting down'));
    this.active.clear();
    for (const d of this.downloads.values()) d.expire();
    this.downloads.clear();
    for (const t of this.cached.values()) clearTimeout(t);
    this.cached.clear();
    for (const t of this.tunnels) t.destroy();
    const p = this.proxy as unknown as { httpServer?: http.Server; sslServers?: Record<string, { server?: http.Server }> };
    const servers = [p.httpServer, this.intercepted, ...Object.values(p.sslServers ?? {}).map((x) => x.server)].filter((x): x is http.Server => !!x);
    this.intercepted.close(); // stops its timeout checks (it never listened)
    try { this.proxy.close(); } catch { /* already closed */ }
    await new Promise((r) => setTimeout(r, 100)); // let block pages flush
    for (const s of servers) s.closeAllConnections?.();
    this.httpsAgent?.destroy();
    await this.digests?.close();
    removeSpoolDir(this.spoolDir);
    this.decoy?.remove();
  }

  // ---- CONNECT ----

  private onConnect(req: IncomingMessage, socket: Duplex, head: Buffer, callback: (err?: Error) => void): void {
    const target = req.url ?? '';
    const client = (req.socket as Socket).remoteAddress ?? '?';
    if (!this.access.clientAllowed(client)) {
      return this.denyConnect(socket, client, target || '(none)', '', { status: 403, why: `client ${client} is not in the rules' clients (or --allow-client)` });
    }
    const m = /^(\[[^\]]+\]|[^:/\\\s]+):(\d{1,5})$/.exec(target);
    const host = m ? targetHost(m[1]!) ?? '' : '';
    const port = m ? Number(m[2]) : 0;
    if (!m || !isSafeHostName(host) || port < 1 || port > 65535) {
      refuseConnect(socket, 'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    this.admitConnect(client, target, host, port, socket, head).catch((e: Error) => {
      this.fault('connect', e);
      this.denyConnect(socket, client, target, host, { status: 403, why: `internal error: ${e.message}` });
    });
  }

  /** Destination checks (name, port, then the addresses it resolves to), then interception or a tunnel. */
  private async admitConnect(client: string, target: string, host: string, port: number, socket: Duplex, head: Buffer): Promise<void> {
    const admitted = await this.admit(host, port, 'connect');
    if (socket.destroyed) return;
    if ('status' in admitted) return this.denyConnect(socket, client, target, host, admitted);
    let decision = this.o.hostRules.decideConnect(host);
    // An alias of an inspected origin (inspectAddresses) is inspected too; a pinned host stays pinned.
    if (decision.mode === 'pass' && this.inspectedAddresses && await this.inspectedAddresses.isAlias(admitted.addresses)) decision = { mode: 'inspect' };
    if (socket.destroyed) return;
    if (decision.mode === 'inspect') {
      if (!this.ca.covers(host)) {
        this.auditConnect(client, target, host, 'blocked', 403, [gateReason('INTERNAL_ERROR', 'the interception CA cannot issue for this host: refused rather than tunnelled blind')]);
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
    if (decision.mode === 'pinned') this.auditConnect(client, target, host, 'tunnel', 200, []);
    else this.o.audit.debug({ client, connect: target }, 'tunnel');
    if (admitted.unresolved) return void refuseConnect(socket, 'HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
    this.tunnel(socket, head, host, port, admitted.addresses);
  }

  /**
   * May the gate take a client to host:port? By name and port first (rules: passThrough, ports),
   * then by the addresses the name resolves to (never the gate itself; loopback and link-local
   * only for a host a rule names exactly). The addresses returned are the ones to connect to.
   */
  private async admit(host: string, port: number, kind: 'connect' | 'http' | 'tunnelled'): Promise<AccessDenial | { addresses: string[]; unresolved?: string }> {
    const byName = kind === 'tunnelled' ? undefined : this.access.destination(host, port, kind);
    if (byName) return byName;
    let addresses: string[];
    try {
      addresses = await destinationAddresses(host, !!this.o.upstreamProxy);
    } catch (e) {
      // Nothing to connect to: the caller answers as for an unreachable upstream (an interception goes on: each request resolves again).
      return { addresses: [], unresolved: `${host} does not resolve (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
    }
    return this.access.addresses(host, port, addresses, this.own) ?? { addresses };
  }

  private denyConnect(socket: Duplex, client: string, target: string, host: string, d: AccessDenial): void {
    this.auditConnect(client, target, host, 'blocked', d.status, [gateReason('ACCESS_DENIED', d.why)]);
    const text = `${d.why}\n`;
    refuseConnect(socket, `HTTP/1.1 ${d.status} ${d.status === 400 ? 'Bad Request' : 'Forbidden'}\r\ncontent-type: text/plain; charset=utf-8\r\nx-patchgate-verdict: block\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
  }

  /**
   * Answers the CONNECT and terminates TLS on the client's socket itself, with a leaf for the
   * CONNECT host from patchgate's CA; the HTTP inside goes to the shared `intercepted` server.
   * A tunnel whose first byte is not a TLS handshake carries plain HTTP: it goes to the proxy's
   * HTTP server (as http-mitm-proxy did), where the usual rules apply to each request.
   */
  private intercept(socket: Socket, head: Buffer, host: string, port: number): void {
    const mark = (s: object) => Object.assign(s as ConnectMark, { patchgateConnectHost: host, patchgateConnectPort: port });
    const start = (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(first);
      mark(socket);
      if (first[0] !== 0x16) {
        // The socket's parser from the CONNECT was detached: a new one reads what is buffered, then the rest.
        (this.proxy as unknown as { httpServer: http.Server }).httpServer.emit('connection', socket);
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
      mark(t);
      this.intercepted.emit('connection', t);
    };
    // The first byte arrives outside the library's CONNECT entry: a guard of its own.
    const guarded = (first: Buffer) => {
      try { start(first); } catch (e) { this.fault('connect', e); socket.destroy(); }
    };
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) return guarded(head);
    socket.once('data', guarded);
  }

  private contextFor(host: string): tls.SecureContext {
    const leaf = this.ca.certificateFor(canonicalHost(host));
    const hit = this.contexts.get(host);
    if (hit && hit.certPem === leaf.certPem) return hit.ctx;
    const ctx = tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
    this.contexts.delete(host);
    this.contexts.set(host, { certPem: leaf.certPem, ctx });
    if (this.contexts.size > 1000) this.contexts.delete(this.contexts.keys().next().value!);
    return ctx;
  }

  private auditConnect(client: string, target: string, host: string, served: AuditRecord['served'], status: number, reasons: AuditRecord['reasons']): void {
    this.o.audit.record({
      id: newAuditId(), kind: 'connect', client, method: 'CONNECT', url: target, host, inspected: false, served, status,
      verdict: reasons.length ? 'block' : 'pass', reasons, rulesSha256: this.o.rulesSha256, durations: {},
    });
  }

  /** A blind TCP tunnel, direct or through the upstream proxy's CONNECT. */
  private tunnel(client: Duplex, head: Buffer, host: string, port: number, addresses: string[]): void {
    const up = this.o.upstreamProxy;
    const idleMs = this.o.limits.tunnelIdleTimeoutMs ?? TUNNEL_IDLE_MS;
    const wire = (server: Duplex) => {
      this.tunnels.add(client);
      const close = () => { client.destroy(); server.destroy(); };
      client.once('close', () => { this.tunnels.delete(client); server.destroy(); });
      server.once('close', () => client.destroy());
      server.on('error', close);
      client.on('error', close);
      // Either side ending ends the tunnel (as Squid's do): what is still queued for the other side
      // is flushed first, then both close. Left half-open, a tunnel whose client left while the far
      // end stays open would keep two descriptors for ever.
      const endFrom = (from: Duplex, to: Duplex) => from.once('end', () => to.end(close));
      endFrom(client, server);
      endFrom(server, client);
      // No byte either way for this long (net.Socket counts reads and writes): closed.
      for (const x of [client, server]) (x as Socket).setTimeout?.(idleMs, close);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) server.write(head);
      server.pipe(client, { end: false });
      client.pipe(server, { end: false });
    };
    const refuse = () => { if (!client.destroyed) client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n'); };
    const wireGuarded = (server: Duplex) => {
      try { wire(server); } catch (e) { this.fault('tunnel', e); client.destroy(); server.destroy(); }
    };
    if (!up) {
      const s = net.connect({ host, port, ...(addresses.length ? { lookup: pinnedLookup(addresses) } : {}) });
      s.once('connect', () => wireGuarded(s));
      s.once('error', refuse);
      return;
    }
    const r = http.request({ host: up.hostname, port: Number(up.port) || 80, method: 'CONNECT', path: `${host.includes(':') ? `[${host}]` : host}:${port}` });
    r.once('connect', (res, s) => (res.statusCode === 200 ? wireGuarded(s) : (s.destroy(), refuse())));
    r.once('error', refuse);
    r.end();
  }

  // ---- requests ----

  private onRequest(ctx: any, callback: (err?: Error) => void): void {
    const req: IncomingMessage = ctx.clientToProxyRequest;
    const res: ServerResponse = ctx.proxyToClientResponse;
    const opts = ctx.proxyToServerRequestOptions as UpstreamOptions;
    // A request for the proxy itself (origin-form, not through a CONNECT): PAC file or 404.
    const originForm = (req as unknown as { patchgateOriginForm?: boolean }).patchgateOriginForm === true;
    // Plain HTTP inside a CONNECT tunnel names its target in Host, like a request to the origin itself.
    const mark = req.socket as unknown as ConnectMark;
    const viaConnect = mark.patchgateConnectHost !== undefined;
    const client = req.socket.remoteAddress ?? '?';
    // Inside a CONNECT the client was admitted with the CONNECT.
    if (!viaConnect && !this.access.clientAllowed(client)) {
      return this.denyRequest(req, res, client, req.url || '(none)', '', { status: 403, why: `client ${client} is not in the rules' clients (or --allow-client)` });
    }
    if (!ctx.isSSL && !ctx.connectRequest && !viaConnect && (originForm || this.isDirect(req, opts))) return this.serveDirect(req, res);
    // http-mitm-proxy turned an `http://` absolute-form target into its path; anything else that
    // is not origin-form (`*`, `HTTP://…`, `https://…`, `ftp://…`, `*@`) names no resource here.
    if (!(req.url ?? '').startsWith('/')) return this.refuseTarget(req, res, opts.host ?? '', 'the request target is neither origin-form (/path) nor http:// absolute-form');
    if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 1 && opts.port <= 65535)) return this.refuseTarget(req, res, opts.host ?? '', 'the port is not a number from 1 to 65535');
    const host = targetHost(opts.host ?? '') ?? '';
    if (!host || !isSafeHostName(host)) return this.refuse(res, 400, 'bad host name (or a non-canonical IP address spelling)');
    const hdr = hostOfHeader(req.headers.host);
    if (hdr === null) return this.refuse(res, 400, 'the Host header does not parse');
    if (hdr !== undefined && hdr.host !== host) return this.refuse(res, 400, 'Host header and request target disagree');
    const scheme = ctx.isSSL ? 'https' : 'http';
    if (viaConnect) {
      // The CONNECT named the destination and was admitted for it: a request inside may not name another.
      const port = mark.patchgateConnectPort!;
      if (host !== mark.patchgateConnectHost || (hdr?.port !== undefined && hdr.port !== port)) {
        return this.denyRequest(req, res, client, `${scheme}://${req.headers.host ?? host}${req.url ?? '/'}`, host, { status: 400, why: `the request inside the CONNECT to ${mark.patchgateConnectHost}:${port} names ${hdr ? req.headers.host : host}` });
      }
      opts.port = port;
    }
    const port = Number(opts.port) || (ctx.isSSL ? 443 : 80);
    const path = req.url ?? '/';
    const defaultPort = (scheme === 'https' && port === 443) || (scheme === 'http' && port === 80);
    const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}${defaultPort ? '' : `:${port}`}${path}`;
    this.admitRequest(ctx, callback, { req, res, opts, client, host, port, path, url, viaConnect }).catch((e: Error) => {
      // A bug reachable from one request: that request fails (500, audited), the gate carries on.
      this.fault('request', e);
      if (!res.headersSent) this.denyRequest(req, res, client, url, host, { status: 500, why: `internal error: ${e.message}` }, 'INTERNAL_ERROR');
    });
  }

  /** Destination checks for a request, then a pass-through or a hold. */
  private async admitRequest(ctx: any, callback: (err?: Error) => void, r: {
    req: IncomingMessage; res: ServerResponse; opts: UpstreamOptions; client: string; host: string; port: number; path: string; url: string; viaConnect: boolean;
  }): Promise<void> {
    const { req, res, opts, client, host, port, path, url } = r;
    // Inside a CONNECT the port was checked with the CONNECT; the addresses are checked again (they may have changed).
    const admitted = await this.admit(host, port, r.viaConnect ? 'tunnelled' : 'http');
    if (res.destroyed || res.headersSent) return;
    if ('status' in admitted) return this.denyRequest(req, res, client, url, host, admitted);
    if (admitted.unresolved) return this.denyRequest(req, res, client, url, host, { status: 502, why: admitted.unresolved }, 'UPSTREAM_ERROR');
    if (!this.o.upstreamProxy && admitted.addresses.length) opts.lookup = pinnedLookup(admitted.addresses);
    let decision = this.o.hostRules.decide(host, path);
    // inspectAddresses: a host no inspect rule names, whose address is an inspected host's, is inspected too.
    // (An inspect rule whose paths did not match keeps its host passed; a pinned host stays pinned.)
    if (decision.mode === 'pass' && this.inspectedAddresses && this.o.hostRules.decideConnect(host).mode === 'pass'
      && await this.inspectedAddresses.isAlias(admitted.addresses)) decision = { mode: 'inspect' };
    if (res.destroyed) return;
    this.routeUpstream(ctx, opts, url);
    if (decision.mode !== 'inspect') {
      this.o.audit.debug({ client, method: req.method, url }, 'pass');
      return callback();
    }
    this.hold(ctx, callback, req, res, opts, url, host, decision.rule?.hold ?? 'whole');
  }

  /**
   * WebSocket upgrades bypass onRequest entirely: none to an inspected host (no byte unverified),
   * and the same client and destination checks as any request. False: refuse (never connects upstream).
   */
  private async admitWebSocket(ctx: any): Promise<boolean> {
    let target: URL | undefined;
    try { target = new URL(ctx.proxyToServerWebSocketOptions.url); } catch { return false; }
    const socket = ctx.clientToProxyWebSocket?._socket as (Socket & ConnectMark) | undefined;
    const viaConnect = socket?.patchgateConnectHost !== undefined;
    const host = targetHost(target.hostname) ?? '';
    if (!viaConnect && !this.access.clientAllowed(socket?.remoteAddress)) return false;
    if (!host || this.stopping || this.o.hostRules.decide(host, target.pathname).mode !== 'pass') return false;
    if (viaConnect && host !== socket!.patchgateConnectHost) return false;
    const port = Number(target.port) || (target.protocol === 'wss:' ? 443 : 80);
    const admitted = await this.admit(host, port, viaConnect ? 'tunnelled' : 'http');
    if ('status' in admitted || admitted.unresolved) return false;
    if (this.inspectedAddresses && await this.inspectedAddresses.isAlias(admitted.addresses)) return false;
    if (!this.o.upstreamProxy && admitted.addresses.length) ctx.proxyToServerWebSocketOptions.lookup = pinnedLookup(admitted.addresses);
    return true;
  }

  private denyRequest(req: IncomingMessage, res: ServerResponse, client: string, url: string, host: string, d: { status: number; why: string }, code: 'ACCESS_DENIED' | 'UPSTREAM_ERROR' | 'INTERNAL_ERROR' = 'ACCESS_DENIED'): void {
    req.resume();
    const id = newAuditId();
    this.o.audit.record({
      id, kind: 'transfer', client, method: (req.method ?? 'GET').toUpperCase(), url, host, inspected: false, served: 'blocked', status: d.status,
      verdict: 'block', reasons: [gateReason(code, d.why)], rulesSha256: this.o.rulesSha256, durations: {},
    });
    if (!res.headersSent) res.setHeader('x-patchgate-audit-id', id);
    this.refuse(res, d.status, d.why);
  }

  private hold(ctx: any, callback: (err?: Error) => void, req: IncomingMessage, res: ServerResponse, opts: UpstreamOptions, url: string, host: string, holdMode: HoldMode): void {
    if (this.stopping) return this.refuse(res, 503, 'shutting down');

    const method = (req.method ?? 'GET').toUpperCase();
    const waiter: Waiter = {
      id: newAuditId(), req, res, method, range: typeof req.headers.range === 'string' ? req.headers.range : undefined,
      client: req.socket.remoteAddress ?? '?', url, host, since: Date.now(), shared: false,
    };
    // Only GET (and HEAD for an entity already verified) shares; other methods get their own fetch.
    // A request with credentials shares only with requests carrying the same ones (RFC 9111 §3.5:
    // and only if the response allows it, decided when it arrives).
    const auth = req.headers.authorization;
    const credentials = auth !== undefined;
    const identity = credentials ? `#auth:${createHash('sha256').update(String(auth)).digest('hex').slice(0, 32)}` : '';
    const key = method === 'GET' || method === 'HEAD' ? `${url}${identity}` : `${url}#${waiter.id}`;
    const existing = this.downloads.get(key);
    if (existing && existing.joinable && (method === 'GET' || existing.settled)) {
      const ttl = this.cached.get(existing);
      if (ttl && this.cached.delete(existing)) this.cached.set(existing, ttl); // most recently used
      waiter.shared = true;
      // If the response turns out not to be shareable (private, no-store, Vary, credentials), this client fetches its own.
      waiter.refetch = () => this.fetchFor(ctx, callback, opts, waiter, `${url}#${waiter.id}`, method, credentials, false, holdMode);
      req.resume();
      existing.attach(waiter);
      return; // served from the shared download; nothing goes upstream for this client
    }
    this.fetchFor(ctx, callback, opts, waiter, key, method, credentials, method === 'GET', holdMode);
  }

  /** Starts the upstream fetch for `waiter` (the whole entity, held), as a shared download when `shared`. */
  private fetchFor(ctx: any, callback: (err?: Error) => void, opts: UpstreamOptions, waiter: Waiter, key: string, method: string, credentials: boolean, shared: boolean, holdMode: HoldMode): void {
    waiter.shared = false;
    waiter.refetch = undefined;
    // The whole entity is fetched without Range or conditionals, and decoded here whatever the encoding.
    for (const h of ['range', 'if-range', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since']) delete opts.headers[h];
    opts.headers['accept-encoding'] = method === 'HEAD' ? 'identity' : 'gzip, deflate, br';
    const held = new HeldDownload(key, this.holdSettings(), this.holdSettled);
    held.credentials = credentials;
    held.holdMode = holdMode;
    held.owner = waiter.client;
    // One copy per upstream entity whatever the query string, where the origin's ETag says it is the same.
    if (shared) {
      const u = new URL(waiter.url);
      held.entityBase = `${u.origin}${u.pathname}${key.slice(waiter.url.length)}`;
    }
    ctx.patchgateHold = held;
    this.active.add(held);
    held.onCancel(() => (ctx.proxyToServerRequest as { destroy?: () => void } | undefined)?.destroy?.());
    if (shared) this.downloads.set(key, held);
    held.attach(waiter);
    ctx.onResponse((c: any, _cb: () => void) => held.takeUpstream(c.serverToProxyResponse));
    callback();
  }

  /**
   * Not a closure made in onRequest: that one would share onRequest's scope, and so keep the
   * request's whole http-mitm-proxy context (both requests and responses, and through the first
   * client's response the stream it was served from) alive as long as the entity stays cached.
   */
  private readonly holdSettled = (d: HeldDownload, cacheable: boolean): void => this.settled(d, cacheable);

  private settled(d: HeldDownload, cacheable: boolean): void {
    this.active.delete(d);
    if (!cacheable) {
      if (this.downloads.get(d.key) === d) this.downloads.delete(d.key);
      return;
    }
    const t = setTimeout(() => this.uncache(d), d.keepMs);
    t.unref();
    this.cached.set(d, t);
    if (d.entityKey) this.entities.set(d.entityKey, d);
  }

  /** Ends a cached entity's linger: no new client gets it; its spool goes when its readers are done. */
  private uncache(d: HeldDownload): void {
    clearTimeout(this.cached.get(d));
    this.cached.delete(d);
    if (this.downloads.get(d.key) === d) this.downloads.delete(d.key);
    if (d.entityKey && this.entities.get(d.entityKey) === d) this.entities.delete(d.entityKey);
    d.expire();
  }

  /** limits.maxSpoolBytes, or the default: a fraction of the spool folder's free space now. */
  /** The spool's disk is short by `bytes` (one client's share, if `owner`): drop verified copies on disk, least recently used first. */
  private reclaimDisk(bytes: number, owner?: string): void {
    let freed = 0;
    for (const d of [...this.cached.keys()]) {
      if (freed >= bytes) break;
      if (owner !== undefined && d.owner !== owner) continue;
      const n = d.onDiskBytes;
      if (n === 0) continue;
      this.uncache(d);
      freed += n;
    }
  }

  /** A verified copy of the entity `key` names (URL without query, strong ETag), still kept. */
  private readonly sameEntity = (key: string): HeldDownload | undefined => {
    const d = this.entities.get(key);
    if (!d || !this.cached.has(d)) return undefined;
    const ttl = this.cached.get(d)!;
    this.cached.delete(d);
    this.cached.set(d, ttl); // most recently used
    return d;
  };

  /** The memory budget is short by `bytes`: drop cached entities held in memory, least recently used first. */
  private reclaim(bytes: number): void {
    let freed = 0;
    for (const d of this.cached.keys()) {
      if (freed >= bytes) break;
      const m = d.inMemoryBytes;
      if (m === 0) continue;
      this.uncache(d);
      freed += m;
    }
  }

  private holdSettings(): HoldSettings {
    const l = this.o.limits;
    return {
      cacheTtlMs: l.cacheTtlMs, disk: this.disk, sameEntity: this.sameEntity, verifier: this.verifier, trustFor: this.o.trustFor, spoolDir: this.spoolDir, memoryHoldBytes: l.memoryHoldBytes, memory: this.memory, maxPayloadBytes: l.maxPayloadBytes,
      idleTimeoutMs: l.idleTimeoutMs, totalTimeoutMs: l.totalTimeoutMs, nonPayload: this.o.nonPayload, unsignedDeltas: this.o.unsignedDeltas, unverifiable: this.o.unverifiable,
      rulesSha256: this.o.rulesSha256, audit: (r) => this.o.audit.record(r), auditOnError: this.o.auditOnError, now: this.o.now, observer: this.o.observer, digests: this.digests,
      redirectAllowed: (u) => (u.protocol === 'http:' || u.protocol === 'https:') && this.o.hostRules.decide(canonicalHost(u.hostname), u.pathname).mode === 'inspect',
    };
  }

  /** Through the upstream proxy when one is set: absolute-form for HTTP, CONNECT for HTTPS. */
  private routeUpstream(ctx: any, opts: { host: string; port: number; path: string; agent?: unknown }, url: string): void {
    const up = this.o.upstreamProxy;
    if (!up) return;
    if (ctx.isSSL) {
      opts.agent = this.httpsAgent;
      return;
    }
    opts.host = up.hostname;
    opts.port = Number(up.port) || 80;
    opts.path = url;
    opts.agent = undefined;
  }

  private isDirect(req: IncomingMessage, opts: { host: string; port: number }): boolean {
    // http-mitm-proxy rewrote an absolute-form target to its path; origin-form requests name the proxy in Host.
    const port = Number(opts.port);
    return port === this.port && ['127.0.0.1', 'localhost', '::1', this.o.listen.host, '0.0.0.0'].includes(canonicalHost(opts.host ?? ''));
  }

  private serveDirect(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/wpad.dat' || path === '/proxy.pac') {
      // The address the client used to reach us, with our port when its Host header has none (Host: wpad).
      const h = req.headers.host;
      const hostHeader = !h ? `${this.o.listen.host}:${this.port}` : /:\d+$/.test(h) ? h : `${h}:${this.port}`;
      const up = this.o.upstreamProxy;
      const body = pacFile({
        proxyHostPort: hostHeader,
        gatedPatterns: [...this.o.hostRules.patterns('inspect'), ...this.o.hostRules.patterns('pinned')],
        upstreamHostPort: up ? `${up.hostname}:${Number(up.port) || 80}` : undefined,
      });
      res.writeHead(200, { 'content-type': 'application/x-ns-proxy-autoconfig', 'content-length': Buffer.byteLength(body), 'cache-control': 'max-age=300' });
      res.end(body);
      return;
    }
    this.refuse(res, 404, 'patchgate serves /wpad.dat and /proxy.pac here');
  }

  /** A request target that is not origin-form after the library's rewrite: 400 and an audit line. */
  private refuseTarget(req: IncomingMessage, res: ServerResponse, hostHeader: string, why: string): void {
    req.resume();
    const target = req.url ?? '';
    this.o.audit.record({
      id: newAuditId(), kind: 'transfer', client: req.socket.remoteAddress ?? '?', method: req.method || '?', url: target || '(empty)',
      host: targetHost(hostHeader) ?? canonicalHost(hostHeader), inspected: false, served: 'blocked', status: 400, verdict: 'block',
      reasons: [gateReason('BAD_REQUEST', why)], rulesSha256: this.o.rulesSha256, durations: {},
    });
    this.refuse(res, 400, `bad request target: ${why}`);
  }

  private refuse(res: ServerResponse, status: number, text: string): void {
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text + '\n'), connection: 'close' });
    res.end(text + '\n');
  }
}
