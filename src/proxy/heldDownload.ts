import type { IncomingMessage, IncomingHttpHeaders, ServerResponse } from 'node:http';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { IncrementalVerifier } from '../verify/incrementalVerifier.js';
import { sniffFormat, SNIFF_BYTES } from '../verify/format/sniffFormat.js';
import { reason, type Verdict, type VerdictReason } from '../verify/verdict.js';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import type { GateObserver } from '../metrics/gateObserver.js';
import { Spool } from './spool.js';
import { interpretRange } from './byteRange.js';
import { writeBlockPage } from './blockPage.js';
import type { DigestJob, DigestPool } from './digestPool.js';

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
}

export interface HoldSettings {
  policy: ApprovedCaPolicy;
  spoolDir: string;
  memoryHoldBytes: number;
  maxPayloadBytes: number;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  nonPayload: 'pass' | 'block';
  unsignedDeltas: 'pass' | 'block';
  rulesSha256: string;
  audit: (r: AuditRecord) => void;
  /** Is a redirect target one the rules accept (an inspected update host)? */
  redirectAllowed: (location: URL) => boolean;
  /** Verification instant (tests); default now. */
  now?: () => Date;
  /** Metrics hooks (bytes verified, verifications, upstream failures). */
  observer?: GateObserver;
  /**
   * Worker threads for the two SHA-256 passes. Without it (or for a body whose Content-Length is
   * at most `inlineDigestBytes`, 1 MiB by default) the event loop hashes as before.
   */
  digests?: DigestPool;
  inlineDigestBytes?: number;
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
  | { kind: 'block'; reasons: VerdictReason[]; verdict?: Verdict };

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
  private streams: Readable[] = [];
  private aborted = false;
  private digestJob: DigestJob | undefined;

  constructor(key: string, private readonly settings: HoldSettings, private readonly onSettled: (d: HeldDownload, cacheable: boolean) => void) {
    this.key = key;
    this.totalTimer = setTimeout(() => this.fail(reason('TIMEOUT', `transfer exceeded ${settings.totalTimeoutMs} ms`)), settings.totalTimeoutMs);
    this.totalTimer.unref();
    this.armIdle();
  }

  get settled(): boolean { return this.outcome !== undefined; }
  /** Bytes this download holds in its spool (memory or disk) until the spool is released. */
  get spoolBytes(): number { return this.spool?.heldBytes ?? 0; }
  /** Bytes of a verified entity kept in memory (not on disk) for further requests; 0 otherwise. */
  get lingeringMemoryBytes(): number {
    const o = this.outcome;
    return o?.kind === 'verdict' && o.spool && !o.spool.onDisk && !this.expired ? o.spool.heldBytes : 0;
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
    this.record(w, { served: 'client-aborted', status: 0, verdict: 'block', reasons: [reason('UPSTREAM_ERROR', 'the client disconnected before the verdict')] });
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
    this.idleTimer = setTimeout(() => this.fail(reason('TIMEOUT', `upstream idle for ${this.settings.idleTimeoutMs} ms`)), this.settings.idleTimeoutMs);
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
    this.digestJob?.abort();
    this.clearTimers();
    for (const s of this.streams) s.destroy();
    this.upstream?.destroy();
    if (!this.upstream) this.cancel?.();
    this.spool?.release();
    this.outcome = { kind: 'block', reasons: [reason('UPSTREAM_ERROR', 'aborted')] };
    this.onSettled(this, false);
  }

  private spool: Spool | undefined;

  /** An upstream error, a timeout or a limit: block everyone waiting, with the reason. */
  fail(why: VerdictReason): void {
    if (this.outcome) return;
    if (why.code === 'UPSTREAM_ERROR' || why.code === 'TIMEOUT') this.settings.observer?.upstreamError(why.code);
    this.digestJob?.abort();
    for (const s of this.streams) s.destroy();
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

    if (status === 206) {
      res.destroy();
      return this.fail(reason('UPSTREAM_ERROR', 'upstream answered 206 Partial Content to a request without Range: a partial body is never forwarded unverified'));
    }
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      let target: URL | undefined;
      try { target = new URL(res.headers.location, this.key); } catch { /* refused below */ }
      if (!target || !this.settings.redirectAllowed(target)) {
        return this.settleNow({ kind: 'block', reasons: [reason('UPSTREAM_ERROR', `redirect to ${res.headers.location}, a host the rules do not inspect`)] });
      }
      return this.settleNow({ kind: 'relay', status, headers: res.headers, served: 'redirect' });
    }
    if (method === 'HEAD' || status === 304 || status === 204) {
      res.resume();
      return this.settleNow({ kind: 'relay', status, headers: res.headers, served: method === 'HEAD' ? 'head' : 'not-modified' });
    }

