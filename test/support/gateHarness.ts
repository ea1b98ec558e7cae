/**
 * End-to-end harness for the gate: origin servers (plain HTTP and HTTPS with a self-signed
 * certificate, on 127.0.0.1) whose routes can misbehave on purpose, an in-process UpdateGate with
 * its own temp folders and audit file, and proxy clients that talk to it over real sockets:
 * absolute-form HTTP requests and CONNECT + TLS.
 *
 * Nothing leaves loopback. Every temp folder is made here and removed by `dispose()`/`close()`.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import tls, { type PeerCertificate, type TLSSocket } from 'node:tls';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UpdateGate, type GateLimits, type GateOptions } from '../../src/proxy/updateGate.js';
import { HostRules } from '../../src/policy/hostRules.js';
import type { HostRule } from '../../src/policy/rulesFile.js';
import { defaultAccessRules, type AccessRules } from '../../src/policy/accessPolicy.js';
import { AuditLog } from '../../src/audit/auditLog.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';
import type { GateObserver } from '../../src/metrics/gateObserver.js';
import { issueCertificate } from '../../src/pki/certificateFactory.js';
import { createSyntheticSignedPe, type SyntheticSignedPe } from '../../src/lab/syntheticPe.js';
import { labPolicy, pki } from './fixtures.js';
import type { ApprovedCaPolicy } from '../../src/verify/approvedCaPolicy.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns the last result. */
export async function waitFor<T>(cond: () => T | Promise<T>, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  let last = await cond();
  while (!last && Date.now() < deadline) {
    await sleep(20);
    last = await cond();
  }
  return last;
}

/** Every regular file below `dir` (recursively), as paths relative to it. */
export function filesBelow(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), r);
      else out.push(r);
    }
  };
  walk(dir, '');
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// Quiet console: a dependency that prints on its own stays out of the test output.

let saved: { error: typeof console.error; debug: typeof console.debug; info: typeof console.info; log: typeof console.log } | undefined;
export function quietConsole(): () => void {
  if (!saved) saved = { error: console.error, debug: console.debug, info: console.info, log: console.log };
  const s = saved;
  console.error = () => {};
  console.debug = () => {};
  console.info = () => {};
  return () => {
    console.error = s.error;
    console.debug = s.debug;
    console.info = s.info;
  };
}

// ---------------------------------------------------------------------------------------------
// Payloads

/** The lab publisher (chains to the pinned Update CA of labPolicy()). */
export function labSigner() {
  const der = (name: string) => new Uint8Array(new X509Certificate(readFileSync(pki(name))).raw);
  return {
    signerCertDer: der('publisher'),
    signerKey: createPrivateKey(readFileSync(pki('publisher').replace(/\.pem$/, '.key'))),
    extraCertsDer: [der('updateca')],
    digest: 'sha256' as const,
  };
}

/** A signed PE32+ of about `size` bytes, allowed by labPolicy(); bytes generated on demand. */
export function syntheticPe(size: number, seed = 1, corruptByteAt?: number): SyntheticSignedPe {
  return createSyntheticSignedPe({ size, signer: labSigner(), seed, corruptByteAt });
}

/** The whole synthetic PE in memory (only for small sizes). */
export function syntheticBytes(pe: SyntheticSignedPe): Buffer {
  return Buffer.concat([...pe.chunks()].map((c) => Buffer.from(c)));
}

// ---------------------------------------------------------------------------------------------
// Origins

export interface OriginCert {
  keyPem: string;
  certPem: string;
  /** SHA-256 fingerprint as node prints it (AA:BB:...). */
  fingerprint256: string;
}

