import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { tmpdir } from 'node:os';
import { Proxy as MitmProxy } from 'http-mitm-proxy';
import { HttpsProxyAgent } from 'https-proxy-agent';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import { reason } from '../verify/verdict.js';
import type { HostRules } from '../policy/hostRules.js';
import type { TrustChannel } from '../policy/trustChannels.js';
import { canonicalHost, targetHost } from '../policy/hostRules.js';
import type { AuditLog } from '../audit/auditLog.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import type { GateObserver } from '../metrics/gateObserver.js';
import { HeldDownload, newAuditId, type HoldSettings, type Waiter } from './heldDownload.js';
import { MEMORY_TOTAL_FACTOR, MemoryBudget, makeSpoolDir, removeSpoolDir } from './spool.js';
import { DigestPool } from './digestPool.js';

export { MEMORY_TOTAL_FACTOR };
import { pacFile } from './pacFile.js';
import { isSafeHostName, loadOrCreateInterceptionCa, type InterceptionCa } from './interceptionCa.js';
import { makeLibraryCaDecoy } from './libraryCaDecoy.js';

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
  spoolBase?: string;
  /** PEM file of extra CAs the gate trusts for upstream TLS (besides the system store). */
  upstreamCaFile?: string;
  /** Verification instant for tests (the core's `now`). */
  now?: () => Date;
  /** Metrics hooks, passed to every hold (src/metrics/gateMetrics.ts). */
  observer?: GateObserver;
  /** Digest threads (0: hash on the event loop). Default: one per spare core, at least one. */
  digestThreads?: number;
}

const CONNECT_FIRST_BYTE_MS = 10_000;

/** http-mitm-proxy's request entry (not in its typings). */
interface MitmInternals { _onHttpServerRequest(isSSL: boolean, req: IncomingMessage, res: ServerResponse): void }

