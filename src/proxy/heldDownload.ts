import type { IncomingMessage, IncomingHttpHeaders, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from '../inspect/gateReason.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import type { HoldMode } from '../policy/rulesFile.js';
import { auditUnwritten, transferRecord } from '../inspect/transferRecord.js';
import { decideResponse, isDroppedForVerifiedEntity } from '../inspect/responsePolicy.js';
import type { Spool } from '../inspect/spool.js';
import { PayloadInspection, type InspectionResult, type InspectionSettings } from '../inspect/payloadInspection.js';
import { interpretRange } from './byteRange.js';
import { writeBlockPage } from '../inspect/blockPage.js';
import { responseSharing, type Sharing } from './sharedCache.js';
import { reportFault } from '../metrics/gateObserver.js';

/** One client waiting for (or reading) a held entity. */
export interface Waiter {
  id: string;
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  range: string | undefined;
  client: string;
  url: string;
  host: string;
  since: number;
  shared: boolean;
  /** A client that joined another's download: how it fetches its own if the response may not be shared. */
  refetch?: () => void;
}

/** A hold's settings: the inspection's (policy, spool, limits, digest threads) and the upstream's. */
export interface HoldSettings extends InspectionSettings {
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  rulesSha256: string;
  /** Writes a record; false when it could not be written. */
  audit: (r: AuditRecord) => boolean;
  /** A payload's record cannot be written: refuse the payload (`block`, default) or serve it anyway. */
  auditOnError?: 'block' | 'serve';
  /** How long a verified copy is kept for later requests at most (the response may say less). */
  cacheTtlMs: number;
  /**
   * A verified copy kept of the same upstream entity (same URL but for the query, same strong ETag,
   * same credentials): its clients are served from it instead of keeping a second copy.
   */
  sameEntity?: (entityKey: string) => HeldDownload | undefined;
  /** Is a redirect target one the rules accept (an inspected update host)? */
  redirectAllowed: (location: URL) => boolean;
}

function entityHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !isDroppedForVerifiedEntity(k)) out[k] = v;
  return out;
}

type Outcome =
  | { kind: 'verdict'; verdict: Verdict; status: number; headers: IncomingHttpHeaders; spool: Spool | undefined }
  | { kind: 'relay'; status: number; headers: IncomingHttpHeaders; served: AuditRecord['served'] }
  | { kind: 'block'; reasons: GateReason[]; verdict?: Verdict; rule?: string; status?: number };

/**
 * One upstream fetch of an inspected resource, shared by every client that asks for the same URL
 * meanwhile. The body is decoded, hashed by the incremental verifier and spooled; no client gets a
 * byte of it before the verdict is allow. Then each client is served from the spool (its Range
 * honoured), and the entry lingers briefly so BITS-style range requests hit the verified copy.
 */
export class HeldDownload {
  readonly key: string;
  private waiters: Waiter[] = [];
  private outcome: Outcome | undefined;
  private upstream: IncomingMessage | undefined;
  private upstreamStatus: number | undefined;
  private readonly started = Date.now();
  private lastByte = 0;
  /** performance.now() when the last body byte was read from upstream (0: not yet). */
  private lastByteRead = 0;
  private verifyMs = 0;
  /** The verdict came before the spool's last bytes reached the disk: bodies wait for `afterFlush`. */
  private flushPending = false;
  private afterFlush: ((err: Error | undefined) => void)[] = [];
  /** The spool's flush failed after the verdict: the verified copy cannot be served. */
  private flushFailure: Error | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private totalTimer: NodeJS.Timeout | undefined;
  private readers = 0;
  private expired = false;
  private aborted = false;
  /** The body on its way through decoding, sniffing and holding, until there is an outcome. */
  private inspection: PayloadInspection | undefined;
  /** The trust channel that judged the entity (kept after the inspection is let go of). */
  private trustChannel: string | undefined;