/** A self-signed serverAuth certificate for localhost and 127.0.0.1 (the origin's own). */
export function makeOriginCert(): OriginCert {
  const c = issueCertificate({
    subject: { O: 'patchgate test origin', CN: 'localhost' },
    key: { type: 'ec', namedCurve: 'P-256' },
    extensions: {
      basicConstraints: { cA: false },
      keyUsage: { usages: ['digitalSignature'] },
      extendedKeyUsage: { purposes: ['serverAuth'] },
      subjectAltName: { dns: ['localhost'], ip: ['127.0.0.1'] },
    },
  });
  return { keyPem: c.keyPem, certPem: c.pem, fingerprint256: new X509Certificate(c.pem).fingerprint256 };
}

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface Origin {
  readonly port: number;
  readonly scheme: 'http' | 'https';
  readonly cert: OriginCert | undefined;
  /** `${scheme}://${host}:${port}${path}` (host 127.0.0.1 unless given). */
  url(path: string, host?: string): string;
  route(path: string, handler: RouteHandler): void;
  /** Handles HTTP Upgrade requests for a path (default: the socket is destroyed). */
  onUpgrade(path: string, handler: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): void;
  /** Upgrade requests received, by path. */
  upgrades(path: string): number;
  /** How many requests reached a path (query ignored), by method. */
  hits(path: string, method?: string): number;
  /** Requests as received: method, path, headers. */
  readonly log: { method: string; path: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/** `listenHost`: where the origin listens (127.0.0.1 unless said; `::1` for IPv6 targets). */
export async function startOrigin(opts: { tls?: OriginCert; listenHost?: string } = {}): Promise<Origin> {
  const routes = new Map<string, RouteHandler>();
  const upgradeRoutes = new Map<string, (req: IncomingMessage, socket: Duplex, head: Buffer) => void>();
  const upgradeLog: string[] = [];
  const log: Origin['log'] = [];
  const sockets = new Set<Socket>();
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    log.push({ method: req.method ?? 'GET', path, headers: req.headers });
    const h = routes.get(path);
    if (!h) {
      res.writeHead(404, { 'content-type': 'text/plain', 'content-length': 10 });
      res.end('not found\n');
      return;
    }
    Promise.resolve(h(req, res)).catch(() => res.destroy());
  };
  const server: http.Server = opts.tls
    ? https.createServer({ key: opts.tls.keyPem, cert: opts.tls.certPem }, handler)
    : http.createServer(handler);
  server.keepAliveTimeout = 500;
  server.on(opts.tls ? 'secureConnection' : 'connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_e, s) => s.destroy());
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0]!;
    upgradeLog.push(path);
    const h = upgradeRoutes.get(path);
    if (h) h(req, socket, head);
    else socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, opts.listenHost ?? '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const scheme = opts.tls ? 'https' : 'http';
  return {
    port,
    scheme,
    cert: opts.tls,
    url: (path, host = '127.0.0.1') => `${scheme}://${host}:${port}${path}`,
    route: (path, h) => void routes.set(path, h),
    onUpgrade: (path, h) => void upgradeRoutes.set(path, h),
    upgrades: (path) => upgradeLog.filter((p) => p === path).length,
    hits: (path, method) => log.filter((l) => l.path === path && (!method || l.method === method)).length,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections?.();
        server.close(() => resolve());
        setTimeout(resolve, 500).unref();
      }),
  };
}

/** What a route did with its connection: for "the gate cut the upstream early" assertions. */
export interface SendTrace {
  written: number;
  /** Date.now() after the latest write. */
  lastWriteAt: number;
  /** The response's connection closed before everything was written. */
  closedEarly: boolean;
  finished: boolean;
  closed: Promise<void>;
}

export interface SendOptions {
  status?: number;
  headers?: Record<string, string | number | string[]>;
  /** Bytes per write (default everything at once). */
  chunk?: number;
  /** Pause between writes. */
  delayMs?: number;
  /** Content-Length to declare (default the body's length; `null` for chunked). */
  contentLength?: number | null;
  /** Stop after this many bytes: `'hang'` keeps the connection open, `'destroy'` cuts it. */
  stopAfter?: { bytes: number; then: 'hang' | 'destroy' };
  trace?: (t: SendTrace) => void;
}

/**
 * A route that sends `body` (a buffer or chunk iterable), paced and truncated as asked, with
 * backpressure. HEAD gets the headers only.
 */
