import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AuditLine } from '../audit/auditRecord.js';
import { faultText, type FaultSite, type GateObserver, type IcapCloseReason } from './gateObserver.js';

/** What the gate tells on demand (read at each scrape): UpdateGate has both getters. */
export interface GateGauges {
  readonly inFlight: number;
  readonly spoolBytes: number;
}

export interface GateMetricsOptions {
  /** SHA-256 of the rules file, exported as patchgate_rules_info{sha256}. */
  rulesSha256?: string;
  /** Also export prom-client's process and Node.js metrics (process_*, nodejs_*). */
  defaultMetrics?: boolean;
  /** Where faults are told (the CLI: stderr, the journal under systemd). */
  log?: (line: string) => void;
}

/** The last fault of a kind, for /healthz. */
export interface FaultState {
  count: number;
  last?: { where: FaultSite; message: string; at: string };
}

/** How long after a spool write error /healthz says `degraded`. */
export const SPOOL_FAULT_DEGRADED_MS = 5 * 60_000;

/** Buckets of the verify-latency histogram, in seconds: the core answers in well under a second. */
export const VERIFY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * The gate's metrics, in Prometheus' text format, on a private registry (never prom-client's
 * global one, so several gates in one process keep their own counts). Fed by three sources:
 * every audit record (`observeRecord`, subscribed to the AuditLog), the gate's observer hooks
 * (bytes through the verifier, verifications, upstream failures), and the gate's getters read at
 * scrape time (holds in flight, spool bytes). docs/metrics.md lists every name.
 */
export class GateMetrics implements GateObserver {
  readonly registry = new Registry();
  private gauges: GateGauges | undefined;

