import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import { Verifier } from '../verify/verifier.js';
import { gateReason } from '../inspect/gateReason.js';
import { canonicalHost, type HostRules } from '../policy/hostRules.js';
import type { HoldMode, UnverifiableRule } from '../policy/rulesFile.js';
import type { TrustChannel } from '../policy/trustChannels.js';
import type { AuditLog } from '../audit/auditLog.js';
import { reportFault, type FaultSite, type GateObserver } from '../metrics/gateObserver.js';
import { HeldDownload, newAuditId, type HoldSettings, type Waiter } from './heldDownload.js';
import { DiskBudget, MEMORY_TOTAL_FACTOR, MemoryBudget, makeSpoolDir, removeSpoolDir } from '../inspect/spool.js';
import { DigestPool } from '../inspect/digestPool.js';
import { answerGateRequest } from './pacFile.js';
import { loadOrCreateInterceptionCa, type InterceptionCa } from './interceptionCa.js';
import { AccessPolicy, defaultAccessRules, type AccessRules } from '../policy/accessPolicy.js';
import { DestinationAdmission } from './destinations.js';
import { ConnectHandler, TUNNEL_IDLE_MS } from './connectHandler.js';
import { UpstreamFetch, forwardedRequestHeaders, refuse, type UpstreamTarget } from './upstreamFetch.js';
import { VerifiedEntityCache } from './verifiedEntityCache.js';
import { readRequestTarget, type OriginTarget } from './requestTarget.js';

export { MEMORY_TOTAL_FACTOR, TUNNEL_IDLE_MS };

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

/** A request head (HTTP or ICAP) must be complete this long after its first byte, or its connection closes. */
export const REQUEST_HEAD_TIMEOUT_MS = 30_000;

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

const ignore = (): void => {};

/**
 * The gate: a node:http proxy server that decides, per request, whether the response is an update
 * payload to hold and verify (rules: inspected hosts) or one to pass through, and per CONNECT
 * whether to intercept it (inspected hosts over HTTPS) or tunnel it untouched (ConnectHandler).
 * Upstream requests go through UpstreamFetch; verified copies live in VerifiedEntityCache.
 * It never decides a verdict itself: HeldDownload feeds the core and reports what it says.
 */
export class UpdateGate {
  /** The listening proxy server: absolute-form HTTP, CONNECT, WebSocket upgrades. */
  private readonly server: http.Server;
  /**
   * HTTP over the TLS that patchgate terminates on each intercepted CONNECT socket itself: one
   * server for every host (no listening socket per host, no extra loopback hop per byte).
   */
  private readonly intercepted = http.createServer({ connectionsCheckingInterval: 1000 });
  private ca!: InterceptionCa;
  private spoolDir!: string;
  private readonly cache = new VerifiedEntityCache();
  /** Memory of all spools together; full, it drops cached entities (reclaim) before holds go to disk. */
  private readonly memory: MemoryBudget;
  /** Disk of all spools together, and each client's share (limits.maxSpoolBytes); made at start. */
  private disk!: DiskBudget;
  private readonly upstream: UpstreamFetch;
  private readonly connects: ConnectHandler;
  private readonly destinations: DestinationAdmission;
  private readonly access: AccessPolicy;
  private port = 0;
  private stopping = false;
  private digests: DigestPool | undefined;
  /** Built once from the rules' trust: the requests no trust channel names are judged by it. */
  private readonly verifier: Verifier;