export function send(body: Buffer | (() => Iterable<Uint8Array>), o: SendOptions = {}): RouteHandler {
  return async (req, res) => {
    const total = Buffer.isBuffer(body) ? body.byteLength : undefined;
    const headers: Record<string, string | number | string[]> = { 'content-type': 'application/octet-stream', ...o.headers };
    const cl = o.contentLength === undefined ? total : o.contentLength;
    if (cl !== null && cl !== undefined) headers['content-length'] = cl;
    let resolveClosed!: () => void;
    const trace: SendTrace = { written: 0, lastWriteAt: 0, closedEarly: false, finished: false, closed: new Promise((r) => (resolveClosed = r)) };
    res.on('close', () => {
      if (!trace.finished) trace.closedEarly = true;
      resolveClosed();
    });
    o.trace?.(trace);
    res.writeHead(o.status ?? 200, headers);
    if (req.method === 'HEAD') {
      trace.finished = true;
      res.end();
      return;
    }
    res.flushHeaders();
    const chunks: Iterable<Uint8Array> = Buffer.isBuffer(body) ? splitBuffer(body, o.chunk ?? body.byteLength) : body();
    let first = true;
    for (const whole of chunks) {
      for (const c of o.chunk && !Buffer.isBuffer(body) ? splitBuffer(Buffer.from(whole.buffer, whole.byteOffset, whole.byteLength), o.chunk) : [whole]) {
        if (res.destroyed) return;
        // Pace between writes (not after the last one: the receiver may act on the last byte at once).
        if (!first && o.delayMs) await sleep(o.delayMs);
        first = false;
        if (res.destroyed) return;
        let piece = c;
        if (o.stopAfter && trace.written + piece.byteLength >= o.stopAfter.bytes) {
          piece = piece.subarray(0, o.stopAfter.bytes - trace.written);
          if (piece.byteLength) res.write(piece);
          trace.written += piece.byteLength;
          trace.lastWriteAt = Date.now();
          if (o.stopAfter.then === 'destroy') {
            await sleep(50);
            res.socket?.destroy();
          }
          return; // 'hang': leave it open; the gate must give up on its own
        }
        const ok = res.write(piece);
        trace.written += piece.byteLength;
        trace.lastWriteAt = Date.now();
        if (!ok) {
          await new Promise<void>((r) => {
            const done = () => { res.off('drain', done); res.off('close', done); r(); };
            res.on('drain', done);
            res.on('close', done);
          });
        }
      }
    }
    if (res.destroyed) return;
    trace.finished = true;
    res.end();
  };
}

function* splitBuffer(b: Buffer, n: number): Generator<Buffer> {
  if (b.byteLength === 0) return;
  for (let i = 0; i < b.byteLength; i += n) yield b.subarray(i, Math.min(b.byteLength, i + n));
}

// ---------------------------------------------------------------------------------------------
// The gate

export interface GateHandle {
  gate: UpdateGate;
  port: number;
  base: string;
  caDir: string;
  spoolBase: string;
  auditFile: string;
  audit: AuditLog;
  caPem: string;
  /** The spool folder the gate made under spoolBase (undefined once removed). */
  spoolDir(): string | undefined;
  /** Audit records written so far (flushes first). */
  records(): AuditRecord[];
  /** Waits until records matching `pred` number at least `n`. */
  waitRecords(pred: (r: AuditRecord) => boolean, n?: number, ms?: number): Promise<AuditRecord[]>;
  stop(graceMs?: number): Promise<void>;
  dispose(): Promise<void>;
}

export const DEFAULT_LIMITS: GateLimits = {
  maxPayloadBytes: 64 * 1024 * 1024,
  idleTimeoutMs: 2000,
  totalTimeoutMs: 30_000,
  memoryHoldBytes: 256 * 1024,
  cacheTtlMs: 2000,
};