/** Refuses a CONNECT and really closes the socket, even if the client keeps its half open. */
function refuseConnect(socket: Duplex, response: string): void {
  socket.end(response, () => socket.destroy());
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Hosts in absolute-form and Host header must agree: a disagreement is how smuggling starts. */
function hostOfHeader(h: string | undefined): string | undefined {
  if (!h) return undefined;
  const m = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(h.trim());
  return m ? targetHost(m[1]!) ?? '(non-canonical)' : undefined;
}

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

  constructor(private readonly o: GateOptions) {
    const ca = o.upstreamCaFile ? [...tls.rootCertificates, readFileSync(o.upstreamCaFile, 'utf8')] : undefined;
    const l = o.limits;
    this.memory = new MemoryBudget(l.memoryTotalBytes ?? MEMORY_TOTAL_FACTOR * l.memoryHoldBytes, (bytes) => this.reclaim(bytes));
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
  /** Bytes all spools keep in memory (held, cached, or dropped from the cache but still being read). */
  get spoolMemoryBytes(): number { return this.memory.usedBytes; }
  /** The most that spools may keep in memory together. */
  get spoolMemoryLimit(): number { return this.memory.limit; }

  async start(): Promise<void> {
    this.spoolDir = makeSpoolDir(this.o.spoolBase ?? tmpdir());
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
      let target: URL | undefined;
      try { target = new URL(ctx.proxyToServerWebSocketOptions.url); } catch { /* refused below */ }
      const host = target ? canonicalHost(target.hostname) : '';
      if (!target || this.stopping || this.o.hostRules.decide(host, target.pathname).mode !== 'pass') {
        // http-mitm-proxy's close handler reads proxyToServerWebSocket: give it a closed stand-in.
        ctx.proxyToServerWebSocket = { readyState: 3, close() {}, send() {}, ping() {}, pong() {} };
        try { ctx.clientToProxyWebSocket.terminate(); } catch { /* gone */ }
        return; // never connects upstream
      }
      callback();
    });
    proxy.onError((ctx, err) => {
      const held = ctx && (ctx as unknown as { patchgateHold?: HeldDownload }).patchgateHold;
      if (held) held.fail(reason('UPSTREAM_ERROR', `upstream: ${err?.message ?? err}`));
    });
    this.decoy = makeLibraryCaDecoy();
    await new Promise<void>((resolve, reject) => {
      const extraCa = this.o.upstreamCaFile ? readFileSync(this.o.upstreamCaFile, 'utf8') : undefined;
      const httpsAgent = new https.Agent({ keepAlive: true, ...(extraCa ? { ca: [...tls.rootCertificates, extraCa] } : {}) });
      proxy.listen({ host: this.o.listen.host, port: this.o.listen.port, sslCaDir: this.decoy!.dir, keepAlive: true, httpsAgent } as any, (err?: Error | null) => (err ? reject(err) : resolve()));
    });
    this.port = proxy.httpPort;
    // Before http-mitm-proxy rewrites an absolute-form target to its path: remember the form.
    proxy.httpServer!.prependListener('request', (req: IncomingMessage) => {
      (req as unknown as { patchgateOriginForm?: boolean }).patchgateOriginForm = (req.url ?? '').startsWith('/');
    });
  }

  /** Graceful stop: no new connections; in-flight holds get `graceMs` to finish, then are blocked. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    try { this.proxy.httpServer?.close(); } catch { /* already closed */ }
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const d of [...this.active, ...this.downloads.values()]) d.fail(reason('INTERNAL_ERROR', 'patchgate is shutting down'));
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
    const m = /^(\[[^\]]+\]|[^:/\\\s]+):(\d{1,5})$/.exec(target);
    const host = m ? targetHost(m[1]!) ?? '' : '';
    const port = m ? Number(m[2]) : 0;
    if (!m || !isSafeHostName(host) || port < 1 || port > 65535) {
      refuseConnect(socket, 'HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const decision = this.o.hostRules.decideConnect(host);
    const client = (req.socket as Socket).remoteAddress ?? '?';
    if (decision.mode === 'inspect') {
      if (!this.ca.covers(host)) {
        this.auditConnect(client, target, host, 'blocked', 403, [reason('INTERNAL_ERROR', 'the interception CA cannot issue for this host: refused rather than tunnelled blind')]);
        refuseConnect(socket, 'HTTP/1.1 403 Forbidden\r\nx-patchgate-verdict: block\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      // A socket detached by CONNECT has no HTTP timeouts: close it when the client ends it, and if
      // no TLS byte arrives in time (else each abandoned CONNECT would keep a descriptor).
      socket.once('end', () => socket.destroy());
      (socket as Socket).setTimeout?.(CONNECT_FIRST_BYTE_MS, () => socket.destroy());
      this.intercept(socket as Socket, head, host);
      return;
    }
    if (decision.mode === 'pinned') this.auditConnect(client, target, host, 'tunnel', 200, []);
    else this.o.audit.debug({ client, connect: target }, 'tunnel');
    this.tunnel(socket, head, host, port);
  }

  /**
   * Answers the CONNECT and terminates TLS on the client's socket itself, with a leaf for the
   * CONNECT host from patchgate's CA; the HTTP inside goes to the shared `intercepted` server.
   * A tunnel whose first byte is not a TLS handshake carries plain HTTP: it goes to the proxy's
   * HTTP server (as http-mitm-proxy did), where the usual rules apply to each request.
   */
  private intercept(socket: Socket, head: Buffer, host: string): void {
    const start = (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(first);
      (socket as unknown as { patchgateConnectHost?: string }).patchgateConnectHost = host;
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
      this.intercepted.emit('connection', t);
    };
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) return start(head);
    socket.once('data', start);
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
  private tunnel(client: Duplex, head: Buffer, host: string, port: number): void {
    const up = this.o.upstreamProxy;
    const wire = (server: Duplex) => {
      this.tunnels.add(client);
      client.once('close', () => { this.tunnels.delete(client); server.destroy(); });
      server.once('close', () => client.destroy());
      server.on('error', () => client.destroy());
      client.on('error', () => server.destroy());
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) server.write(head);
      server.pipe(client);
      client.pipe(server);
    };
    const refuse = () => { if (!client.destroyed) client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n'); };
    if (!up) {
      const s = net.connect({ host, port });
      s.once('connect', () => wire(s));
      s.once('error', refuse);
      return;
    }
    const r = http.request({ host: up.hostname, port: Number(up.port) || 80, method: 'CONNECT', path: `${host.includes(':') ? `[${host}]` : host}:${port}` });
    r.once('connect', (res, s) => (res.statusCode === 200 ? wire(s) : (s.destroy(), refuse())));
    r.once('error', refuse);
    r.end();
  }

  // ---- requests ----

  private onRequest(ctx: any, callback: (err?: Error) => void): void {
    const req: IncomingMessage = ctx.clientToProxyRequest;
    const res: ServerResponse = ctx.proxyToClientResponse;
    const opts = ctx.proxyToServerRequestOptions as { host: string; port: number; path: string; headers: Record<string, string | string[] | undefined>; agent?: unknown };
    // A request for the proxy itself (origin-form, not through a CONNECT): PAC file or 404.
    const originForm = (req as unknown as { patchgateOriginForm?: boolean }).patchgateOriginForm === true;
    // Plain HTTP inside a CONNECT tunnel names its target in Host, like a request to the origin itself.
    const viaConnect = (req.socket as unknown as { patchgateConnectHost?: string }).patchgateConnectHost !== undefined;
    if (!ctx.isSSL && !ctx.connectRequest && !viaConnect && (originForm || this.isDirect(req, opts))) return this.serveDirect(req, res);
    const host = targetHost(opts.host ?? '') ?? '';
    if (!host || !isSafeHostName(host)) return this.refuse(res, 400, 'bad host name (or a non-canonical IP address spelling)');
    const hdrHost = hostOfHeader(req.headers.host);
    if (hdrHost !== undefined && hdrHost !== host) return this.refuse(res, 400, 'Host header and request target disagree');
    const scheme = ctx.isSSL ? 'https' : 'http';
    const port = opts.port || (ctx.isSSL ? 443 : 80);
    const path = req.url ?? '/';
    const defaultPort = (scheme === 'https' && port === 443) || (scheme === 'http' && port === 80);
    const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}${defaultPort ? '' : `:${port}`}${path}`;
    const decision = this.o.hostRules.decide(host, path);
    this.routeUpstream(ctx, opts, url);
    if (decision.mode !== 'inspect') {
      this.o.audit.debug({ client: req.socket.remoteAddress, method: req.method, url }, 'pass');
      return callback();
    }
    if (this.stopping) return this.refuse(res, 503, 'shutting down');

    const method = (req.method ?? 'GET').toUpperCase();
    const waiter: Waiter = {
      id: newAuditId(), req, res, method, range: typeof req.headers.range === 'string' ? req.headers.range : undefined,
      client: req.socket.remoteAddress ?? '?', url, host, since: Date.now(), shared: false,
    };
    // Only GET (and HEAD for an entity already verified) shares; other methods get their own fetch.
    const key = method === 'GET' || method === 'HEAD' ? url : `${url}#${waiter.id}`;
    const existing = this.downloads.get(key);
    if (existing && (method === 'GET' || existing.settled)) {
      const ttl = this.cached.get(existing);
      if (ttl && this.cached.delete(existing)) this.cached.set(existing, ttl); // most recently used
      waiter.shared = true;
      req.resume();
      existing.attach(waiter);
      return; // served from the shared download; nothing goes upstream for this client
    }
    // The whole entity is fetched without Range or conditionals, and decoded here whatever the encoding.
    for (const h of ['range', 'if-range', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since']) delete opts.headers[h];
    opts.headers['accept-encoding'] = method === 'HEAD' ? 'identity' : 'gzip, deflate, br';
    const held = new HeldDownload(key, this.holdSettings(), this.holdSettled);
    ctx.patchgateHold = held;
    this.active.add(held);
    held.onCancel(() => (ctx.proxyToServerRequest as { destroy?: () => void } | undefined)?.destroy?.());
    if (method === 'GET') this.downloads.set(key, held);
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
    const t = setTimeout(() => this.uncache(d), this.o.limits.cacheTtlMs);
    t.unref();
    this.cached.set(d, t);
  }

  /** Ends a cached entity's linger: no new client gets it; its spool goes when its readers are done. */
  private uncache(d: HeldDownload): void {
    clearTimeout(this.cached.get(d));
    this.cached.delete(d);
    if (this.downloads.get(d.key) === d) this.downloads.delete(d.key);
    d.expire();
  }

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
      policy: this.o.policy, trustFor: this.o.trustFor, spoolDir: this.spoolDir, memoryHoldBytes: l.memoryHoldBytes, memory: this.memory, maxPayloadBytes: l.maxPayloadBytes,
      idleTimeoutMs: l.idleTimeoutMs, totalTimeoutMs: l.totalTimeoutMs, nonPayload: this.o.nonPayload, unsignedDeltas: this.o.unsignedDeltas,
      rulesSha256: this.o.rulesSha256, audit: (r) => this.o.audit.record(r), now: this.o.now, observer: this.o.observer, digests: this.digests,
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

  private refuse(res: ServerResponse, status: number, text: string): void {
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text + '\n'), connection: 'close' });
    res.end(text + '\n');
  }
}
