import type { IncomingMessage, IncomingHttpHeaders, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from '../inspect/gateReason.js';
import type { AuditRecord } from '../audit/auditRecord.js';
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

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authenticate', 'proxy-authorization', 'content-length', 'content-encoding', 'content-range', 'accept-ranges',
]);

function entityHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k) && !k.startsWith('x-patchgate')) out[k] = v;
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
  private verifyMs = 0;
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
    if (i < 0) return;
    this.waiters.splice(i, 1);
    this.record(w, { served: 'client-aborted', status: 0, verdict: 'block', reasons: [gateReason('UPSTREAM_ERROR', 'the client disconnected before the verdict')] });
    // Nobody left to serve: stop fetching, so a client that walks away frees the upstream and the spool.
    if (!this.outcome && this.waiters.length === 0) this.abort();
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

    // Only chunked framing is undone by the HTTP parser: any other transfer-coding (gzip, chunked)
    // would reach the verifier still coded. Squid answers 502 for them; so does the gate.
    const te = String(res.headers['transfer-encoding'] ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c && c !== 'chunked');
    if (te.length) {
      res.destroy();
      this.settings.observer?.upstreamError('UPSTREAM_ERROR');
      return this.settleNow({ kind: 'block', status: 502, reasons: [gateReason('UPSTREAM_ERROR', `unsupported transfer-coding "${te.join(', ')}" (only chunked is accepted)`)] });
    }
    if (status === 206) {
      res.destroy();
      return this.fail(gateReason('UPSTREAM_ERROR', 'upstream answered 206 Partial Content to a request without Range: a partial body is never forwarded unverified'));
    }
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      let target: URL | undefined;
      try { target = new URL(res.headers.location, this.key); } catch { /* refused below */ }
      if (!target || !this.settings.redirectAllowed(target)) {
        return this.settleNow({ kind: 'block', reasons: [gateReason('UPSTREAM_ERROR', `redirect to ${res.headers.location}, a host the rules do not inspect`)] });
      }
      return this.settleNow({ kind: 'relay', status, headers: res.headers, served: 'redirect' });
    }
    if (method === 'HEAD' || status === 304 || status === 204) {
      res.resume();
      return this.settleNow({ kind: 'relay', status, headers: res.headers, served: method === 'HEAD' ? 'head' : 'not-modified' });
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
    const inspection = new PayloadInspection(this.settings, {
      contentEncoding: res.headers['content-encoding'],
      host: hostname,
      pathname,
      owner: this.owner,
      declaredLength: cl !== undefined && /^\d{1,15}$/.test(cl) ? Number(cl) : undefined,
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
    res.resume(); // http-mitm-proxy hands the response over paused
    res.on('end', () => {
      clearTimeout(this.idleTimer); // the body is complete: only the verdict remains
      this.idleCleared = true;
      if (this.outcome) return;
      if (!res.complete) return this.fail(gateReason('UPSTREAM_ERROR', 'upstream closed the connection before the whole body arrived'));
      this.lastByte = Date.now();
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
      return this.settle({ kind: 'verdict', verdict: r.verdict, status, headers, spool: r.spool });
    }
    this.upstream?.destroy();
    this.settle({ kind: 'block', reasons: r.reasons, verdict: r.verdict, rule: r.rule });
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
    for (const w of waiting) this.serve(w);
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

  private serve(w: Waiter): void {
    const o = this.outcome!;
    const base = { verifyMs: this.verifyMs, upstreamMs: this.lastByte - this.started };
    if (o.kind === 'block') {
      const bytes = writeBlockPage(w.res, o.reasons, w.id, w.url, o.status);
      const v = o.verdict;
      this.record(w, { served: 'blocked', status: o.status ?? 403, verdict: 'block', reasons: o.reasons, verdictData: v, bytesToClient: bytes, durations: base, rule: o.rule });
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
    // The record is written (in the file, not a buffer) before the payload's first byte leaves: a
    // payload whose record cannot be written is refused (audit.onError: block) or served anyway.
    const recorded = this.record(w, {
      served: r.kind === 'range' ? 'range' : 'full', status, verdict: 'allow', reasons: [], verdictData: o.verdict,
      bytesToClient: end - start + 1, durations: base,
    });
    if (!recorded && this.settings.auditOnError !== 'serve') {
      const why = gateReason('INTERNAL_ERROR', 'audit: the record of this transfer cannot be written, and the rules\' audit.onError is block');
      writeBlockPage(w.res, [why], w.id, w.url);
      this.record(w, { served: 'blocked', status: 403, verdict: 'block', reasons: [why], durations: base });
      return;
    }
    if (r.kind === 'range') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = end - start + 1;
    w.res.writeHead(status, headers);
    this.readers++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.readers--;
      if (this.expired && this.readers === 0) o.spool?.release();
    };
    o.spool!.pipeTo(w.res, start, end, finish);
  }

  private record(w: Waiter, r: {
    served: AuditRecord['served']; status: number; verdict: AuditRecord['verdict']; reasons: GateReason[];
    verdictData?: Verdict; inspected?: boolean; bytesToClient?: number; durations?: AuditRecord['durations']; rule?: string;
  }): boolean {
    const v = r.verdictData ?? (this.outcome?.kind === 'verdict' ? this.outcome.verdict : this.outcome?.kind === 'block' ? this.outcome.verdict : undefined);
    return this.settings.audit({
      id: w.id, kind: 'transfer', client: w.client, method: w.method, url: w.url, host: w.host,
      inspected: r.inspected ?? v !== undefined, served: r.served, status: r.status, upstreamStatus: this.upstreamStatus,
      range: w.range, bytes: v?.size, bytesToClient: r.bytesToClient, sha256: v?.sha256, format: v?.format,
      verdict: r.verdict, reasons: r.reasons, signer: v?.signer, chain: v?.chain?.map((c) => c.sha256), timestamp: v?.timestamp,
      trustChannel: this.trustChannel,
      rulesSha256: this.settings.rulesSha256, durations: r.durations ?? { upstreamMs: this.lastByte ? this.lastByte - this.started : undefined },
      shared: w.shared || undefined, rule: r.rule,
    });
  }
}

export function newAuditId(): string {
  return randomUUID();
}