export interface StartGateOptions {
  hosts: HostRule[];
  limits?: Partial<GateLimits>;
  nonPayload?: 'pass' | 'block';
  unsignedDeltas?: 'pass' | 'block';
  upstreamProxy?: URL;
  /**
   * PEM the gate's upstream TLS should trust besides the system store. It is written to a file and
   * passed as `upstreamCaFile`; should the gate's upstream https.Agent not carry it, that agent is
   * replaced after start by one that trusts it.
   */
  upstreamCaPem?: string;
  /** Metrics hooks for the gate (a GateMetrics). */
  observer?: GateObserver;
  /** audit.onError (default block). */
  auditOnError?: 'block' | 'serve';
  /** Known-unverifiable kinds by path (rules: unverifiable). */
  unverifiable?: GateOptions['unverifiable'];
  /** Access rules over defaultAccessRules(). */
  access?: Partial<AccessRules>;
  /** The gate's other endpoints (as the admin address is for `patchgate run`). */
  ownEndpoints?: { host: string; port: number }[];
  /** The gate's policy (default: the lab fixtures' labPolicy()). */
  policy?: ApprovedCaPolicy;
  /** Per-channel trust, as `patchgate run` wires it from the rules' channels. */
  trustFor?: GateOptions['trustFor'];
}

export async function startGate(o: StartGateOptions): Promise<GateHandle> {
  const base = mkdtempSync(join(tmpdir(), 'patchgate-e2e-'));
  const caDir = join(base, 'ca');
  const spoolBase = join(base, 'spool');
  const auditFile = join(base, 'audit.jsonl');
  const audit = new AuditLog(auditFile);
  let upstreamCaFile: string | undefined;
  if (o.upstreamCaPem) {
    mkdirSync(base, { recursive: true });
    upstreamCaFile = join(base, 'upstream-ca.pem');
    writeFileSync(upstreamCaFile, o.upstreamCaPem);
  }
  const opts: GateOptions & { upstreamCaFile?: string } = {
    listen: { host: '127.0.0.1', port: 0 },
    policy: o.policy ?? labPolicy(),
    trustFor: o.trustFor,
    // Test origins listen on random ports: a host the test names is reachable on any port, as with `--update-host HOST`.
    hostRules: new HostRules(o.hosts.map((h) => ({ ports: 'any' as const, ...h }))),
    access: { ...defaultAccessRules(), ...o.access },
    ownEndpoints: o.ownEndpoints,
    rulesSha256: 'test',
    audit,
    caDir,
    limits: { ...DEFAULT_LIMITS, ...o.limits },
    nonPayload: o.nonPayload ?? 'pass',
    unsignedDeltas: o.unsignedDeltas ?? 'block',
    unverifiable: o.unverifiable,
    auditOnError: o.auditOnError,
    spoolBase,
    upstreamProxy: o.upstreamProxy,
    observer: o.observer,
    ...(upstreamCaFile ? { upstreamCaFile } : {}),
  };
  const gate = new UpdateGate(opts);
  await gate.start();
  let upstreamAgent: https.Agent | undefined;
  const lib = gate as unknown as { upstream: { httpsAgent?: https.Agent } };
  if (o.upstreamCaPem && !lib.upstream.httpsAgent?.options.ca) {
    upstreamAgent = new https.Agent({ keepAlive: true, ca: [...tls.rootCertificates, o.upstreamCaPem] });
    lib.upstream.httpsAgent = upstreamAgent;
  }
  let stopped = false;
  const readRecords = (): AuditRecord[] => {
    audit.flush();
    if (!existsSync(auditFile)) return [];
    return readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as AuditRecord & { msg: string });
  };
  const handle: GateHandle = {
    gate,
    port: gate.address.port,
    base,
    caDir,
    spoolBase,
    auditFile,
    audit,
    caPem: readFileSync(join(caDir, 'ca.pem'), 'utf8'),
    spoolDir: () => {
      if (!existsSync(spoolBase)) return undefined;
      const d = readdirSync(spoolBase).find((n) => n.startsWith('patchgate-spool-'));
      return d ? join(spoolBase, d) : undefined;
    },
    records: readRecords,
    async waitRecords(pred, n = 1, ms = 3000) {
      return waitFor(() => {
        const r = readRecords().filter(pred);
        return r.length >= n ? r : undefined;
      }, ms).then((r) => r ?? readRecords().filter(pred));
    },
    /** UpdateGate.stop() and nothing else (so that tests see what it does by itself). */
    async stop(graceMs) {
      if (stopped) return;
      stopped = true;
      await gate.stop(graceMs);
    },
    async dispose() {
      await handle.stop(0);
      // Test hygiene only: the gate's upstream agents (and ours) keep upstream sockets open.
      upstreamAgent?.destroy();
      const p = gate as unknown as { upstream: { httpAgent?: http.Agent; httpsAgent?: https.Agent } };
      p.upstream.httpAgent?.destroy();
      p.upstream.httpsAgent?.destroy();
      await audit.close();
      rmSync(base, { recursive: true, force: true });
    },
  };
  return handle;
}

