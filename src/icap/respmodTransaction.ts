import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from '../inspect/gateReason.js';
import type { HostRules } from '../policy/hostRules.js';
import type { HoldMode } from '../policy/rulesFile.js';
import { canonicalHost, targetHost } from '../policy/hostRules.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import { PayloadInspection, type InspectionResult, type InspectionSettings } from '../inspect/payloadInspection.js';
import { blockPage } from '../inspect/blockPage.js';
import type { Spool } from '../inspect/spool.js';
import { reportFault } from '../metrics/gateObserver.js';
import { auditUnwritten, transferRecord } from '../inspect/transferRecord.js';
import { decideResponse, isDroppedForVerifiedEntity, isHopByHop } from '../inspect/responsePolicy.js';
import { HttpHead, LAST_CHUNK, chunk, icapResponseHead, requestLine, responseStatus, type IcapRequestHead } from './icapMessage.js';

/** What every RESPMOD transaction shares: the rules, the audit trail, the limits. */
export interface RespmodContext {
  hostRules: HostRules;
  rulesSha256: string;
  istag: string;
  inspection: InspectionSettings;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
  /** Writes a record; false when it could not be written. */
  audit: (r: AuditRecord) => boolean;
  /** A payload's record cannot be written: refuse it (`block`, default) or let it through. */
  auditOnError?: 'block' | 'serve';
  debug: (obj: Record<string, unknown>, msg: string) => void;
}

/** How a transaction talks back over its ICAP connection. */
export interface TransactionIo {
  /** Address of the ICAP client (the proxy). */
  readonly peer: string;
  /** Writes response bytes; false: wait for onDrain. */
  write(parts: Buffer[]): boolean;
  onDrain(fn: () => void): void;
  /** 100 Continue after a preview: the rest of the body follows. */
  sendContinue(): void;
  /** The response is complete; `close` also closes the connection. */
  done(close: boolean): void;
  resumeInput(): void;
}

export interface RespmodRequest {
  icap: IcapRequestHead;
  reqHead?: HttpHead;
  resHead?: HttpHead;
  hasBody: boolean;
  preview: boolean;
}

/** Headers never copied from the virgin response into one we write (src/inspect/responsePolicy.ts). */
const dropForEcho = isHopByHop;
const dropForDecoded = isDroppedForVerifiedEntity;

const isIdentity = (ce: string | undefined) => !ce || ce.split(',').every((s) => !s.trim() || s.trim().toLowerCase() === 'identity');

/**
 * One RESPMOD: the response an ICAP client (Squid) got from an origin, to be judged before its
 * client sees it. Responses from hosts the rules do not inspect go back unchanged (204 where the
 * client allows it). For inspected hosts the body goes through the same PayloadInspection as the
 * proxy's: a payload is held and verified, then either left to the client (204, or the verified
 * bytes echoed back) or replaced by the proxy's 403 block page; anything that goes wrong is a
 * block, never a 204. One audit record, as the proxy writes, for every inspected response.
 */
export class RespmodTransaction {
  readonly id = randomUUID();
  private readonly started = Date.now();
  private responded = false;
  private finished = false;
  /** Preview phase: the client sent a preview and we have not asked for the rest. */
  private inPreview: boolean;
  private bodyComplete = false;
  private ieofInPreview = false;
  private readonly allow204: boolean;
  private mode: 'unchanged' | 'inspect' = 'unchanged';
  /** unchanged: answer 204 when the body is in, or echo it as it comes. */
  private echo = false;
  private inspection: PayloadInspection | undefined;
  private passEcho: 'await-204' | 'echo' | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private totalTimer: NodeJS.Timeout | undefined;
  private lastByte = 0;
  private readonly url: string;
  private readonly pathname: string;
  private readonly host: string;
  private readonly method: string;
  private readonly client: string;
  private readonly contentEncoding: string | undefined;
  private upstreamStatus: number | undefined;
  private verifyMs: number | undefined;
  private spool: Spool | undefined;
  private spoolStream: Readable | undefined;
  /** The rule's hold mode for this response (rules `hold`). */
  private readonly holdMode: HoldMode = 'whole';
  /**
   * Tail mode: `streaming` once the adapted response is under way before the verdict (its body the
   * virgin body less the withheld end), `done` once the verdict ended it.
   */
  private tail: 'off' | 'wanted' | 'next-byte' | 'streaming' | 'done' = 'off';
  private tailSent = 0;