  private readonly transfers = new Counter({
    name: 'patchgate_transfers_total',
    help: 'Responses to clients for inspected resources (one per audit record of kind transfer), by verdict and first reason code ("none" when allowed or passed).',
    labelNames: ['verdict', 'reason'] as const,
    registers: [this.registry],
  });
  private readonly blockReasons = new Counter({
    name: 'patchgate_block_reasons_total',
    help: 'Reason codes of blocked responses: a response blocked for several reasons counts under each.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly connects = new Counter({
    name: 'patchgate_connects_total',
    help: 'CONNECTs audited (tunnels to pinned hosts, refused interceptions), by verdict.',
    labelNames: ['verdict'] as const,
    registers: [this.registry],
  });
  private readonly servedBytes = new Counter({
    name: 'patchgate_served_bytes_total',
    help: 'Body bytes sent to clients for inspected resources (verified entities, ranges, passed content, block pages).',
    registers: [this.registry],
  });
  private readonly inspectedBytes = new Counter({
    name: 'patchgate_inspected_bytes_total',
    help: 'Payload bytes run through the signature verifier (decoded), once per upstream download.',
    registers: [this.registry],
  });
  private readonly verifications = new Counter({
    name: 'patchgate_verifications_total',
    help: 'Payloads verified (once per upstream download, however many clients it served), by verdict.',
    labelNames: ['verdict'] as const,
    registers: [this.registry],
  });
  private readonly verifySeconds = new Histogram({
    name: 'patchgate_verify_duration_seconds',
    help: 'Time from the last payload byte to the verdict.',
    buckets: VERIFY_BUCKETS,
    registers: [this.registry],
  });
  private readonly releaseSeconds = new Histogram({
    name: 'patchgate_release_duration_seconds',
    help: 'Time from the last body byte read from upstream to the gate starting the response of a client waiting for it (its share of the wait after the last byte).',
    buckets: VERIFY_BUCKETS,
    registers: [this.registry],
  });
  private readonly internalErrors = new Counter({
    name: 'patchgate_internal_errors_total',
    help: 'Exceptions caught at an entry point (where: request, response, connect, tunnel, websocket, icap, admin): the request concerned failed, the process carried on.',
    labelNames: ['where'] as const,
    registers: [this.registry],
  });
  private readonly spoolErrors = new Counter({
    name: 'patchgate_spool_errors_total',
    help: 'Spool file errors (code: the errno, e.g. ENOSPC, EROFS, EACCES): each ended its hold at once, blocked INTERNAL_ERROR.',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  private readonly auditReopenErrors = new Counter({
    name: 'patchgate_audit_reopen_errors_total',
    help: 'Audit log reopens (SIGHUP) that failed: the old file stays open and records go on to it.',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  private readonly icapClosed = new Counter({
    name: 'patchgate_icap_connections_closed_total',
    help: 'ICAP connections patchgate icap closed or refused to protect itself: refused-peer (not in --allow-peer), head-timeout (request head not complete in time, 408), reclaimed (an idle or slow-head connection closed to free a slot), busy (503, no slot).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  /** Faults by kind, for /healthz. */
  readonly faults: { internal: FaultState; spool: FaultState; audit: FaultState } = { internal: { count: 0 }, spool: { count: 0 }, audit: { count: 0 } };
  private readonly log: ((line: string) => void) | undefined;
  private readonly upstreamErrors = new Counter({
    name: 'patchgate_upstream_errors_total',
    help: 'Inspected downloads failed because of the upstream: UPSTREAM_ERROR (error, early close, forged 206) or TIMEOUT (stalled, too long).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(o: GateMetricsOptions = {}) {
    const self = this;
    this.log = o.log;
    new Gauge({
      name: 'patchgate_holds_in_flight',
      help: 'Held transfers waiting for their verdict.',
      registers: [this.registry],
      collect() { this.set(self.gauges?.inFlight ?? 0); },
    });
    new Gauge({
      name: 'patchgate_spool_bytes',
      help: 'Bytes of held and cached payloads in the spool (memory and disk).',
      registers: [this.registry],
      collect() { this.set(self.gauges?.spoolBytes ?? 0); },
    });
    if (o.rulesSha256 !== undefined) {
      new Gauge({ name: 'patchgate_rules_info', help: 'The rules file in force (value 1).', labelNames: ['sha256'] as const, registers: [this.registry] }).set({ sha256: o.rulesSha256 }, 1);
    }
    // Series that exist from the start, so that rate() and alerts see a 0 before the first event.
    for (const verdict of ['allow', 'pass'] as const) this.transfers.inc({ verdict, reason: 'none' }, 0);
    for (const verdict of ['allow', 'block'] as const) this.verifications.inc({ verdict }, 0);
    for (const reason of ['UPSTREAM_ERROR', 'TIMEOUT'] as const) this.upstreamErrors.inc({ reason }, 0);
    for (const where of ['request', 'response', 'connect', 'tunnel', 'websocket', 'icap', 'admin'] as const) this.internalErrors.inc({ where }, 0);
    if (o.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** The audit trail whose state the audit gauges report. */
  watchAudit(audit: { readonly state: { writable: boolean; writeFailures: number } }): this {
    new Gauge({
      name: 'patchgate_audit_writable', help: '1 while audit records reach the file, 0 from a failed write until one succeeds again.',
      registers: [this.registry], collect() { this.set(audit.state.writable ? 1 : 0); },
    });
    new Gauge({
      name: 'patchgate_audit_write_failures_total', help: 'Audit records that could not be written (disk full, I/O error) since start.',
      registers: [this.registry], collect() { this.set(audit.state.writeFailures); },
    });
    return this;
  }

  /** The gate whose holds and spool the gauges report (set once the gate exists). */
  watch(gauges: GateGauges): this {
    this.gauges = gauges;
    return this;
  }

  /** Every audit record: subscribe with `audit.subscribe((r) => metrics.observeRecord(r))`. */
  observeRecord(r: AuditLine): void {
    if (r.kind === 'wpad') return; // counted by WpadMetrics (src/wpad/wpadMetrics.ts)
    if (r.kind === 'connect') {
      this.connects.inc({ verdict: r.verdict });
      return;
    }
    this.transfers.inc({ verdict: r.verdict, reason: r.verdict === 'block' ? r.reasons[0]?.code ?? 'none' : 'none' });
    if (r.verdict === 'block') for (const code of new Set(r.reasons.map((x) => x.code))) this.blockReasons.inc({ reason: code });
    if (r.bytesToClient) this.servedBytes.inc(r.bytesToClient);
  }

  inspected(bytes: number): void {
    this.inspectedBytes.inc(bytes);
  }

  verified(verifyMs: number, verdict: 'allow' | 'block'): void {
    this.verifications.inc({ verdict });
    this.verifySeconds.observe(verifyMs / 1000);
  }

  released(releaseMs: number): void {
    this.releaseSeconds.observe(releaseMs / 1000);
  }

  upstreamError(code: 'UPSTREAM_ERROR' | 'TIMEOUT'): void {
    this.upstreamErrors.inc({ reason: code });
  }

  icapConnectionClosed(why: IcapCloseReason): void {
    this.icapClosed.inc({ reason: why });
  }

  fault(where: FaultSite, err: unknown): void {
    const message = faultText(err);
    const code = String((err as NodeJS.ErrnoException | undefined)?.code ?? 'unknown');
    const kind = where === 'spool' ? 'spool' : where === 'audit' ? 'audit' : 'internal';
    if (kind === 'spool') this.spoolErrors.inc({ code });
    else if (kind === 'audit') this.auditReopenErrors.inc({ code });
    else this.internalErrors.inc({ where });
    const f = this.faults[kind];
    f.count++;
    f.last = { where, message, at: new Date().toISOString() };
    // An audit reopen failure is told by the SIGHUP handler, with what to do about it.
    if (kind === 'audit') return;
    const what = kind === 'spool' ? 'spool write failed (the hold is blocked INTERNAL_ERROR)' : `internal error while handling a ${where}`;
    this.log?.(`patchgate: ${what}: ${message}`);
  }

  /** A spool error in the last SPOOL_FAULT_DEGRADED_MS: holds may fail until the disk is fixed. */
  get spoolDegraded(): boolean {
    const at = this.faults.spool.last?.at;
    return at !== undefined && Date.now() - Date.parse(at) < SPOOL_FAULT_DEGRADED_MS;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
