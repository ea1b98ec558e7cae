import net, { type Socket } from 'node:net';
import type { UnverifiableRule } from '../policy/rulesFile.js';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { gateReason } from '../inspect/gateReason.js';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import { Verifier } from '../verify/verifier.js';
import type { HostRules } from '../policy/hostRules.js';
import type { TrustChannel } from '../policy/trustChannels.js';
import type { AuditLog } from '../audit/auditLog.js';
import type { GateObserver } from '../metrics/gateObserver.js';
import { DiskBudget, MEMORY_TOTAL_FACTOR, MemoryBudget, makeSpoolDir, removeSpoolDir } from '../inspect/spool.js';
import { DigestPool } from '../inspect/digestPool.js';
import { ChunkedBodyReader } from './chunkedBody.js';
import {
  IcapProtocolError, MAX_ICAP_HEAD_BYTES, icapResponseHead, parseEncapsulated, parseHttpHead, parseIcapHead, type IcapRequestHead,
} from './icapMessage.js';
import { RespmodTransaction, type RespmodContext, type TransactionIo } from './respmodTransaction.js';
import { AllowedPeers } from './allowedPeers.js';
import { reportFault, type IcapCloseReason } from '../metrics/gateObserver.js';

/** Default of IcapLimits.requestHeadTimeoutMs (as `patchgate run`'s). */
export const ICAP_HEAD_TIMEOUT_MS = 30_000;

export interface IcapLimits {
  maxPayloadBytes: number;
  /** No body byte from the ICAP client for this long: the held payload is blocked (TIMEOUT). */
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  memoryHoldBytes: number;
  /** What all held payloads may keep in memory together (default MEMORY_TOTAL_FACTOR × memoryHoldBytes); past it they spool to disk. */
  memoryTotalBytes?: number;
  /** What held payloads may keep on disk together (default SPOOL_FREE_FRACTION of the spool folder's free space), and one client's share. */
  maxSpoolBytes?: number;
  maxSpoolBytesPerClient?: number;
  /** A request head must be complete this long after its first byte, or the connection is closed (408). */
  requestHeadTimeoutMs?: number;
}

export interface IcapServiceOptions {
  listen: { host: string; port: number };
  policy: ApprovedCaPolicy;
  /** Per-channel trust (src/policy/trustChannels.ts); without it every request gets `policy`. */
  trustFor?: (host: string, path: string) => TrustChannel;
  hostRules: HostRules;
  rulesSha256: string;
  audit: AuditLog;
  limits: IcapLimits;
  nonPayload: 'pass' | 'block';
  unsignedDeltas: 'pass' | 'block';
  unverifiable?: UnverifiableRule[];
  /** A payload's audit record cannot be written: refuse it (`block`, default) or let it through. */
  auditOnError?: 'block' | 'serve';
  spoolBase?: string;
  /** Connections served at once; more are answered 503 (advertised as Max-Connections). */
  maxConnections?: number;
  /** Preview size asked for in OPTIONS: enough to sniff the format and to take small bodies whole. */
  previewBytes?: number;
  /** An idle persistent connection is closed after this long. */
  keepAliveMs?: number;
  /** ICAP clients allowed to connect (default: loopback only, DEFAULT_ALLOWED_PEERS); others are closed unanswered. */
  allowedPeers?: AllowedPeers;
  now?: () => Date;
  observer?: GateObserver;
  version?: string;
  /** Digest threads for large payloads (default: one per spare core, at most 4; 0: hash on the event loop). */
  digestThreads?: number;
}

/** The service's URI path: icap://HOST:PORT/respmod. */
export const ICAP_SERVICE_PATH = '/respmod';

/**
 * ISTag: changes whenever anything that decides a verdict changes (rules file, anchors, distrust
 * list, policy switches, inspected hosts), so that a proxy caching adapted responses drops them.
 */
export function istagFor(o: Pick<IcapServiceOptions, 'policy' | 'hostRules' | 'rulesSha256' | 'nonPayload' | 'unsignedDeltas' | 'unverifiable' | 'version'>): string {
  const p = o.policy;
  const material = JSON.stringify({
    v: o.version ?? '', rules: o.rulesSha256, anchors: p.anchors.map((a) => a.sha256).sort(), tsa: p.tsaAnchors.map((a) => a.sha256).sort(),
    distrust: [...p.distrust].sort(), sha1: p.allowSha1, eku: p.ekuMode, sig: p.signatureMode, rsa: p.minRsaBits, digests: p.fileDigests,
    limits: p.limits, inspect: o.hostRules.patterns('inspect'), pinned: o.hostRules.patterns('pinned'), np: o.nonPayload, d: o.unsignedDeltas, u: o.unverifiable,
  });
  return `"pg-${createHash('sha256').update(material).digest('hex').slice(0, 24)}"`;
}