  constructor(private readonly ctx: RespmodContext, private readonly io: TransactionIo, private readonly r: RespmodRequest) {
    this.inPreview = r.preview && r.hasBody;
    this.allow204 = /(^|,)\s*204\s*(,|$)/.test(r.icap.headers.get('allow') ?? '');
    const xClient = r.icap.headers.get('x-client-ip')?.trim();
    this.client = xClient && /^[0-9a-fA-F.:]{2,45}$/.test(xClient) ? xClient : io.peer;
    const req = r.reqHead ? requestLine(r.reqHead) : undefined;
    this.method = req?.method ?? 'GET';
    let url: URL | undefined;
    try {
      url = req ? new URL(req.target.startsWith('/') ? `http://${r.reqHead!.get('host') ?? ''}${req.target}` : req.target) : undefined;
    } catch { /* unknown below */ }
    this.url = url?.href ?? req?.target ?? '(no request head)';
    this.pathname = url?.pathname ?? '';
    this.host = url ? targetHost(url.hostname) ?? canonicalHost(url.hostname) : '';
    this.contentEncoding = r.resHead?.get('content-encoding');
    // Without a usable request head, or with a numeric spelling the rules could not match, inspect: fail closed.
    const spelled = url ? targetHost(url.hostname) : undefined;
    const decision = spelled === undefined ? { mode: 'inspect' as const } : ctx.hostRules.decide(spelled, url!.pathname);
    if (decision.mode === 'inspect') this.mode = 'inspect';
    this.holdMode = decision.rule?.hold ?? 'whole';
  }

  /** Decides what can be decided from the heads; the body (if any) follows through data()/bodyEnd(). */
  begin(): void {
    this.totalTimer = setTimeout(() => this.timeout(`transaction exceeded ${this.ctx.totalTimeoutMs} ms`), this.ctx.totalTimeoutMs);
    this.totalTimer.unref();
    this.armIdle();
    if (this.mode === 'unchanged') {
      this.ctx.debug({ client: this.client, icapClient: this.io.peer, method: this.method, url: this.url }, 'pass');
      return this.unchanged();
    }
    const res = this.r.resHead!;
    const status = responseStatus(res);
    this.upstreamStatus = status;
    // Status line and headers first: the same rules as the gate's (src/inspect/responsePolicy.ts).
    const d = decideResponse({ method: this.method, status, location: res.get('location'), url: this.url },
      (t) => this.ctx.hostRules.decide(canonicalHost(t.hostname), t.pathname).mode === 'inspect');
    if (d.kind === 'block') return this.block([d.reason]);
    if (d.kind === 'relay') {
      this.record({ served: d.served, status, verdict: 'pass', reasons: [], inspected: false, icapStatus: this.unchangedStatus });
      return this.unchanged();
    }
    const cl = this.r.resHead!.get('content-length');
    // Only with a length Squid can hold the adapted body to (see tailEnd): without one, the body is held whole.
    const tailed = this.holdMode === 'tail' && this.method === 'GET' && isIdentity(this.contentEncoding) && cl !== undefined && /^\d{1,15}$/.test(cl.trim());
    this.inspection = new PayloadInspection(this.ctx.inspection, {
      contentEncoding: this.contentEncoding,
      host: this.host,
      pathname: this.pathname,
      owner: this.client,
      declaredLength: cl !== undefined && /^\d{1,15}$/.test(cl.trim()) ? Number(cl) : undefined,
      pass: {
        start: (head, rule) => { this.rule = rule; this.passStart(head); },
        data: (c, resume) => this.passData(c, resume),
        end: () => this.passEnd(),
        error: () => this.end(true), // a response already under way cannot become a block: cut it
      },
      ...(tailed ? {
        tail: { start: () => this.tailStart(), data: (chunks: Buffer[], resume: () => void) => this.tailData(chunks, resume) },
      } : {}),
    });
    this.inspection.result.then((res) => this.onResult(res), (e: Error) => this.block([gateReason('INTERNAL_ERROR', e.message)]))
      // Answering runs here, outside the connection's guarded entries (an unhandled rejection would end the process).
      .catch((e: unknown) => {
        reportFault(this.ctx.inspection.observer, 'icap', e);
        const why = gateReason('INTERNAL_ERROR', `internal error: ${e instanceof Error ? e.message : String(e)}`);
        // Not answered yet: the block. Answered in part: the connection closes (Squid, bypass=off, fails it).
        try { if (!this.responded) this.block([why]); } catch { /* closed below */ }
        if (!this.finished) { this.abort(why); this.io.done(true); }
      });
    if (!this.r.hasBody) this.inspection.end();
    // The adapted head goes out before the body is judged, as early as the protocol lets it (Squid
    // 5.7 bug 5352: see tailStart).
    else if (tailed) this.tail = this.inPreview ? 'wanted' : 'next-byte';
  }

