import type { AuditRecord } from '../audit/auditRecord.js';
import type { Verdict } from '../verify/verdict.js';
import { gateReason, type GateReason } from './gateReason.js';

/** What a transfer's record says of the request and its upstream response (the same for every outcome). */
export interface TransferSubject {
  id: string;
  client: string;
  method: string;
  url: string;
  host: string;
  upstreamStatus: number | undefined;
  rulesSha256: string;
  trustChannel: string | undefined;
}

/** What became of it for this client. */
export interface TransferOutcome {
  served: AuditRecord['served'];
  status: number;
  verdict: AuditRecord['verdict'];
  reasons: GateReason[];
  /** The core's Verdict, when the payload was verified. */
  verdictData?: Verdict;
  /** Default: whether there is a Verdict. */
  inspected?: boolean;
  bytesToClient?: number;
  durations: AuditRecord['durations'];
  rule?: string;
  /** Default for a verified payload: `whole`. */
  hold?: AuditRecord['hold'];
  range?: string;
  shared?: boolean;
  icapClient?: string;
  icapStatus?: number;
}

/**
 * One transfer's audit record, as the gate (HeldDownload) and the ICAP service (RespmodTransaction)
 * write it: the Verdict's facts (size, digest, format, signer, chain, timestamp) are copied the same
 * way for both, and `hold` is set for every verified payload.
 */
export function transferRecord(t: TransferSubject, o: TransferOutcome): AuditRecord {
  const v = o.verdictData;
  const inspected = o.inspected ?? v !== undefined;
  return {
    id: t.id, kind: 'transfer', client: t.client, method: t.method, url: t.url, host: t.host,
    inspected, served: o.served, status: o.status, upstreamStatus: t.upstreamStatus,
    range: o.range, bytes: v?.size, bytesToClient: o.bytesToClient, sha256: v?.sha256, format: v?.format,
    verdict: o.verdict, reasons: o.reasons, signer: v?.signer, chain: v?.chain?.map((c) => c.sha256), timestamp: v?.timestamp,
    trustChannel: t.trustChannel, rulesSha256: t.rulesSha256, durations: o.durations,
    icapClient: o.icapClient, icapStatus: o.icapStatus,
    shared: o.shared || undefined, rule: o.rule, hold: o.hold ?? (inspected && v !== undefined ? 'whole' : undefined),
  };
}

/** Why a payload whose record cannot be written is refused (rules `audit.onError: block`): the gate and the ICAP service say it alike. */
export function auditUnwritten(): GateReason {
  return gateReason('INTERNAL_ERROR', 'audit: the record of this transfer cannot be written, and the rules\' audit.onError is block');
}