  /** The fetching request carried credentials (Authorization). */
  credentials = false;
  /**
   * How the payload is held for the clients waiting when it starts to arrive (rules `hold`): `whole`,
   * or `tail` (streamed, its end withheld until the verdict; src/inspect/tailHold.ts). Clients that
   * join later, ask for a range, or cannot tell a cut transfer from a complete one (HTTP/1.0 with no
   * length known) are served whole from the verified copy.
   */
  holdMode: HoldMode = 'whole';
  /** The client whose request started the download: its spool is counted against it. */
  owner = '?';
  /** URL without its query (plus the credentials' identity), for ETag matching; undefined: no matching. */
  entityBase: string | undefined;
  /** entityBase plus the response's strong ETag, once known. */
  entityKey: string | undefined;
  /** What the response allows (RFC 9111): known once its headers arrived. */
  private sharing: Sharing | undefined;
  /** May another request join this download (or its verified copy)? */
  get joinable(): boolean { return this.sharing?.share ?? true; }
  /** How long the verified copy is kept after the verdict. */
  get keepMs(): number { return this.sharing?.keepMs ?? this.settings.cacheTtlMs; }

  constructor(key: string, private readonly settings: HoldSettings, private readonly onSettled: (d: HeldDownload, cacheable: boolean) => void) {
    this.key = key;
    this.totalTimer = setTimeout(() => this.fail(gateReason('TIMEOUT', `transfer exceeded ${settings.totalTimeoutMs} ms`)), settings.totalTimeoutMs);
    this.totalTimer.unref();
    this.armIdle();
  }

  get settled(): boolean { return this.outcome !== undefined; }
  /** Bytes this download holds in its spool (memory or disk) until the spool is released. */
  get spoolBytes(): number {
    return this.outcome?.kind === 'verdict' ? this.outcome.spool?.heldBytes ?? 0 : this.inspection?.spoolBytes ?? 0;
  }
  /** Of which in memory. */
  get inMemoryBytes(): number {
    return this.outcome?.kind === 'verdict' ? this.outcome.spool?.inMemoryBytes ?? 0 : this.inspection?.spoolInMemoryBytes ?? 0;
  }

  private cancel: (() => void) | undefined;
  /** How to abandon the upstream request before its response arrived. */
  onCancel(fn: () => void): void { this.cancel = fn; }
  get hasWaiters(): boolean { return this.waiters.length > 0; }

  attach(w: Waiter): void {
    w.res.on('close', () => {
      if (!w.res.writableFinished) this.detach(w);
    });
    if (this.outcome) return this.serve(w);
    this.waiters.push(w);
  }

  private detach(w: Waiter): void {
    const i = this.waiters.indexOf(w);
    const t = this.streaming.indexOf(w);
    if (i < 0 && t < 0) return;
    if (i >= 0) this.waiters.splice(i, 1);
    else this.streaming.splice(t, 1);
    this.record(w, {
      served: 'client-aborted', status: t >= 0 ? this.upstreamStatus ?? 0 : 0, verdict: 'block', reasons: [gateReason('UPSTREAM_ERROR', 'the client disconnected before the verdict')],
      ...(t >= 0 ? { hold: 'tail' as const, bytesToClient: this.tailSent } : {}),
    });
    // Nobody left to serve: stop fetching, so a client that walks away frees the upstream and the spool.
    if (!this.outcome && this.waiters.length === 0 && this.streaming.length === 0) this.abort();
  }

  private idleCleared = false;

  private armIdle(): void {
    if (this.outcome) {
      clearTimeout(this.idleTimer);
      return;
    }
    // Once per chunk: restart the one timer (refresh) rather than make a new one.
    if (this.idleTimer && !this.idleCleared) {
      this.idleTimer.refresh();
      return;
    }
    this.idleCleared = false;
    this.idleTimer = setTimeout(() => this.fail(gateReason('TIMEOUT', `upstream idle for ${this.settings.idleTimeoutMs} ms`)), this.settings.idleTimeoutMs);
    this.idleTimer.unref();
  }