  /** Body bytes (de-chunked, still Content-Encoded); false: pause the connection until resumeInput(). */
  data(raw: Buffer): boolean {
    this.armIdle();
    if (this.tail === 'next-byte' && this.mode === 'inspect') {
      // The first body bytes (after our 100 Continue, if there was a preview: Squid has read the
      // 100 and parses what follows): the head goes out once the inspection has seen them.
      this.tail = 'wanted';
      const ok = this.data(raw);
      this.tailStart();
      return ok;
    }
    if (this.responded && !this.echoing) return true; // decided early: the rest is discarded
    if (this.mode === 'unchanged') {
      if (!this.echo) return true; // a 204 follows at the end: the client keeps its own copy
      const ok = this.io.write(chunk(raw));
      if (!ok) this.io.onDrain(() => this.io.resumeInput());
      return ok;
    }
    const ok = this.inspection!.push(raw);
    if (!ok) this.inspection!.onDrain(() => this.io.resumeInput());
    return ok;
  }

  private get echoing(): boolean {
    return (this.mode === 'unchanged' && this.echo) || this.passEcho === 'echo' || this.tail === 'streaming';
  }

  /** The last-chunk: the end of a preview (more may follow) or of the whole body. */
  bodyEnd(ieof: boolean): void {
    if (this.inPreview && !ieof) {
      // End of a preview: decide now if we can, else ask for the rest.
      if (this.responded) return;
      if (this.mode === 'unchanged' || this.passEcho === 'await-204') return this.noContent();
      this.inPreview = false;
      this.io.sendContinue();
      if (this.tail === 'wanted') this.tail = 'next-byte';
      return;
    }
    this.bodyComplete = true;
    if (this.inPreview && ieof) this.ieofInPreview = true;
    this.lastByte = Date.now();
    clearTimeout(this.idleTimer);
    if (this.responded && !this.echoing) return this.end(false);
    if (this.mode === 'unchanged') {
      if (this.echo) {
        this.io.write([LAST_CHUNK]);
        return this.end(false);
      }
      return this.noContent();
    }
    this.inspection!.end();
  }

  /** The connection went away (or the service stops): block what is held. */
  abort(why: GateReason): void {
    if (this.finished) return;
    this.finished = true;
    this.spoolStream?.destroy();
    if (this.mode === 'inspect') {
      if (!this.responded) this.record({ served: 'client-aborted', status: 0, verdict: 'block', reasons: [why] });
      else if (this.tail === 'streaming') this.record({ served: 'client-aborted', status: this.upstreamStatus!, verdict: 'block', reasons: [why], bytesToClient: this.tailSent, hold: 'tail' });
      // An allowed payload was recorded before its first byte left.
      else if (this.passEcho === 'echo') this.record({ served: 'client-aborted', status: this.upstreamStatus!, verdict: 'pass', reasons: [], inspected: false, bytesToClient: this.passBytes });
    }
    this.responded = true;
    this.inspection?.fail(why);
    this.cleanup();
  }

  /** Blocks a payload still waiting for its verdict (the service stops); anything else is left to finish. */
  failHeld(why: GateReason): void {
    if (this.mode !== 'inspect' || (this.responded && this.tail !== 'streaming') || this.finished) return;
    if (this.inspection) this.inspection.fail(why);
    else this.block([why]);
  }

  // ---- outcomes ----

  /** How unchanged() answers: 204 (the client keeps its copy) or 200 with the body echoed. */
  private get unchangedStatus(): number {
    return !this.r.hasBody || this.inPreview || this.allow204 ? 204 : 200;
  }