/**
 * `patchgate icap`: an ICAP (RFC 3507) RESPMOD service, so that an existing proxy (Squid) hands
 * update responses to patchgate. Persistent connections, one transaction at a time on each (ICAP
 * has no pipelining), as many connections at once as Max-Connections: a slow payload on one
 * connection never holds up another. Verdicts come from the same PayloadInspection and core as
 * the proxy's; audit records are the proxy's, with the ICAP client's address.
 */
export class IcapService {
  private server: net.Server | undefined;
  private readonly connections = new Set<IcapConnection>();
  private spoolDir = '';
  private stopping = false;
  readonly istag: string;
  private ctx!: RespmodContext;
  private readonly memory: MemoryBudget;
  private digests: DigestPool | undefined;

  private readonly peers: AllowedPeers;

  constructor(private readonly o: IcapServiceOptions) {
    this.istag = istagFor(o);
    this.peers = o.allowedPeers ?? new AllowedPeers();
    this.memory = new MemoryBudget(o.limits.memoryTotalBytes ?? MEMORY_TOTAL_FACTOR * o.limits.memoryHoldBytes);
  }

  /** Bytes held payloads keep in memory together, and the most they may. */
  get spoolMemoryBytes(): number { return this.memory.usedBytes; }
  get spoolMemoryLimit(): number { return this.memory.limit; }

  get address(): { host: string; port: number } {
    const a = this.server?.address();
    return { host: this.o.listen.host, port: a && typeof a === 'object' ? a.port : 0 };
  }
  get maxConnections(): number { return this.o.maxConnections ?? 256; }
  get previewBytes(): number { return this.o.previewBytes ?? 4096; }
  /** Transactions holding a payload without a verdict yet (metrics, graceful stop). */
  get inFlight(): number {
    let n = 0;
    for (const c of this.connections) if (c.tx?.inFlight) n++;
    return n;
  }
  get spoolBytes(): number {
    let n = 0;
    for (const c of this.connections) n += c.tx?.spoolBytes ?? 0;
    return n;
  }
  get connectionCount(): number { return this.connections.size; }