    let body: Readable = res;
    const encodings = String(res.headers['content-encoding'] ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s && s !== 'identity');
    for (const enc of encodings.reverse()) {
      const dec = enc === 'gzip' || enc === 'x-gzip' ? createGunzip() : enc === 'deflate' ? createInflate() : enc === 'br' ? createBrotliDecompress() : undefined;
      if (!dec) {
        res.destroy();
        return this.fail(reason('UNSUPPORTED_FORMAT', `unsupported Content-Encoding "${enc}"`));
      }
      this.streams.push(dec);
      body.on('error', (e) => this.fail(reason('UPSTREAM_ERROR', `upstream body: ${e.message}`)));
      body = body.pipe(dec);
    }
    // Big or unknown-length bodies are hashed by a digest thread; small ones here (a round trip costs more).
    const declared = encodings.length ? NaN : Number(res.headers['content-length']);
    const inlineMax = this.settings.inlineDigestBytes ?? 1 << 20;
    const pool = this.settings.digests;
    const offload = !!pool && !(Number.isFinite(declared) && declared <= inlineMax);
    const verifier = new IncrementalVerifier(this.settings.policy, { now: this.settings.now?.(), digests: offload ? 'external' : 'inline' });
    if (offload) this.digestJob = pool!.job(this.settings.policy);
    const job = this.digestJob;
    // The source waits while the spool or the digest thread has no room.
    let waits = 0;
    const resume = () => { if (--waits === 0 && !this.outcome) body.resume(); };
    const head: Buffer[] = [];
    let headBytes = 0;
    let mode: 'sniff' | 'hold' | 'pass' = 'sniff';
    let total = 0;

    const startHold = () => {
      mode = 'hold';
      this.spool = new Spool(this.settings.spoolDir, this.settings.memoryHoldBytes);
      for (const h of head) holdChunk(h);
    };
    const holdChunk = (chunk: Buffer) => {
      verifier.update(chunk);
      this.settings.observer?.inspected(chunk.byteLength);
      if (verifier.earlyBlock) {
        res.destroy();
        return this.fail(verifier.earlyBlock);
      }
      if (job) {
        if (job.failed) {
          res.destroy();
          return this.fail(reason('INTERNAL_ERROR', `digest thread: ${job.failed.message}`));
        }
        if (!job.update(chunk, resume)) waits++;
      }
      if (!this.spool!.write(chunk, resume)) waits++;
      if (waits > 0) body.pause();
    };