// ---------------------------------------------------------------------------------------------
// Clients

export interface ProxyResponse {
  status: number;
  statusMessage: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Every byte the client's socket received (status line and headers included). */
  raw: Buffer;
  /** The response ended normally (false: the connection was cut). */
  complete: boolean;
  error?: Error;
  /** Date.now() when the response head arrived (undefined: it never did). */
  headersAt?: number;
  doneAt: number;
  peerCertificate?: PeerCertificate;
}

export interface ClientOptions {
  method?: string;
  headers?: Record<string, string>;
  /** Give up (destroy) after this long; default 15 s. */
  timeoutMs?: number;
  /** Destroy the connection once this many body bytes arrived. */
  abortAfterBodyBytes?: number;
  /** Called with the request once it is sent, e.g. to destroy it from outside. */
  onRequest?: (req: http.ClientRequest) => void;
}

function collect(req: http.ClientRequest, o: ClientOptions, extra: () => Partial<ProxyResponse> = () => ({})): Promise<ProxyResponse> {
  return new Promise((resolve) => {
    const raw: Buffer[] = [];
    const body: Buffer[] = [];
    let res: IncomingMessage | undefined;
    let headersAt: number | undefined;
    let done = false;
    let received = 0;
    const finish = (complete: boolean, error?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({
        status: res?.statusCode ?? 0,
        statusMessage: res?.statusMessage ?? '',
        headers: res?.headers ?? {},
        body: Buffer.concat(body),
        raw: Buffer.concat(raw),
        complete,
        error,
        headersAt,
        doneAt: Date.now(),
        ...extra(),
      });
    };
    const timer = setTimeout(() => { req.destroy(new Error('client timeout')); finish(false, new Error('client timeout')); }, o.timeoutMs ?? 15_000);
    req.on('socket', (s) => s.on('data', (d: Buffer) => raw.push(Buffer.from(d))));
    req.on('response', (r) => {
      res = r;
      headersAt = Date.now();
      r.on('data', (d: Buffer) => {
        body.push(d);
        received += d.byteLength;
        if (o.abortAfterBodyBytes !== undefined && received >= o.abortAfterBodyBytes) {
          req.destroy();
          finish(false, new Error('aborted by the client'));
        }
      });
      r.on('end', () => finish(true));
      r.on('error', (e) => finish(false, e));
      r.on('close', () => finish(r.complete));
    });
    req.on('error', (e) => finish(false, e));
    req.on('close', () => setImmediate(() => { if (!res) finish(false, new Error('closed without a response')); }));
    o.onRequest?.(req);
  });
}

/** An absolute-form request through the gate (plain HTTP proxying). */
export function proxyRequest(proxyPort: number, url: string, o: ClientOptions = {}): Promise<ProxyResponse> {
  const u = new URL(url);
  const req = http.request({
    host: '127.0.0.1',
    port: proxyPort,
    method: o.method ?? 'GET',
    path: u.href,
    headers: { host: u.host, ...o.headers },
    agent: false,
  });
  const p = collect(req, o);
  req.end();
  return p;
}

/** A request straight to the gate (origin-form), e.g. for the PAC file. */
export function directRequest(proxyPort: number, path: string, o: ClientOptions & { host?: string } = {}): Promise<ProxyResponse> {
  const req = http.request({
    host: '127.0.0.1',
    port: proxyPort,
    method: o.method ?? 'GET',
    path,
    headers: { host: o.host ?? `127.0.0.1:${proxyPort}`, ...o.headers },
    agent: false,
  });
  const p = collect(req, o);
  req.end();
  return p;
}