  async start(): Promise<void> {
    this.spoolDir = makeSpoolDir(this.o.spoolBase ?? tmpdir());
    if (this.o.digestThreads !== 0) {
      this.digests = new DigestPool(this.o.digestThreads);
      await this.digests.ready();
    }
    const l = this.o.limits;
    this.ctx = {
      hostRules: this.o.hostRules, rulesSha256: this.o.rulesSha256, istag: this.istag,
      inspection: {
        verifier: new Verifier(this.o.policy), trustFor: this.o.trustFor, spoolDir: this.spoolDir, memoryHoldBytes: l.memoryHoldBytes, maxPayloadBytes: l.maxPayloadBytes,
        memory: this.memory, digests: this.digests, disk: DiskBudget.forSpool(this.spoolDir, l),
        nonPayload: this.o.nonPayload, unsignedDeltas: this.o.unsignedDeltas, unverifiable: this.o.unverifiable, now: this.o.now, observer: this.o.observer,
      },
      idleTimeoutMs: l.idleTimeoutMs, totalTimeoutMs: l.totalTimeoutMs,
      audit: (r) => this.o.audit.record(r), auditOnError: this.o.auditOnError,
      debug: (obj, msg) => this.o.audit.debug(obj, msg),
    };
    const server = net.createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.o.listen.host, port: this.o.listen.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /** Connections closed or refused for the service's own protection, by why (for metrics and tests). */
  readonly closedConnections: Record<IcapCloseReason, number> = { 'refused-peer': 0, busy: 0, 'head-timeout': 0, reclaimed: 0 };

  private accept(socket: Socket): void {
    try {
      this.acceptConnection(socket);
    } catch (e) {
      // One guard at the entry: nothing a peer sends or does while connecting ends the process.
      reportFault(this.o.observer, 'icap', e);
      socket.destroy();
    }
  }

  private acceptConnection(socket: Socket): void {
    socket.on('error', () => {});
    if (!this.peers.allows(socket.remoteAddress)) {
      this.closed('refused-peer');
      this.ctx.debug({ icapClient: socket.remoteAddress }, 'icap peer refused (not in --allow-peer)');
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    if (!this.stopping && this.connections.size >= this.maxConnections) this.reclaimSlot();
    if (this.stopping || this.connections.size >= this.maxConnections) {
      this.closed('busy');
      socket.end(icapResponseHead(503, [['ISTag', this.istag], ['Encapsulated', 'null-body=0'], ['Connection', 'close']]));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const c = new IcapConnection(socket, this, this.ctx, this.o.keepAliveMs ?? 120_000, this.o.limits.requestHeadTimeoutMs ?? ICAP_HEAD_TIMEOUT_MS);
    this.connections.add(c);
    socket.once('close', () => this.connections.delete(c));
  }

  /**
   * All slots taken: before refusing, free one that does no work. First the connection idle the
   * longest between transactions (Squid reopens a persistent connection it lost), else the one
   * whose request head has been coming the longest (a slowloris: Squid sends a head at once).
   */
  private reclaimSlot(): void {
    let victim: IcapConnection | undefined;
    for (const c of this.connections) {
      const a = c.reclaimRank;
      if (a === undefined) continue;
      const b = victim?.reclaimRank;
      if (b === undefined || a[0] < b[0] || (a[0] === b[0] && a[1] < b[1])) victim = c;
    }
    if (!victim) return;
    this.closed('reclaimed');
    victim.destroy();
    this.connections.delete(victim);
  }

  /** A connection closed because its head did not complete in time. */
  headTimedOut(): void { this.closed('head-timeout'); }

  private closed(why: IcapCloseReason): void {
    this.closedConnections[why]++;
    this.o.observer?.icapConnectionClosed?.(why);
  }

  /** The OPTIONS answer: what Squid configures itself from (and re-reads every Options-TTL seconds). */
  optionsResponse(): Buffer {
    return icapResponseHead(200, [
      ['Methods', 'RESPMOD'],
      ['Service', `patchgate/${this.o.version ?? '0'} update signature gate`],
      ['ISTag', this.istag],
      ['Encapsulated', 'null-body=0'],
      ['Max-Connections', String(this.maxConnections)],
      ['Options-TTL', '60'],
      ['Allow', '204'],
      // No Preview header at all when previews are off (--preview-bytes 0): the body comes at once.
      ...(this.previewBytes > 0 ? [['Preview', String(this.previewBytes)] as [string, string]] : []),
      // Every response is previewed: file names and extensions lie, so none is ignored by extension.
      ['Transfer-Preview', '*'],
      ['Date', new Date().toUTCString()],
    ]);
  }

  get isStopping(): boolean { return this.stopping; }

  /** Stops accepting; transactions holding a payload get `graceMs`, then are blocked; connections close. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    this.server?.close();
    const deadline = Date.now() + graceMs;
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const c of this.connections) c.shutdown();
    await new Promise((r) => setTimeout(r, 100)); // let block responses flush
    for (const c of this.connections) c.destroy();
    this.connections.clear();
    await this.digests?.close();
    if (this.spoolDir) removeSpoolDir(this.spoolDir);
  }
}

/** One ICAP connection: requests read one after another; bytes that arrive early wait in a bounded buffer. */
class IcapConnection {
  private buf: Buffer = Buffer.alloc(0);
  private state: 'head' | 'body' | 'busy' | 'closed' = 'head';
  private reader: ChunkedBodyReader | undefined;
  private paused = false;
  private pumping = false;
  private again = false;
  tx: RespmodTransaction | undefined;
  private readonly peer: string;

  /** Since when the connection waits for a request with no byte of it (undefined: not idle). */
  private idleSince: number | undefined = Date.now();
  /** When the first byte of the head being read arrived (undefined: no partial head). */
  private headSince: number | undefined;
  private headTimer: NodeJS.Timeout | undefined;

  constructor(private readonly socket: Socket, private readonly service: IcapService, private readonly ctx: RespmodContext, keepAliveMs: number, private readonly headTimeoutMs: number) {
    this.peer = socket.remoteAddress ?? '?';
    socket.setTimeout(keepAliveMs, () => {
      // Idle between transactions: close. Mid-transaction the transaction's own timers rule.
      if (this.state === 'head' && this.buf.length === 0) this.destroy();
    });
    socket.on('data', (d: Buffer) => {
      if (this.state === 'head' && this.buf.length === 0 && d.length) this.headStarted();
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      // A client that sends while we answer (or past what we may buffer) is paused, not buffered without end.
      if (this.state === 'busy' && this.buf.length > MAX_ICAP_HEAD_BYTES) this.pause();
      this.pump();
    });
    socket.on('error', () => { /* close follows */ });
    socket.on('close', () => {
      clearTimeout(this.headTimer);
      this.state = 'closed';
      try {
        this.tx?.abort(gateReason('UPSTREAM_ERROR', 'the ICAP client closed the connection before the response was complete'));
      } catch (e) {
        reportFault(this.ctx.inspection.observer, 'icap', e);
      }
      this.tx = undefined;
    });
  }

  /**
   * Which connection to close first when every slot is taken: idle ones (rank 0) before partial
   * heads (rank 1), the oldest first; undefined while a transaction runs (never reclaimed).
   */
  get reclaimRank(): [number, number] | undefined {
    if (this.state !== 'head' || this.tx) return undefined;
    if (this.buf.length === 0 && this.idleSince !== undefined) return [0, this.idleSince];
    if (this.headSince !== undefined) return [1, this.headSince];
    return undefined;
  }

  /** The first byte of a request head: the whole head must follow within headTimeoutMs. */
  private headStarted(): void {
    this.idleSince = undefined;
    this.headSince = Date.now();
    clearTimeout(this.headTimer);
    this.headTimer = setTimeout(() => {
      if (this.state !== 'head' || this.headSince === undefined) return;
      this.service.headTimedOut();
      this.ctx.debug({ icapClient: this.peer, bytes: this.buf.length }, 'icap request head timed out');
      this.state = 'closed';
      this.socket.end(icapResponseHead(408, [['ISTag', this.ctx.istag], ['Encapsulated', 'null-body=0'], ['Connection', 'close']]));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }, this.headTimeoutMs);
    this.headTimer.unref();
  }

  /** The head is complete (a transaction or an OPTIONS answer follows). */
  private headDone(): void {
    clearTimeout(this.headTimer);
    this.headSince = undefined;
  }

  /** Back to waiting for a request: idle, or the next head already (partly) buffered. */
  private awaitHead(): void {
    if (this.buf.length) this.headStarted();
    else this.idleSince = Date.now();
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.socket.pause();
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
    this.pump();
  }

  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        this.step();
      } while (this.again);
    } catch (e) {
      this.protocolError(e);
    } finally {
      this.pumping = false;
    }
  }

  /** Works through the buffered bytes as far as the state allows. */
  private step(): void {
    while (this.state !== 'closed' && !this.paused) {
      if (this.state === 'head') {
        if (!this.readHead()) return;
        continue;
      }
      if (this.state === 'body') {
        if (!this.buf.length) return;
        const { used, events } = this.reader!.feed(this.buf);
        this.buf = this.buf.subarray(used);
        let more = true;
        for (const ev of events) {
          if (ev.kind === 'data') {
            if (!this.tx!.data(ev.data)) more = false;
          } else {
            // The end of a preview (the transaction answers or calls sendContinue) or of the body.
            this.state = 'busy';
            this.tx!.bodyEnd(ev.ieof);
          }
        }
        if (!more) this.pause();
        if (used === 0 && !events.length) return;
        continue;
      }
      return; // busy: the transaction is answering
    }
  }

  /** Parses one request head (ICAP head and encapsulated HTTP heads) once all its bytes are here. */
  private readHead(): boolean {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.buf.length > MAX_ICAP_HEAD_BYTES) throw new IcapProtocolError(400, `ICAP head larger than ${MAX_ICAP_HEAD_BYTES} bytes`);
      return false;
    }
    if (end > MAX_ICAP_HEAD_BYTES) throw new IcapProtocolError(400, `ICAP head larger than ${MAX_ICAP_HEAD_BYTES} bytes`);
    const head = parseIcapHead(this.buf.toString('latin1', 0, end));
    const path = (() => { try { return new URL(head.uri).pathname; } catch { return undefined; } })();
    if (head.method === 'OPTIONS') {
      if (path !== ICAP_SERVICE_PATH) throw new IcapProtocolError(404, `no ICAP service at ${head.uri}`);
      const enc = head.headers.has('encapsulated') ? parseEncapsulated(head.headers.get('encapsulated')) : undefined;
      if (enc && enc.body !== 'null-body') throw new IcapProtocolError(400, 'OPTIONS with a body is not supported');
      this.buf = this.buf.subarray(end + 4);
      this.socket.write(this.service.optionsResponse());
      this.headDone();
      this.awaitHead();
      return true;
    }
    if (head.method !== 'RESPMOD') throw new IcapProtocolError(head.method === 'REQMOD' ? 405 : 501, `${head.method} is not offered (Methods: RESPMOD)`);
    if (path !== ICAP_SERVICE_PATH) throw new IcapProtocolError(404, `no ICAP service at ${head.uri}`);
    const enc = parseEncapsulated(head.headers.get('encapsulated'));
    if (enc.body === 'req-body' || enc.body === 'opt-body') throw new IcapProtocolError(400, `RESPMOD with ${enc.body}`);
    const start = end + 4;
    if (this.buf.length < start + enc.bodyOffset) return false; // the HTTP heads are still coming
    const section = (from: number | undefined, names: (number | undefined)[]) => {
      if (from === undefined) return undefined;
      const to = Math.min(...names.filter((x): x is number => x !== undefined && x > from), enc.bodyOffset);
      return this.buf.subarray(start + from, start + to);
    };
    const reqBytes = section(enc.reqHdr, [enc.resHdr]);
    const resBytes = section(enc.resHdr, []);
    const reqHead = reqBytes ? parseHttpHead(reqBytes, 'request') : undefined;
    const resHead = resBytes ? parseHttpHead(resBytes, 'response') : undefined;
    if (!resHead) throw new IcapProtocolError(400, 'RESPMOD without res-hdr');
    this.buf = this.buf.subarray(start + enc.bodyOffset);
    this.headDone();
    const preview = this.previewOf(head);
    const hasBody = enc.body === 'res-body';
    this.startTransaction(head, reqHead, resHead, hasBody, preview);
    return true;
  }

  private previewOf(head: IcapRequestHead): boolean {
    const p = head.headers.get('preview');
    if (p === undefined) return false;
    if (!/^\d{1,9}$/.test(p.trim())) throw new IcapProtocolError(400, 'bad Preview header');
    return true;
  }

  private startTransaction(icap: IcapRequestHead, reqHead: ReturnType<typeof parseHttpHead> | undefined, resHead: ReturnType<typeof parseHttpHead>, hasBody: boolean, preview: boolean): void {
    const io: TransactionIo = {
      peer: this.peer,
      write: (parts) => {
        if (this.state === 'closed') return true;
        let ok = true;
        for (const p of parts) ok = this.socket.write(p) && ok;
        return ok;
      },
      onDrain: (fn) => this.socket.once('drain', fn),
      sendContinue: () => {
        if (this.state === 'closed') return;
        this.socket.write('ICAP/1.0 100 Continue\r\n\r\n');
        this.reader!.continueAfterPreview();
        this.state = 'body';
        this.pump();
      },
      done: (close) => {
        const midBody = this.state === 'body';
        this.tx = undefined;
        this.reader = undefined;
        if (this.state === 'closed') return;
        if (close || midBody || this.service.isStopping) {
          // The rest of this request's body would arrive where the next request must start: close.
          this.state = 'closed';
          this.socket.end();
          setTimeout(() => this.socket.destroy(), 2000).unref();
          return;
        }
        this.state = 'head';
        this.awaitHead();
        this.resume();
        this.pump();
      },
      resumeInput: () => this.resume(),
    };
    const tx = new RespmodTransaction(this.ctx, io, { icap, reqHead, resHead, hasBody, preview });
    this.tx = tx;
    if (hasBody) {
      this.reader = new ChunkedBodyReader();
      this.state = 'body';
    } else {
      this.state = 'busy';
    }
    tx.begin();
  }

  private protocolError(e: unknown): void {
    const status = e instanceof IcapProtocolError ? e.status : 500;
    const message = e instanceof Error ? e.message : String(e);
    // A transaction in progress is blocked (its record says why); the client gets an ICAP error and the connection closes.
    this.tx?.abort(gateReason(status === 500 ? 'INTERNAL_ERROR' : 'MALFORMED', `ICAP: ${message}`));
    this.tx = undefined;
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.ctx.debug({ icapClient: this.peer, status, error: message }, 'icap error');
    this.socket.end(icapResponseHead(status, [['ISTag', this.ctx.istag], ['Encapsulated', 'null-body=0'], ['Connection', 'close']]));
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** Service stopping: a transaction still holding a payload is blocked now. */
  shutdown(): void {
    if (this.tx) this.tx.failHeld(gateReason('INTERNAL_ERROR', 'patchgate is shutting down'));
    else this.destroy();
  }

  destroy(): void {
    clearTimeout(this.headTimer);
    this.state = 'closed';
    this.socket.destroy();
  }
}