  private clearTimers(): void {
    clearTimeout(this.idleTimer);
    this.idleCleared = true;
    clearTimeout(this.totalTimer);
  }

  /** Stops everything without a verdict (no client is waiting any more). */
  abort(): void {
    this.aborted = true;
    this.clearTimers();
    this.inspection?.dispose();
    this.upstream?.destroy();
    if (!this.upstream) this.cancel?.();
    this.outcome = { kind: 'block', reasons: [gateReason('UPSTREAM_ERROR', 'aborted')] };
    this.letGoOfUpstream();
    this.onSettled(this, false);
  }

  /** Gives every waiter to `other` (a verified copy of the same entity) and ends this download unread. */
  private handOver(other: HeldDownload, res: IncomingMessage): void {
    res.destroy();
    this.clearTimers();
    this.upstream = undefined;
    this.outcome = { kind: 'block', reasons: [gateReason('UPSTREAM_ERROR', 'handed over to a verified copy of the same entity')] };
    this.letGoOfUpstream();
    const waiting = this.waiters.splice(0);
    this.onSettled(this, false);
    for (const w of waiting) {
      w.shared = true;
      other.attach(w);
    }
  }

  /** Bytes of this download's spool on disk (a verified copy can free them). */
  get onDiskBytes(): number { return this.spoolBytes - this.inMemoryBytes; }

  /**
   * Once there is an outcome, nothing here needs the upstream response, the decoders or the way to
   * cancel the request any more; a cached entity must not keep them (and what their listeners and
   * the proxy's context reach) alive until it expires.
   */
  private letGoOfUpstream(): void {
    this.upstream = undefined;
    this.inspection = undefined;
    this.cancel = undefined;
  }

  /** An upstream error, a timeout or a limit: block everyone waiting, with the reason. */
  fail(why: GateReason): void {
    if (this.outcome) return;
    if (why.code === 'UPSTREAM_ERROR' || why.code === 'TIMEOUT') this.settings.observer?.upstreamError(why.code);
    this.inspection?.dispose();
    this.upstream?.destroy();
    if (!this.upstream) this.cancel?.();
    this.settle({ kind: 'block', reasons: [why] });
  }

  /** Takes over the upstream response: nothing goes to a client before the verdict. */
  takeUpstream(res: IncomingMessage): void {
    if (this.aborted || this.outcome) {
      res.destroy();
      return;
    }
    this.upstream = res;
    this.upstreamStatus = res.statusCode ?? 0;
    const status = this.upstreamStatus;
    const method = this.waiters[0]?.method ?? 'GET';
    this.armIdle();
    this.sharing = responseSharing(res.headers, this.credentials, this.settings.cacheTtlMs);
    if (!this.sharing.share) {
      // Clients that joined this download get their own fetch: this response is for its requester only.
      for (const w of this.waiters.filter((x) => x.refetch)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.refetch!();
      }
    }
    const etag = typeof res.headers.etag === 'string' ? res.headers.etag.trim() : '';
    if (status === 200 && this.sharing.share && this.entityBase && /^"[^"]*"$/.test(etag)) {
      // The origin says this is the same entity as a verified copy kept under another query string: serve that one.
      this.entityKey = `${this.entityBase}#etag:${etag}`;
      const same = this.settings.sameEntity?.(this.entityKey);
      if (same && same !== this) return this.handOver(same, res);
    }