  /** Leave the response as it is: 204 where the client allows it, else echo the body as it comes. */
  private unchanged(): void {
    const noBody = !this.r.hasBody;
    if (noBody || this.inPreview || this.allow204) {
      if (noBody) return this.noContent();
      return; // a 204 is sent at the end of the preview or of the body
    }
    this.echo = true;
    this.respond200(this.r.resHead!.edit(dropForEcho), true);
  }

  private noContent(): void {
    if (this.responded) return;
    this.responded = true;
    this.io.write([icapResponseHead(204, [['ISTag', this.ctx.istag], ['Encapsulated', 'null-body=0']])]);
    if (this.passEcho === 'await-204') this.record({ served: 'passed', status: this.upstreamStatus!, verdict: 'pass', reasons: [], inspected: false, icapStatus: 204 });
    this.end(false);
  }

  private respond200(head: HttpHead, withBody: boolean): void {
    this.responded = true;
    const http = head.serialize();
    const enc = withBody ? `res-hdr=0, res-body=${http.byteLength}` : `res-hdr=0, null-body=${http.byteLength}`;
    this.io.write([icapResponseHead(200, [['ISTag', this.ctx.istag], ['Encapsulated', enc]]), http]);
  }

  private block(reasons: GateReason[], verdict?: Verdict): void {
    if (this.responded) return;
    const page = blockPage(reasons, this.id, this.url);
    const head = new HttpHead(`HTTP/1.1 403 ${page.statusText}`, Object.entries(page.headers).map(([k, v]) => [k, String(v)]));
    this.respond200(head, true);
    this.io.write([...chunk(page.body), LAST_CHUNK]);
    this.record({ served: 'blocked', status: 403, verdict: 'block', reasons, verdictData: verdict, bytesToClient: page.body.byteLength, icapStatus: 200 });
    // Answered before the body's end: the connection closes (the client cannot reuse it mid-body).
    this.end(false);
  }

  private onResult(r: InspectionResult): void {
    if (this.tail === 'streaming' && r.kind !== 'pass') return this.tailEnd(r);
    if (this.responded && r.kind !== 'pass') {
      if (r.kind === 'verdict') r.spool?.release(); // answered (or aborted) meanwhile: nobody reads it
      return;
    }
    if (r.kind === 'pass') return; // the pass sink carries it
    if (r.kind === 'block') {
      this.rule = r.rule;
      return this.block(r.reasons, r.verdict);
    }
    // allow
    this.verifyMs = r.verifyMs;
    const verdict = r.verdict;
    const use204 = isIdentity(this.contentEncoding) && (this.allow204 || this.ieofInPreview);
    // The record is written before the payload is released (audit.onError decides when it cannot be).
    const recorded = this.record({ served: 'full', status: this.upstreamStatus!, verdict: 'allow', reasons: [], verdictData: verdict, bytesToClient: verdict.size, icapStatus: use204 ? 204 : 200 });
    if (!recorded && this.ctx.auditOnError !== 'serve') {
      r.spool?.release();
      return this.block([auditUnwritten()]);
    }
    if (use204) {
      // The client's own copy is byte for byte what was verified.
      r.spool?.release();
      this.responded = true;
      this.io.write([icapResponseHead(204, [['ISTag', this.ctx.istag], ['Encapsulated', 'null-body=0']])]);
      return this.end(false);
    }
    this.allowed = verdict;
    // Echo the verified bytes (decoded: what was verified is what is delivered).
    const head = this.r.resHead!.edit(dropForDecoded, [
      ['Content-Length', String(verdict.size)], ['X-Patchgate-Verdict', 'allow'], ['X-Patchgate-Audit-Id', this.id],
    ]);
    this.respond200(head, true);
    this.spool = r.spool;
    this.sendSpool(r.spool!, 0);
  }

  /** The verified bytes from `from` on, then the last chunk. */
  private sendSpool(spool: Spool, from: number): void {
    const stream = spool.read(from);
    this.spoolStream = stream;
    stream.on('data', (d: Buffer) => {
      if (!this.io.write(chunk(d))) {
        stream.pause();
        this.io.onDrain(() => stream.resume());
      }
    });
    stream.on('error', (e) => {
      if (this.finished) return;
      this.record({ served: 'client-aborted', status: this.upstreamStatus!, verdict: 'block', reasons: [gateReason('INTERNAL_ERROR', `spool: ${e.message}`)], hold: this.holdMode === 'tail' && from > 0 ? 'tail' : undefined });
      this.end(true);
    });
    stream.on('end', () => {
      if (this.finished) return;
      this.io.write([LAST_CHUNK]);
      this.end(false);
    });
  }