/**
 * Sends raw bytes to the gate and returns everything it answers until it closes (`closed`) or `ms`
 * passed, and the (destroyed) socket.
 */
export function rawExchange(proxyPort: number, bytes: string | Buffer, ms = 3000): Promise<{ data: Buffer; closed: boolean; socket: Socket }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: proxyPort });
    const data: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve({ data: Buffer.concat(data), closed, socket: s });
    };
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => data.push(d));
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    setTimeout(() => finish(false), ms).unref();
  });
}

/** CONNECT through the gate; resolves with the proxy's answer and, on 200, the tunnel socket. */
export function connectThrough(proxyPort: number, target: string): Promise<{ status: number; socket?: Socket; head?: Buffer; raw?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, method: 'CONNECT', path: target, headers: { host: target }, agent: false });
    req.on('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return resolve({ status: res.statusCode ?? 0 });
      }
      resolve({ status: 200, socket, head });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * An HTTPS request through the gate: CONNECT host:port, TLS over the tunnel (trusting `ca`, checking
 * the name), then the request inside. `peerCertificate` is what the client saw.
 */
export async function httpsThroughProxy(proxyPort: number, url: string, o: ClientOptions & { ca: string | string[] }): Promise<ProxyResponse> {
  const u = new URL(url);
  const c = await connectThrough(proxyPort, `${u.hostname}:${u.port || 443}`);
  if (c.status !== 200 || !c.socket) {
    return { status: c.status, statusMessage: 'CONNECT refused', headers: {}, body: Buffer.alloc(0), raw: Buffer.alloc(0), complete: false, doneAt: Date.now() };
  }
  const isIp = net.isIP(u.hostname) !== 0;
  const tlsSocket: TLSSocket = await new Promise((resolve, reject) => {
    const t = tls.connect({ socket: c.socket!, ca: o.ca, host: u.hostname, servername: isIp ? undefined : u.hostname });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
  const peer = tlsSocket.getPeerCertificate(true);
  const req = http.request({
    method: o.method ?? 'GET',
    path: u.pathname + u.search,
    headers: { host: u.host, ...o.headers },
    createConnection: () => tlsSocket,
  });
  const p = collect(req, o, () => ({ peerCertificate: peer }));
  req.end();
  const r = await p;
  tlsSocket.destroy();
  return r;
}

export const isFile = (p: string) => existsSync(p) && statSync(p).isFile();

// ---------------------------------------------------------------------------------------------
// WebSocket, by hand (RFC 6455): enough to show what crosses an upgraded connection.

/** An origin upgrade handler: accepts the WebSocket handshake and sends `payload` as one binary frame. */
export function acceptWebSocketAndSend(payload: Buffer) {
  return (req: IncomingMessage, socket: Duplex) => {
    const key = String(req.headers['sec-websocket-key'] ?? '');
    const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const len = payload.byteLength;
    const header = len < 126 ? Buffer.from([0x82, len]) : len < 65536 ? Buffer.from([0x82, 126, len >> 8, len & 0xff]) : (() => { const b = Buffer.alloc(10); b[0] = 0x82; b[1] = 127; b.writeBigUInt64BE(BigInt(len), 2); return b; })();
    socket.write(Buffer.concat([header, payload]));
    socket.on('error', () => {});
  };
}

/** A WebSocket upgrade request through the gate (absolute-form); returns every byte received within `ms`. */
export function webSocketThroughProxy(proxyPort: number, url: string, ms = 800): Promise<{ status: number; data: Buffer }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let done = false;
    const finish = () => { if (!done) { done = true; resolve({ status, data: Buffer.concat(chunks) }); } };
    const req = http.request({
      host: '127.0.0.1', port: proxyPort, path: u.href, agent: false,
      headers: { host: u.host, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('upgrade', (res, socket, head) => {
      status = res.statusCode ?? 101;
      chunks.push(head);
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('error', () => {});
      socket.on('close', finish);
      setTimeout(() => { socket.destroy(); finish(); }, ms);
    });
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', finish);
      res.on('error', finish);
    });
    req.on('error', finish);
    setTimeout(() => { req.destroy(); finish(); }, ms + 2000);
    req.end();
  });
}