  constructor(private readonly o: GateOptions) {
    this.verifier = new Verifier(o.policy);
    const l = o.limits;
    this.memory = new MemoryBudget(l.memoryTotalBytes ?? MEMORY_TOTAL_FACTOR * l.memoryHoldBytes, (bytes) => this.cache.reclaimMemory(bytes));
    this.access = new AccessPolicy(o.access ?? defaultAccessRules(), o.hostRules);
    this.destinations = new DestinationAdmission({
      access: this.access, hostRules: o.hostRules, viaUpstreamProxy: !!o.upstreamProxy,
      ownEndpoints: () => [{ host: o.listen.host, port: this.port }, ...(o.ownEndpoints ?? [])],
    });
    this.upstream = new UpstreamFetch({ upstreamProxy: o.upstreamProxy, upstreamCaFile: o.upstreamCaFile });
    this.server = http.createServer();
    // A request head must be complete this long after it started (slowloris), as ICAP's.
    this.server.headersTimeout = l.requestHeadTimeoutMs ?? REQUEST_HEAD_TIMEOUT_MS;
    this.connects = new ConnectHandler({
      access: this.access, hostRules: o.hostRules, destinations: this.destinations, audit: o.audit, rulesSha256: o.rulesSha256,
      upstreamProxy: o.upstreamProxy, tunnelIdleMs: l.tunnelIdleTimeoutMs ?? TUNNEL_IDLE_MS, fault: (w, e) => this.fault(w, e),
      serveHttp: (socket: Socket) => this.server.emit('connection', socket),
      serveTls: (socket: TLSSocket) => this.intercepted.emit('connection', socket),
    });
  }