  // ---- tail mode: the adapted body flows back as the virgin body arrives, its end withheld ----

  /**
   * Tail mode: the adapted response starts before the body is judged, with the virgin response's
   * head and its Content-Length (tail mode applies only to identity bodies with one); its body is
   * the virgin body less the withheld end (src/inspect/tailHold.ts), or nothing before the verdict
   * for a format held whole. On a block the adapted body ends short of that length, so Squid aborts
   * its client's transfer.
   *
   * The head goes out as early as the protocol lets it, because Squid 5.7 stalls otherwise (bug
   * 5352, docs/icap-squid.md): until it has parsed an ICAP response head, Squid's ModXact keeps the
   * virgin body it has written to us in its 64 KiB pipe (for a retry or a bypass), so the pipe fills
   * from a fast origin, and a read that finds it full is parked on the store entry's deferred reads,
   * which nothing kicks while the client has no adapted byte to take. So: with the first body bytes
   * (the format and plan are then known from them, for `X-Patchgate-Hold`); after a preview, not at
   * its end (that would end the virgin body), and not together with the 100 Continue either (Squid
   * parses one head per read and would leave ours unparsed in its buffer until more bytes come),
   * but with the first body bytes after it, when Squid has read the 100.
   *
   * `X-Patchgate-Hold: tail` when the body streams, `whole` when this payload is held whole (no
   * body byte before the verdict): the printed Squid configuration gives a tail-mode host's
   * response the delay pool Squid 5.7 needs while no adapted byte flows only when it says `whole`
   * (squidConfig.ts).
   */
  private tailStart(): void {
    if (this.responded || this.finished || this.tail === 'next-byte') return;
    if (this.inPreview) {
      this.tail = 'wanted';
      return;
    }
    this.tail = 'streaming';
    const hold = this.inspection?.heldWholeBecause !== undefined ? 'whole' : 'tail';
    const head = this.r.resHead!.edit(dropForDecoded, [
      ['Content-Length', this.r.resHead!.get('content-length')!.trim()], ['X-Patchgate-Hold', hold], ['X-Patchgate-Audit-Id', this.id],
    ]);
    this.respond200(head, true);
  }

  private tailData(chunks: Buffer[], resume: () => void): boolean {
    if (this.tail !== 'streaming' || this.finished) return true;
    let ok = true;
    for (const c of chunks) {
      this.tailSent += c.byteLength;
      ok = this.io.write(chunk(c)) && ok;
    }
    if (!ok) this.io.onDrain(resume);
    return ok;
  }

  /** The verdict of a streaming payload: its withheld end from the spool and the last chunk, or the connection cut. */
  private tailEnd(r: Exclude<InspectionResult, { kind: 'pass' }>): void {
    this.tail = 'done';
    if (this.finished) {
      if (r.kind === 'verdict') r.spool?.release();
      return;
    }
    if (r.kind === 'verdict') {
      this.verifyMs = r.verifyMs;
      const recorded = this.record({ served: 'full', status: this.upstreamStatus!, verdict: 'allow', reasons: [], verdictData: r.verdict, bytesToClient: r.verdict.size, icapStatus: 200, hold: 'tail' });
      if (!recorded && this.ctx.auditOnError !== 'serve') {
        r.spool?.release();
        this.record({ served: 'blocked', status: this.upstreamStatus!, verdict: 'block', reasons: [auditUnwritten()], bytesToClient: this.tailSent, icapStatus: 200, hold: 'tail' });
        this.io.write([LAST_CHUNK]); // short of the length: Squid aborts the client's transfer (see below)
        return this.end(false);
      }
      this.allowed = r.verdict;
      this.spool = r.spool;
      return this.sendSpool(r.spool!, this.tailSent);
    }
    this.rule = r.rule;
    this.record({ served: 'blocked', status: this.upstreamStatus!, verdict: 'block', reasons: r.reasons, verdictData: r.verdict, bytesToClient: this.tailSent, icapStatus: 200, hold: 'tail' });
    // The adapted body ends short of the Content-Length its head declared: Squid aborts its client's
    // transfer there (and caches nothing). The ICAP response itself is complete, so that Squid counts
    // no failure of the service: closing the connection instead would, and with the printed
    // `icap_service_failure_limit 1` two blocks in a row would suspend the service (500 for every
    // update download until it revives).
    this.io.write([LAST_CHUNK]);
    this.end(false);
  }