    // Status line and headers first: the same rules as the ICAP service's (src/inspect/responsePolicy.ts).
    const d = decideResponse({ method, status, location: res.headers.location, transferEncoding: res.headers['transfer-encoding'], url: this.key }, this.settings.redirectAllowed);
    if (d.kind === 'block') {
      if (d.status === 502) {
        res.destroy();
        this.settings.observer?.upstreamError('UPSTREAM_ERROR');
        return this.settleNow({ kind: 'block', status: 502, reasons: [d.reason] });
      }
      if (status === 206) {
        res.destroy();
        return this.fail(d.reason);
      }
      res.resume();
      return this.settleNow({ kind: 'block', reasons: [d.reason] });
    }
    if (d.kind === 'relay') {
      res.resume();
      return this.settleNow({ kind: 'relay', status, headers: res.headers, served: d.served });
    }

    // Decoding, sniffing, holding (verifier, digest thread, spool) and limits: one PayloadInspection,
    // the same as the ICAP service's. Content that is not a payload streams to the waiting clients.
    let pathname: string;
    let hostname: string;
    try {
      ({ pathname, hostname } = new URL(this.key));
    } catch {
      res.destroy();
      return this.fail(gateReason('INTERNAL_ERROR', `not a URL: ${this.key}`));
    }
    const cl = res.headers['content-length'];
    const declaredLength = cl !== undefined && /^\d{1,15}$/.test(cl) ? Number(cl) : undefined;
    // The client gets the decoded body: its length is the declared one only when nothing is to decode.
    const identity = !/\S/.test(String(res.headers['content-encoding'] ?? '').replace(/identity|,/gi, ''));
    const inspection = new PayloadInspection(this.settings, {
      contentEncoding: res.headers['content-encoding'],
      host: hostname,
      pathname,
      owner: this.owner,
      declaredLength,
      verdictBeforeFlush: true,
      ...(this.holdMode === 'tail' && method === 'GET' ? {
        tail: {
          start: (streams: boolean) => { if (streams) this.startTail(status, res.headers, identity ? declaredLength : undefined); },
          data: (chunks: Buffer[], resume: () => void, written?: () => void) => this.tailData(chunks, resume, written),
        },
      } : {}),
      pass: {
        start: (head, rule) => this.startPass(head, status, res.headers, rule),
        data: (chunk, resume) => this.passChunk(chunk, resume),
        end: () => this.endPass(),
        error: (why) => this.fail(why),
      },
    });
    this.inspection = inspection;
    this.trustChannel = inspection.channel;
    inspection.result.then((r) => this.inspected(r, status, res.headers), (e: Error) => this.fail(gateReason('INTERNAL_ERROR', e.message)))
      // Serving the outcome runs here, outside any library entry: its own guard (an unhandled rejection would end the process).
      .catch((e: unknown) => {
        reportFault(this.settings.observer, 'response', e);
        this.fail(gateReason('INTERNAL_ERROR', `internal error: ${e instanceof Error ? e.message : String(e)}`));
      });
    res.on('data', (chunk: Buffer) => {
      if (this.outcome) return;
      this.armIdle();
      if (!inspection.push(chunk)) {
        res.pause();
        inspection.onDrain(() => { if (!this.outcome) res.resume(); });
      }
    });
    res.on('error', (e) => this.fail(gateReason('UPSTREAM_ERROR', `upstream: ${e.message}`)));
    res.on('close', () => {
      if (!res.complete && !this.outcome) this.fail(gateReason('UPSTREAM_ERROR', 'upstream closed the connection before the whole body arrived'));
    });
    res.resume(); // flowing even if the caller paused it (backpressure above pauses it again)
    res.on('end', () => {
      clearTimeout(this.idleTimer); // the body is complete: only the verdict remains
      this.idleCleared = true;
      if (this.outcome) return;
      if (!res.complete) return this.fail(gateReason('UPSTREAM_ERROR', 'upstream closed the connection before the whole body arrived'));
      this.lastByte = Date.now();
      this.lastByteRead = performance.now();
      inspection.end();
    });
  }

  /** What the inspection found: a verified entity to serve, or a block (early or by the verdict). */
  private inspected(r: InspectionResult, status: number, headers: IncomingHttpHeaders): void {
    if (r.kind === 'pass') return; // the pass sink carries it
    if (this.outcome) {
      if (r.kind === 'verdict') r.spool?.release(); // decided meanwhile (a timeout, a stop): nobody reads it
      return;
    }
    if (r.kind === 'verdict') {
      this.verifyMs = r.verifyMs;
      if (r.flushed) this.awaitFlush(r.flushed);
      return this.settle({ kind: 'verdict', verdict: r.verdict, status, headers, spool: r.spool });
    }
    this.upstream?.destroy();
    this.settle({ kind: 'block', reasons: r.reasons, verdict: r.verdict, rule: r.rule });
  }

  /**
   * The verdict is out before the spool's last bytes are on disk: clients get their head at once,
   * their body once every byte is readable. A failed flush cuts them (their head already said 200)
   * and blocks any later client of this copy.
   */
  private awaitFlush(flushed: Promise<void>): void {
    this.flushPending = true;
    const done = (err: Error | undefined) => {
      this.flushPending = false;
      this.flushFailure = err;
      for (const f of this.afterFlush.splice(0)) f(err);
      if (err) {
        this.expire();
        this.onSettled(this, false); // no new client joins a copy that cannot be read
      }
    };
    flushed.then(() => done(undefined), (e: Error) => done(e));
  }

  /** Runs `f` once the spool is readable (at once if it is), with the flush's error if it failed. */
  private whenReadable(f: (err: Error | undefined) => void): void {
    if (this.flushPending) this.afterFlush.push(f);
    else f(this.flushFailure);
  }

  /** Time from the last body byte read from upstream to now: how long the gate took to release a client. */
  private releaseMsNow(): number | undefined {
    if (!this.lastByteRead) return undefined;
    const ms = performance.now() - this.lastByteRead;
    this.settings.observer?.released?.(ms);
    return ms;
  }

  /** Tail mode: clients getting the payload as it arrives (they all got the same first `tailSent` bytes). */
  private streaming: Waiter[] = [];
  private tailSent = 0;

  /**
   * The first bytes of a tail-held payload may leave: the waiting clients that can tell a cut
   * transfer from a complete one get the response head now. With a length, the Content-Length the
   * transfer will not reach on a block; without one (a chunked or decoded body), chunked framing
   * whose last chunk never comes on a block, so an HTTP/1.0 client (no chunking: the end of the
   * connection would look like the end of the body) waits for the verdict instead. A Range request
   * is served from the verified copy (the fetch is of the whole entity).
   */
  private startTail(status: number, headers: IncomingHttpHeaders, length: number | undefined): void {
    this.streaming = this.waiters.filter((w) => w.method === 'GET' && w.range === undefined && (length !== undefined || w.req.httpVersion !== '1.0'));
    this.waiters = this.waiters.filter((w) => !this.streaming.includes(w));
    for (const w of this.streaming) {
      w.res.writeHead(status, {
        ...entityHeaders(headers), ...(length !== undefined ? { 'content-length': length } : {}),
        'x-patchgate-hold': 'tail', 'x-patchgate-audit-id': w.id,
      });
    }
  }

  /** A write of a released buffer failed: its memory may still be referenced, so none is reused from here on. */
  private tailWriteFailed = false;

  private tailData(chunks: Buffer[], resume: () => void, written?: () => void): boolean {
    for (const c of chunks) this.tailSent += c.byteLength;
    const blocked: Waiter[] = [];
    // The buffers go back to their pool once every client's socket took them (writes on one socket
    // complete in order, so this batch's also means the batches' before it).
    let writes = 1;
    const wrote = written && ((err?: Error | null) => {
      if (err) this.tailWriteFailed = true;
      if (--writes === 0 && !this.tailWriteFailed) written();
    });
    for (const w of this.streaming) {
      let ok = true;
      for (const c of chunks) {
        writes++;
        ok = w.res.write(c, wrote) && ok;
      }
      if (!ok) blocked.push(w);
    }
    wrote?.();
    if (!blocked.length) return true;
    // Resume once every slow client drained (or went away: its 'close' counts as drained).
    let pending = blocked.length;
    const one = () => { if (--pending === 0) resume(); };
    for (const w of blocked) {
      const done = () => { w.res.off('drain', done); w.res.off('close', done); one(); };
      w.res.on('drain', done);
      w.res.on('close', done);
    }
    return false;
  }

  /** After the verdict: an allowed payload's withheld end goes out (from the spool); anything else cuts the transfer. */
  private endTail(w: Waiter, o: Outcome): void {
    const base = { verifyMs: this.verifyMs, upstreamMs: this.lastByte - this.started };
    if (o.kind === 'verdict') {
      this.readers++;
      const releaseMs = this.releaseMsNow();
      return this.whenReadable((err) => {
        if (err) {
          this.readerDone(o);
          return this.endTail(w, { kind: 'block', reasons: [gateReason('INTERNAL_ERROR', err.message)] });
        }
        const size = o.verdict.size;
        const durations = releaseMs === undefined ? base : { ...base, releaseMs };
        const recorded = this.record(w, { served: 'full', status: this.upstreamStatus ?? 200, verdict: 'allow', reasons: [], verdictData: o.verdict, bytesToClient: size, durations, hold: 'tail' });
        if (recorded || this.settings.auditOnError === 'serve') return this.pipeSpool(w, o, this.tailSent, size - 1);
        this.readerDone(o);
        w.res.destroy();
        const why = auditUnwritten();
        this.record(w, { served: 'blocked', status: this.upstreamStatus ?? 200, verdict: 'block', reasons: [why], durations: base, hold: 'tail', bytesToClient: this.tailSent });
      });
    }
    // No 403 can follow a 200 already under way: the transfer is cut short of its length (or its last chunk).
    w.res.destroy();
    const reasons = o.kind === 'block' ? o.reasons : [gateReason('INTERNAL_ERROR', 'tail hold ended without a verdict')];
    this.record(w, {
      served: 'blocked', status: this.upstreamStatus ?? 200, verdict: 'block', reasons, verdictData: o.kind === 'block' ? o.verdict : undefined,
      bytesToClient: this.tailSent, durations: base, rule: o.kind === 'block' ? o.rule : undefined, hold: 'tail',
    });
  }

  /** Non-payload content (metadata): streamed through to the clients already waiting, not cached. */
  private startPass(head: Buffer, status: number, headers: IncomingHttpHeaders, rule: string): void {
    this.passRule = rule;
    this.onSettled(this, false);
    this.passing = this.waiters.splice(0);
    for (const w of this.passing) {
      w.res.writeHead(status, { ...entityHeaders(headers), 'x-patchgate-verdict': 'pass', 'x-patchgate-audit-id': w.id });
      w.res.write(head);
    }
    this.passedBytes = head.byteLength;
    this.passStatus = status;
  }

  private passing: Waiter[] = [];
  private passRule: string | undefined;
  private passedBytes = 0;
  private passStatus = 0;

  private passChunk(chunk: Buffer, resume: () => void): boolean {
    this.passedBytes += chunk.byteLength;
    let ok = true;
    for (const w of this.passing) ok = w.res.write(chunk) && ok;
    if (!ok) {
      let pending = this.passing.length;
      for (const w of this.passing) w.res.once('drain', () => { if (--pending === 0) resume(); });
    }
    return ok;
  }

  private endPass(): void {
    if (this.outcome) return;
    this.clearTimers();
    this.outcome = { kind: 'relay', status: this.passStatus, headers: {}, served: 'passed' };
    this.letGoOfUpstream();
    for (const w of this.passing) {
      w.res.end();
      this.record(w, { served: 'passed', status: this.passStatus, verdict: 'pass', reasons: [], inspected: false, bytesToClient: this.passedBytes, rule: this.passRule });
    }
    this.passing = [];
  }

  private settleNow(o: Outcome): void {
    this.lastByte = Date.now();
    this.settle(o);
  }

  private settle(o: Outcome): void {
    if (this.outcome) return;
    this.clearTimers();
    this.outcome = o;
    this.inspection?.dispose(); // stops decoding and hashing; a verified spool is the outcome's now
    this.letGoOfUpstream();
    if (!this.lastByte) this.lastByte = Date.now();
    const waiting = this.waiters.splice(0);
    for (const w of waiting) this.serve(w, true);
    for (const w of this.streaming.splice(0)) this.endTail(w, o);
    // Pass-through waiters of a failed pass cannot get a block page any more: cut them.
    for (const w of this.passing.splice(0)) {
      w.res.destroy();
      this.record(w, { served: 'client-aborted', status: this.passStatus, verdict: 'block', reasons: o.kind === 'block' ? o.reasons : [], inspected: false, rule: this.passRule });
    }
    this.onSettled(this, o.kind === 'verdict' && this.keepMs > 0);
  }

  /** Ends the linger of a cached verified entity; the spool goes when its last reader is done. */
  expire(): void {
    this.expired = true;
    if (this.readers === 0 && this.outcome?.kind === 'verdict') this.outcome.spool?.release();
  }

  /** `fresh`: the client waited for this outcome (its release time is measured); else it joined a settled one. */
  private serve(w: Waiter, fresh = false): void {
    const o = this.outcome!;
    const releaseMs = fresh ? this.releaseMsNow() : undefined;
    const base = { verifyMs: this.verifyMs, upstreamMs: this.lastByte - this.started, ...(releaseMs !== undefined ? { releaseMs } : {}) };
    if (o.kind === 'block' || this.flushFailure) {
      const reasons = o.kind === 'block' ? o.reasons : [gateReason('INTERNAL_ERROR', this.flushFailure!.message)];
      const bytes = writeBlockPage(w.res, reasons, w.id, w.url, o.kind === 'block' ? o.status : undefined);
      const v = o.kind === 'block' ? o.verdict : undefined;
      this.record(w, { served: 'blocked', status: (o.kind === 'block' ? o.status : undefined) ?? 403, verdict: 'block', reasons, verdictData: v, bytesToClient: bytes, durations: base, rule: o.kind === 'block' ? o.rule : undefined });
      return;
    }
    if (o.kind === 'relay') {
      w.res.writeHead(o.status, { ...entityHeaders(o.headers), ...(o.headers['content-length'] && o.served === 'head' && !/\S/.test(String(o.headers['content-encoding'] ?? '').replace(/identity/gi, '')) ? { 'content-length': o.headers['content-length'] } : {}), 'x-patchgate-verdict': 'pass', 'x-patchgate-audit-id': w.id });
      w.res.end();
      this.record(w, { served: o.served, status: o.status, verdict: 'pass', reasons: [], inspected: false, durations: base });
      return;
    }
    const size = o.verdict.size;
    const headers: Record<string, string | string[] | number> = {
      ...entityHeaders(o.headers), 'accept-ranges': 'bytes', 'x-patchgate-verdict': 'allow', 'x-patchgate-audit-id': w.id,
    };
    if (this.expired && this.readers === 0) {
      // The verified copy is gone (linger over): this client must ask again.
      w.res.writeHead(503, { 'retry-after': '1', 'content-length': 0 });
      w.res.end();
      return;
    }
    if (w.method === 'HEAD') {
      w.res.writeHead(o.status, { ...headers, 'content-length': size });
      w.res.end();
      this.record(w, { served: 'head', status: o.status, verdict: 'allow', reasons: [], verdictData: o.verdict, durations: base });
      return;
    }
    const r = interpretRange(w.range, size);
    if (r.kind === 'unsatisfiable') {
      w.res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': 0, 'x-patchgate-audit-id': w.id });
      w.res.end();
      this.record(w, { served: 'unsatisfiable', status: 416, verdict: 'allow', reasons: [], verdictData: o.verdict, durations: base });
      return;
    }
    const start = r.kind === 'range' ? r.range.start : 0;
    const end = r.kind === 'range' ? r.range.end : size - 1;
    const status = r.kind === 'range' ? 206 : o.status;
    if (r.kind === 'range') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = end - start + 1;
    const served = { served: r.kind === 'range' ? 'range' as const : 'full' as const, status, verdict: 'allow' as const, reasons: [], verdictData: o.verdict, bytesToClient: end - start + 1, durations: base };
    const auditFailed = auditUnwritten();
    if (this.flushPending) {
      // The verdict is the decision, the spool's flush only I/O: the head goes out now, on its own
      // (the client learns the verdict at once), the record and the body once every byte is readable.
      // No payload byte leaves before its record; a failure from here on cuts the response.
      w.res.writeHead(status, headers);
      w.res.flushHeaders();
      this.readers++;
      this.whenReadable((err) => {
        const why = err ? gateReason('INTERNAL_ERROR', err.message) : !this.record(w, served) && this.settings.auditOnError !== 'serve' ? auditFailed : undefined;
        if (!why) return this.pipeSpool(w, o, start, end);
        this.readerDone(o);
        w.res.destroy();
        this.record(w, { served: 'blocked', status, verdict: 'block', reasons: [why], verdictData: err ? o.verdict : undefined, bytesToClient: 0, durations: base });
      });
      return;
    }
    // The record is written (in the file, not a buffer) before the payload's first byte leaves: a
    // payload whose record cannot be written is refused (audit.onError: block) or served anyway.
    if (!this.record(w, served) && this.settings.auditOnError !== 'serve') {
      writeBlockPage(w.res, [auditFailed], w.id, w.url);
      this.record(w, { served: 'blocked', status: 403, verdict: 'block', reasons: [auditFailed], durations: base });
      return;
    }
    w.res.writeHead(status, headers);
    // A body in memory leaves with its head in one write; one on disk needs a read first: the head goes now.
    if (o.spool!.onDisk) w.res.flushHeaders();
    this.readers++;
    this.pipeSpool(w, o, start, end);
  }

  /** Sends spool bytes [start, end] to a client counted in `readers` (the count is given back when done). */
  private pipeSpool(w: Waiter, o: Extract<Outcome, { kind: 'verdict' }>, start: number, end: number): void {
    let done = false;
    o.spool!.pipeTo(w.res, start, end, () => {
      if (done) return;
      done = true;
      this.readerDone(o);
    });
  }

  private readerDone(o: Extract<Outcome, { kind: 'verdict' }>): void {
    this.readers--;
    if (this.expired && this.readers === 0) o.spool?.release();
  }

  private record(w: Waiter, r: {
    served: AuditRecord['served']; status: number; verdict: AuditRecord['verdict']; reasons: GateReason[];
    verdictData?: Verdict; inspected?: boolean; bytesToClient?: number; durations?: AuditRecord['durations']; rule?: string; hold?: AuditRecord['hold'];
  }): boolean {
    const v = r.verdictData ?? (this.outcome?.kind === 'verdict' ? this.outcome.verdict : this.outcome?.kind === 'block' ? this.outcome.verdict : undefined);
    return this.settings.audit(transferRecord(
      { id: w.id, client: w.client, method: w.method, url: w.url, host: w.host, upstreamStatus: this.upstreamStatus, rulesSha256: this.settings.rulesSha256, trustChannel: this.trustChannel },
      { ...r, verdictData: v, range: w.range, shared: w.shared, durations: r.durations ?? { upstreamMs: this.lastByte ? this.lastByte - this.started : undefined } },
    ));
  }
}

export function newAuditId(): string {
  return randomUUID();
}
