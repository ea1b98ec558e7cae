import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from '../inspect/gateReason.js';
import type { HostRules } from '../policy/hostRules.js';
import { canonicalHost, targetHost } from '../policy/hostRules.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import { PayloadInspection, type InspectionResult, type InspectionSettings } from '../inspect/payloadInspection.js';
import { blockPage } from '../inspect/blockPage.js';
import type { Spool } from '../inspect/spool.js';
import { reportFault } from '../metrics/gateObserver.js';
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

/** Response headers never copied from the virgin response into one we write. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate']);
const dropForEcho = (n: string) => HOP_BY_HOP.has(n) || n.startsWith('x-patchgate');
const dropForDecoded = (n: string) => dropForEcho(n) || n === 'content-length' || n === 'content-encoding' || n === 'content-range' || n === 'accept-ranges';

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
    const decision = spelled === undefined ? 'inspect' : ctx.hostRules.decide(spelled, url!.pathname).mode;
    if (decision === 'inspect') this.mode = 'inspect';
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
    if (status === 206) {
      return this.block([gateReason('UPSTREAM_ERROR', 'the origin answered 206 Partial Content: a partial body cannot be verified (Squid: range_offset_limit -1 for update hosts)')]);
    }
    const location = res.get('location');
    if (status >= 300 && status < 400 && location) {
      let target: URL | undefined;
      try { target = new URL(location, this.url); } catch { /* refused below */ }
      const ok = target && (target.protocol === 'http:' || target.protocol === 'https:') && this.ctx.hostRules.decide(canonicalHost(target.hostname), target.pathname).mode === 'inspect';
      if (!ok) return this.block([gateReason('UPSTREAM_ERROR', `redirect to ${location}, a host the rules do not inspect`)]);
      this.record({ served: 'redirect', status, verdict: 'pass', reasons: [], inspected: false, icapStatus: this.unchangedStatus });
      return this.unchanged();
    }
    if (this.method === 'HEAD' || status === 204 || status === 304 || status < 200) {
      this.record({ served: this.method === 'HEAD' ? 'head' : 'not-modified', status, verdict: 'pass', reasons: [], inspected: false, icapStatus: this.unchangedStatus });
      return this.unchanged();
    }
    const cl = this.r.resHead!.get('content-length');
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
  }

  /** Body bytes (de-chunked, still Content-Encoded); false: pause the connection until resumeInput(). */
  data(raw: Buffer): boolean {
    this.armIdle();
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
    return (this.mode === 'unchanged' && this.echo) || this.passEcho === 'echo';
  }

  /** The last-chunk: the end of a preview (more may follow) or of the whole body. */
  bodyEnd(ieof: boolean): void {
    if (this.inPreview && !ieof) {
      // End of a preview: decide now if we can, else ask for the rest.
      if (this.responded) return;
      if (this.mode === 'unchanged' || this.passEcho === 'await-204') return this.noContent();
      this.inPreview = false;
      this.io.sendContinue();
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
      // An allowed payload was recorded before its first byte left.
      else if (this.passEcho === 'echo') this.record({ served: 'client-aborted', status: this.upstreamStatus!, verdict: 'pass', reasons: [], inspected: false, bytesToClient: this.passBytes });
    }
    this.responded = true;
    this.inspection?.fail(why);
    this.cleanup();
  }

  /** Blocks a payload still waiting for its verdict (the service stops); anything else is left to finish. */
  failHeld(why: GateReason): void {
    if (this.mode !== 'inspect' || this.responded || this.finished) return;
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
      return this.block([gateReason('INTERNAL_ERROR', 'audit: the record of this transfer cannot be written, and the rules\' audit.onError is block')]);
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
    const stream = r.spool!.read();
    this.spoolStream = stream;
    stream.on('data', (d: Buffer) => {
      if (!this.io.write(chunk(d))) {
        stream.pause();
        this.io.onDrain(() => stream.resume());
      }
    });
    stream.on('error', (e) => {
      if (this.finished) return;
      this.record({ served: 'client-aborted', status: this.upstreamStatus!, verdict: 'block', reasons: [gateReason('INTERNAL_ERROR', `spool: ${e.message}`)] });
      this.end(true);
    });
    stream.on('end', () => {
      if (this.finished) return;
      this.io.write([LAST_CHUNK]);
      this.end(false);
    });
  }

  // ---- content that is not a payload, on an inspected host (the rules pass it) ----

  private passStart(head: Buffer): void {
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
    if (this.mode === 'inspect' && !this.responded) {
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

  get inFlight(): boolean { return !this.finished && this.mode === 'inspect' && !this.responded; }
  get spoolBytes(): number { return this.inspection?.spoolBytes ?? this.spool?.heldBytes ?? 0; }

  /** The rule that decided content the verifier does not check (audit `rule`). */
  private rule: string | undefined;

  private record(x: {
    served: AuditRecord['served']; status: number; verdict: AuditRecord['verdict']; reasons: GateReason[];
    verdictData?: Verdict; inspected?: boolean; bytesToClient?: number; toClientMs?: number; icapStatus?: number;
  }): boolean {
    const v = x.verdictData;
    return this.ctx.audit({
      id: this.id, kind: 'transfer', client: this.client, method: this.method, url: this.url, host: this.host,
      inspected: x.inspected ?? v !== undefined, served: x.served, status: x.status, upstreamStatus: this.upstreamStatus,
      bytes: v?.size, bytesToClient: x.bytesToClient, sha256: v?.sha256, format: v?.format,
      verdict: x.verdict, reasons: x.reasons, signer: v?.signer, chain: v?.chain?.map((c) => c.sha256), timestamp: v?.timestamp,
      trustChannel: this.inspection?.channel,
      rulesSha256: this.ctx.rulesSha256,
      durations: { upstreamMs: (this.lastByte || Date.now()) - this.started, verifyMs: this.verifyMs, toClientMs: x.toClientMs },
      icapClient: this.io.peer, icapStatus: x.icapStatus, rule: this.rule,
    });
  }
}