    body.on('data', (chunk: Buffer) => {
      if (this.outcome) return;
      this.armIdle();
      total += chunk.byteLength;
      const max = this.settings.maxPayloadBytes;
      if (max > 0 && total > max) {
        res.destroy();
        return this.fail(reason('OVERSIZE', `decoded body exceeds the ${max}-byte limit`));
      }
      if (mode === 'hold') return holdChunk(chunk);
      if (mode === 'pass') return this.passChunk(chunk, body);
      head.push(chunk);
      headBytes += chunk.byteLength;
      if (headBytes >= SNIFF_BYTES) this.decide(Buffer.concat(head), status, res, () => startHold(), (m) => { mode = m; });
    });
    body.on('error', (e) => this.fail(reason('UPSTREAM_ERROR', `upstream body: ${e.message}`)));
    res.on('error', (e) => this.fail(reason('UPSTREAM_ERROR', `upstream: ${e.message}`)));
    res.on('close', () => {
      if (!res.complete && !this.outcome) this.fail(reason('UPSTREAM_ERROR', 'upstream closed the connection before the whole body arrived'));
    });
    res.resume(); // http-mitm-proxy hands the response over paused
    body.on('end', () => {
      clearTimeout(this.idleTimer); // the body is complete: only the verdict remains
      this.idleCleared = true;
      if (this.outcome) return;
      if (!res.complete) return this.fail(reason('UPSTREAM_ERROR', 'upstream closed the connection before the whole body arrived'));
      this.lastByte = Date.now();
      if (mode === 'sniff') {
        this.decide(Buffer.concat(head), status, res, () => startHold(), (m) => { mode = m; });
        if (this.outcome) return;
      }
      if (mode === 'pass') return this.endPass();
      // The spool's last buffer goes to the disk (thread pool) while the verdict is computed.
      const spool = this.spool!;
      const flushed = spool.end().catch((e: Error) => { throw new Error(`spool: ${e.message}`); });
      const judge = (f: () => Verdict) => {
        const t0 = process.hrtime.bigint();
        const v = f();
        this.verifyMs = Number(process.hrtime.bigint() - t0) / 1e6;
        this.settings.observer?.verified(this.verifyMs, v.verdict);
        return v;
      };
      const verdictReady: Promise<Verdict> = job
        ? job.end().then((d) => judge(() => verifier.finishWith(d)), (e: Error) => { throw new Error(`digest thread: ${e.message}`); })
        : Promise.resolve(judge(() => verifier.finish()));
      Promise.all([verdictReady, flushed]).then(
        ([verdict]) => {
          if (this.outcome) return;
          if (verdict.verdict === 'allow') this.settle({ kind: 'verdict', verdict, status, headers: res.headers, spool });
          else this.settle({ kind: 'block', reasons: verdict.reasons, verdict });
        },
        (e: Error) => this.fail(reason('INTERNAL_ERROR', e.message)),
      );
    });
  }

  /** First bytes known: a payload is held; other content passes or blocks as the rules say. */
  private decide(head: Buffer, status: number, res: IncomingMessage, hold: () => void, setMode: (m: 'pass') => void): void {
    const format = sniffFormat(head);
    if (format !== 'unknown') return hold();
    const isDelta = /\.psf$/i.test(new URL(this.key).pathname);
    const rule = isDelta ? this.settings.unsignedDeltas : this.settings.nonPayload;
    if (rule === 'block') {
      res.destroy();
      return this.fail(reason('UNSUPPORTED_FORMAT', isDelta ? 'an unsigned Express delta (.psf): the rules block them' : 'not a PE, CAB, MSI or CMS payload, and the rules block other content on update hosts'));
    }
    // Non-payload content (metadata): streamed through to the clients already waiting, not cached.
    setMode('pass');
    this.onSettled(this, false);
    this.passing = this.waiters.splice(0);
    for (const w of this.passing) {
      const headers = { ...entityHeaders(res.headers), 'x-patchgate-verdict': 'pass', 'x-patchgate-audit-id': w.id };
      w.res.writeHead(status, headers);
      w.res.write(head);
    }
    this.passedBytes = head.byteLength;
    this.passStatus = status;
  }

  private passing: Waiter[] = [];
  private passedBytes = 0;
  private passStatus = 0;

  private passChunk(chunk: Buffer, body: Readable): void {
    this.passedBytes += chunk.byteLength;
    let ok = true;
    for (const w of this.passing) ok = w.res.write(chunk) && ok;
    if (!ok) {
      body.pause();
      let pending = this.passing.length;
      for (const w of this.passing) w.res.once('drain', () => { if (--pending === 0) body.resume(); });
    }
  }

  private endPass(): void {
    this.clearTimers();
    this.outcome = { kind: 'relay', status: this.passStatus, headers: {}, served: 'passed' };
    for (const w of this.passing) {
      w.res.end();
      this.record(w, { served: 'passed', status: this.passStatus, verdict: 'pass', reasons: [], inspected: false, bytesToClient: this.passedBytes });
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
    if (o.kind !== 'verdict') this.spool?.release();
    if (!this.lastByte) this.lastByte = Date.now();
    const waiting = this.waiters.splice(0);
    for (const w of waiting) this.serve(w);
    // Pass-through waiters of a failed pass cannot get a block page any more: cut them.
    for (const w of this.passing.splice(0)) {
      w.res.destroy();
      this.record(w, { served: 'client-aborted', status: this.passStatus, verdict: 'block', reasons: o.kind === 'block' ? o.reasons : [], inspected: false });
    }
    this.onSettled(this, o.kind === 'verdict');
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
      const bytes = writeBlockPage(w.res, o.reasons, w.id, w.url);
      const v = o.verdict;
      this.record(w, { served: 'blocked', status: 403, verdict: 'block', reasons: o.reasons, verdictData: v, bytesToClient: bytes, durations: base });
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
    w.res.writeHead(status, headers);
    const t0 = Date.now();
    this.readers++;
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      this.readers--;
      if (this.expired && this.readers === 0) o.spool?.release();
      this.record(w, {
        served: ok ? (r.kind === 'range' ? 'range' : 'full') : 'client-aborted', status, verdict: 'allow', reasons: [], verdictData: o.verdict,
        bytesToClient: ok ? end - start + 1 : undefined, durations: { ...base, toClientMs: Date.now() - t0 },
      });
    };
    o.spool!.pipeTo(w.res, start, end, finish);
  }

  private record(w: Waiter, r: {
    served: AuditRecord['served']; status: number; verdict: AuditRecord['verdict']; reasons: VerdictReason[];
    verdictData?: Verdict; inspected?: boolean; bytesToClient?: number; durations?: AuditRecord['durations'];
  }): void {
    const v = r.verdictData ?? (this.outcome?.kind === 'verdict' ? this.outcome.verdict : this.outcome?.kind === 'block' ? this.outcome.verdict : undefined);
    this.settings.audit({
      id: w.id, kind: 'transfer', client: w.client, method: w.method, url: w.url, host: w.host,
      inspected: r.inspected ?? v !== undefined, served: r.served, status: r.status, upstreamStatus: this.upstreamStatus,
      range: w.range, bytes: v?.size, bytesToClient: r.bytesToClient, sha256: v?.sha256, format: v?.format,
      verdict: r.verdict, reasons: r.reasons, signer: v?.signer, chain: v?.chain?.map((c) => c.sha256), timestamp: v?.timestamp,
      rulesSha256: this.settings.rulesSha256, durations: r.durations ?? { upstreamMs: this.lastByte ? this.lastByte - this.started : undefined },
      shared: w.shared || undefined,
    });
  }
}

export function newAuditId(): string {
  return randomUUID();
}