  get address(): { host: string; port: number } { return { host: this.o.listen.host, port: this.port }; }
  get caCertificatePath(): string { return this.ca.caCertificatePath; }
  get inFlight(): number { return this.cache.inFlight; }
  /** Bytes in the spool of holds in flight and of verified copies still cached (for metrics). */
  get spoolBytes(): number { return this.cache.spoolBytes; }
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
    this.disk = DiskBudget.forSpool(this.spoolDir, this.o.limits, (bytes, owner) => this.cache.reclaimDisk(bytes, owner));
    if (this.o.digestThreads !== 0) {
      this.digests = new DigestPool(this.o.digestThreads);
      await this.digests.ready();
    }
    this.ca = loadOrCreateInterceptionCa(this.o.caDir, { permittedHosts: this.o.hostRules.patterns('inspect') });
    this.connects.useCa(this.ca);
    // Each entry from node:http gets one guard: whatever throws while one client's request,
    // CONNECT or upgrade is handled ends that exchange, never the process; each catch is counted
    // (patchgate_internal_errors_total) and told on stderr.
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.requestEntry(req, res, false));
    this.intercepted.on('request', (req: IncomingMessage, res: ServerResponse) => this.requestEntry(req, res, true));
    this.server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      try { this.connects.onConnect(req, socket, head); } catch (e) { this.fault('connect', e); socket.destroy(); }
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      this.onUpgrade(req, socket, head).catch((e: unknown) => { this.fault('websocket', e); socket.destroy(); });
    });
    // No WebSocket to an inspected host (no byte unverified): an upgrade inside interception is refused.
    this.intercepted.on('upgrade', (_req: IncomingMessage, socket: Duplex) => socket.destroy());
    this.intercepted.on('clientError', (_err: Error, socket: Duplex) => socket.destroy());
    // The server never listens (sockets are handed to it), but its header and request timeouts
    // must run as on a listening one (slowloris inside intercepted TLS): Node starts the checks
    // on 'listening'.
    this.intercepted.emit('listening');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.o.listen.host, port: this.o.listen.port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as { port: number }).port;
  }

  private fault(where: FaultSite, err: unknown): void {
    reportFault(this.o.observer, where, err);
  }

  /** Graceful stop: no new connections; in-flight holds get `graceMs` to finish, then are blocked. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    this.server.close(); // no new connections; idle keep-alive ones close
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.cache.clear();
    this.connects.stop();
    this.intercepted.close(); // stops its timeout checks (it never listened)
    await new Promise((r) => setTimeout(r, 100)); // let block pages flush
    this.server.closeAllConnections();
    this.intercepted.closeAllConnections();
    this.upstream.destroy();
    await this.digests?.close();
    removeSpoolDir(this.spoolDir);
  }

  // ---- requests ----

  private requestEntry(req: IncomingMessage, res: ServerResponse, tls: boolean): void {
    // A client that goes away mid-request is not an error of the gate's.
    req.on('error', ignore);
    res.on('error', ignore);
    try { this.onRequest(req, res, tls); } catch (e) { this.fault('request', e); endAfterFault(res); }
  }

  private onRequest(req: IncomingMessage, res: ServerResponse, tls: boolean): void {
    // Plain HTTP inside a CONNECT tunnel names its target in Host, like a request to the origin itself.
    const mark = this.connects.markOf(req.socket);
    const client = req.socket.remoteAddress ?? '?';
    // Inside a CONNECT the client was admitted with the CONNECT.
    if (!mark && !this.access.clientAllowed(client)) {
      return this.denyRequest(req, res, client, req.url || '(none)', '', { status: 403, why: `client ${client} is not in the rules' clients (or --allow-client)` });
    }
    const t = readRequestTarget(req.url ?? '', req.headers.host, { tls, connect: mark, isGate: (h, p) => this.isGate(h, p) });
    switch (t.kind) {
      case 'self':
        return answerGateRequest(req, res, t.path, { listen: this.address, hostRules: this.o.hostRules, upstreamProxy: this.o.upstreamProxy });
      case 'bad-target':
        return this.refuseTarget(req, res, t.path, t.host, t.why);
      case 'bad-host':
        req.resume();
        return refuse(res, 400, t.why);
      case 'outside-connect':
        return this.denyRequest(req, res, client, t.url, t.host, { status: 400, why: t.why });
    }
    this.admitRequest(req, res, client, t, !!mark).catch((e: Error) => {
      // A bug reachable from one request: that request fails (500, audited), the gate carries on.
      this.fault('request', e);
      if (!res.headersSent) this.denyRequest(req, res, client, t.url, t.host, { status: 500, why: `internal error: ${e.message}` }, 'INTERNAL_ERROR');
    });
  }

  /** Is host:port this gate (a request for itself, never proxied back to it)? */
  private isGate(host: string, port: number): boolean {
    return port === this.port && ['127.0.0.1', 'localhost', '::1', this.o.listen.host, '0.0.0.0'].includes(canonicalHost(host));
  }

  /** Destination checks for a request, then a pass-through or a hold. */
  private async admitRequest(req: IncomingMessage, res: ServerResponse, client: string, t: OriginTarget, viaConnect: boolean): Promise<void> {
    // Inside a CONNECT the port was checked with the CONNECT; the addresses are checked again (they may have changed).
    const admitted = await this.destinations.admit(t.host, t.port, viaConnect ? 'tunnelled' : 'http');
    if (res.destroyed || res.headersSent) return;
    if ('status' in admitted) return this.denyRequest(req, res, client, t.url, t.host, admitted);
    if (admitted.unresolved) return this.denyRequest(req, res, client, t.url, t.host, { status: 502, why: admitted.unresolved }, 'UPSTREAM_ERROR');
    let decision = this.o.hostRules.decide(t.host, t.path);
    // inspectAddresses: a host no inspect rule names, whose address is an inspected host's, is inspected too.
    // (An inspect rule whose paths did not match keeps its host passed; a pinned host stays pinned.)
    if (decision.mode === 'pass' && this.o.hostRules.decideConnect(t.host).mode === 'pass'
      && await this.destinations.isInspectedAlias(admitted.addresses)) decision = { mode: 'inspect' };
    if (res.destroyed) return;
    const target: UpstreamTarget = { tls: t.scheme === 'https', host: t.host, port: t.port, path: t.path, url: t.url, addresses: admitted.addresses };
    if (decision.mode !== 'inspect') {
      this.o.audit.debug({ client, method: req.method, url: t.url }, 'pass');
      return this.upstream.forward(req, res, target, (e) => this.fault('response', e));
    }
    this.hold(req, res, target, decision.rule?.hold ?? 'whole');
  }

  /**
   * A WebSocket (or other) upgrade: none to an inspected host (no byte unverified), and the same
   * client and destination checks as any request; admitted, the bytes are relayed untouched.
   */
  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const refuseUpgrade = (status: number) => {
      if (!socket.destroyed) socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`, () => socket.destroy());
    };
    const mark = this.connects.markOf(req.socket);
    if (!mark && !this.access.clientAllowed(req.socket.remoteAddress)) return refuseUpgrade(403);
    // ws:// in absolute-form is http:// to the origin (the handshake is HTTP).
    const raw = (req.url ?? '').replace(/^ws:\/\//, 'http://');
    const t = readRequestTarget(raw, req.headers.host, { tls: false, connect: mark, isGate: (h, p) => this.isGate(h, p) });
    if (t.kind !== 'origin') return refuseUpgrade(400);
    if (this.stopping || this.o.hostRules.decide(t.host, t.path).mode !== 'pass') return refuseUpgrade(403);
    const admitted = await this.destinations.admit(t.host, t.port, mark ? 'tunnelled' : 'http');
    if (socket.destroyed) return;
    if ('status' in admitted) return refuseUpgrade(admitted.status);
    if (admitted.unresolved) return refuseUpgrade(502);
    if (await this.destinations.isInspectedAlias(admitted.addresses)) return refuseUpgrade(403);
    const target: UpstreamTarget = { tls: false, host: t.host, port: t.port, path: t.path, url: t.url, addresses: admitted.addresses };
    this.upstream.upgrade(req, socket, head, target, (client, server) => {
      try { this.connects.splice(client, server); } catch (e) { this.fault('websocket', e); client.destroy(); server.destroy(); }
    });
  }

  private denyRequest(req: IncomingMessage, res: ServerResponse, client: string, url: string, host: string, d: { status: number; why: string }, code: 'ACCESS_DENIED' | 'UPSTREAM_ERROR' | 'INTERNAL_ERROR' = 'ACCESS_DENIED'): void {
    req.resume();
    const id = newAuditId();
    this.o.audit.record({
      id, kind: 'transfer', client, method: (req.method ?? 'GET').toUpperCase(), url, host, inspected: false, served: 'blocked', status: d.status,
      verdict: 'block', reasons: [gateReason(code, d.why)], rulesSha256: this.o.rulesSha256, durations: {},
    });
    if (!res.headersSent) res.setHeader('x-patchgate-audit-id', id);
    refuse(res, d.status, d.why);
  }

  /** A request target that is neither origin-form nor http:// absolute-form: 400 and an audit line. */
  private refuseTarget(req: IncomingMessage, res: ServerResponse, path: string, host: string, why: string): void {
    req.resume();
    this.o.audit.record({
      id: newAuditId(), kind: 'transfer', client: req.socket.remoteAddress ?? '?', method: req.method || '?', url: path || '(empty)',
      host, inspected: false, served: 'blocked', status: 400, verdict: 'block',
      reasons: [gateReason('BAD_REQUEST', why)], rulesSha256: this.o.rulesSha256, durations: {},
    });
    refuse(res, 400, `bad request target: ${why}`);
  }

  private hold(req: IncomingMessage, res: ServerResponse, target: UpstreamTarget, holdMode: HoldMode): void {
    if (this.stopping) return refuse(res, 503, 'shutting down');

    const method = (req.method ?? 'GET').toUpperCase();
    const url = target.url;
    const waiter: Waiter = {
      id: newAuditId(), req, res, method, range: typeof req.headers.range === 'string' ? req.headers.range : undefined,
      client: req.socket.remoteAddress ?? '?', url, host: target.host, since: Date.now(), shared: false,
    };
    // Only GET (and HEAD for an entity already verified) shares; other methods get their own fetch.
    // A request with credentials shares only with requests carrying the same ones (RFC 9111 §3.5:
    // and only if the response allows it, decided when it arrives).
    const auth = req.headers.authorization;
    const credentials = auth !== undefined;
    const identity = credentials ? `#auth:${createHash('sha256').update(String(auth)).digest('hex').slice(0, 32)}` : '';
    const key = method === 'GET' || method === 'HEAD' ? `${url}${identity}` : `${url}#${waiter.id}`;
    const existing = this.cache.joinable(key);
    if (existing && (method === 'GET' || existing.settled)) {
      waiter.shared = true;
      // If the response turns out not to be shareable (private, no-store, Vary, credentials), this client fetches its own.
      waiter.refetch = () => this.fetchFor(target, waiter, `${url}#${waiter.id}`, method, credentials, false, holdMode);
      req.resume();
      existing.attach(waiter);
      return; // served from the shared download; nothing goes upstream for this client
    }
    this.fetchFor(target, waiter, key, method, credentials, method === 'GET', holdMode);
  }

  /** Starts the upstream fetch for `waiter` (the whole entity, held), as a shared download when `shared`. */
  private fetchFor(target: UpstreamTarget, waiter: Waiter, key: string, method: string, credentials: boolean, shared: boolean, holdMode: HoldMode): void {
    waiter.shared = false;
    waiter.refetch = undefined;
    const headers = forwardedRequestHeaders(waiter.req.headers);
    // The whole entity is fetched without Range or conditionals, and decoded here whatever the encoding.
    for (const h of ['range', 'if-range', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since']) delete headers[h];
    headers['accept-encoding'] = method === 'HEAD' ? 'identity' : 'gzip, deflate, br';
    const held = new HeldDownload(key, this.holdSettings(), this.cache.settled);
    held.credentials = credentials;
    held.holdMode = holdMode;
    held.owner = waiter.client;
    // One copy per upstream entity whatever the query string, where the origin's ETag says it is the same.
    if (shared) {
      const u = new URL(waiter.url);
      held.entityBase = `${u.origin}${u.pathname}${key.slice(waiter.url.length)}`;
    }
    this.cache.track(held, shared);
    held.attach(waiter);
    const out = this.upstream.request(target, waiter.req.method ?? method, headers);
    held.onCancel(() => out.destroy());
    out.on('response', (r: IncomingMessage) => {
      r.on('error', (e: Error) => held.fail(gateReason('UPSTREAM_ERROR', `upstream: ${e.message}`)));
      try {
        held.takeUpstream(r);
      } catch (e) {
        this.fault('response', e);
        held.fail(gateReason('INTERNAL_ERROR', `internal error: ${e instanceof Error ? e.message : String(e)}`));
        r.destroy();
      }
    });
    out.on('error', (e: Error) => held.fail(gateReason('UPSTREAM_ERROR', `upstream: ${e.message}`)));
    // A client that joined and then fetches its own has had its (empty) body read already.
    if (waiter.req.readableEnded) out.end();
    else waiter.req.pipe(out);
  }

  private holdSettings(): HoldSettings {
    const l = this.o.limits;
    return {
      cacheTtlMs: l.cacheTtlMs, disk: this.disk, sameEntity: this.cache.sameEntity, verifier: this.verifier, trustFor: this.o.trustFor, spoolDir: this.spoolDir, memoryHoldBytes: l.memoryHoldBytes, memory: this.memory, maxPayloadBytes: l.maxPayloadBytes,
      idleTimeoutMs: l.idleTimeoutMs, totalTimeoutMs: l.totalTimeoutMs, nonPayload: this.o.nonPayload, unsignedDeltas: this.o.unsignedDeltas, unverifiable: this.o.unverifiable,
      rulesSha256: this.o.rulesSha256, audit: (r) => this.o.audit.record(r), auditOnError: this.o.auditOnError, now: this.o.now, observer: this.o.observer, digests: this.digests,
      redirectAllowed: (u) => (u.protocol === 'http:' || u.protocol === 'https:') && this.o.hostRules.decide(canonicalHost(u.hostname), u.pathname).mode === 'inspect',
    };
  }
}