  // ---- content that is not a payload, on an inspected host (the rules pass it) ----

  private passStart(head: Buffer): void {
    if (this.tail === 'streaming') {
      // Not a payload after all, and the rules pass it: the response under way carries it unchanged.
      this.tail = 'done';
      this.passEcho = 'echo';
      if (head.byteLength) this.io.write(chunk(head));
      this.passBytes = head.byteLength;
      return;
    }
    if (this.responded) return;
    if (this.inPreview || this.allow204) {
      this.passEcho = 'await-204'; // answered at the end of the preview or of the body
      return;
    }
    this.passEcho = 'echo';
    this.respond200(this.r.resHead!.edit(dropForDecoded, [['X-Patchgate-Verdict', 'pass'], ['X-Patchgate-Audit-Id', this.id]]), true);
    if (head.byteLength) this.io.write(chunk(head));
    this.passBytes = head.byteLength;
  }

  private passBytes = 0;
  private allowed: Verdict | undefined;

  private passData(c: Buffer, resume: () => void): boolean {
    if (this.passEcho !== 'echo') return true;
    this.passBytes += c.byteLength;
    const ok = this.io.write(chunk(c));
    if (!ok) this.io.onDrain(resume);
    return ok;
  }

  private passEnd(): void {
    if (this.passEcho === 'await-204') {
      if (!this.responded) this.noContent();
      return;
    }
    if (this.passEcho !== 'echo' || this.finished) return;
    this.io.write([LAST_CHUNK]);
    this.record({ served: 'passed', status: this.upstreamStatus!, verdict: 'pass', reasons: [], inspected: false, bytesToClient: this.passBytes, icapStatus: 200 });
    this.end(false);
  }

  // ---- plumbing ----

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (this.bodyComplete || !this.r.hasBody) return;
    this.idleTimer = setTimeout(() => this.timeout(`ICAP client idle for ${this.ctx.idleTimeoutMs} ms`), this.ctx.idleTimeoutMs);
    this.idleTimer.unref();
  }

  private timeout(message: string): void {
    if (this.finished) return;
    if (this.mode === 'inspect' && (!this.responded || this.tail === 'streaming')) {
      this.inspection?.fail(gateReason('TIMEOUT', message));
      if (!this.inspection) this.block([gateReason('TIMEOUT', message)]);
      return;
    }
    // Unchanged or already answered: nothing to protect, but do not keep the connection forever.
    this.finished = true;
    this.cleanup();
    this.io.done(true);
  }

  private end(close: boolean): void {
    if (this.finished) return;
    this.finished = true;
    this.cleanup();
    this.io.done(close);
  }

  private cleanup(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.totalTimer);
    this.inspection?.dispose();
    this.spool?.release();
  }

  get inFlight(): boolean { return !this.finished && this.mode === 'inspect' && (!this.responded || this.tail === 'streaming'); }
  get spoolBytes(): number { return this.inspection?.spoolBytes ?? this.spool?.heldBytes ?? 0; }

  /** The rule that decided content the verifier does not check (audit `rule`). */
  private rule: string | undefined;

  private record(x: {
    served: AuditRecord['served']; status: number; verdict: AuditRecord['verdict']; reasons: GateReason[];
    verdictData?: Verdict; inspected?: boolean; bytesToClient?: number; toClientMs?: number; icapStatus?: number; hold?: AuditRecord['hold'];
  }): boolean {
    return this.ctx.audit(transferRecord(
      { id: this.id, client: this.client, method: this.method, url: this.url, host: this.host, upstreamStatus: this.upstreamStatus, rulesSha256: this.ctx.rulesSha256, trustChannel: this.inspection?.channel },
      { ...x, rule: this.rule, icapClient: this.io.peer, durations: { upstreamMs: (this.lastByte || Date.now()) - this.started, verifyMs: this.verifyMs, toClientMs: x.toClientMs } },
    ));
  }
}
