import type { PayloadFormat, Verdict, VerdictReason } from '../verify/verdict.js';

/**
 * One audit record: one line of JSON per response to a client for an inspected resource (and per
 * CONNECT to a pinned host). The README's "Audit records" section documents every field.
 */
export interface AuditRecord {
  /** Unique id, also sent to the client in X-Patchgate-Audit-Id and in block pages. */
  id: string;
  kind: 'transfer' | 'connect';
  client: string;
  method: string;
  url: string;
  host: string;
  /** Was the payload verified (PE/CAB/MSI/CMS sniffed) or passed as non-payload content? */
  inspected: boolean;
  /** What the client got: the whole entity, a range, headers only, a block page, a tunnel. */
  served: 'full' | 'range' | 'head' | 'not-modified' | 'redirect' | 'passed' | 'blocked' | 'tunnel' | 'unsatisfiable' | 'client-aborted';
  status: number;
  upstreamStatus?: number;
  range?: string;
  bytes?: number;
  bytesToClient?: number;
  sha256?: string;
  format?: PayloadFormat;
  verdict: 'allow' | 'block' | 'pass';
  reasons: VerdictReason[];
  signer?: Verdict['signer'];
  chain?: string[];
  timestamp?: Verdict['timestamp'];
  /** The trust channel (rules `channels`) whose anchors judged the payload, when channels are in use. */
  trustChannel?: string;
  rulesSha256: string;
  durations: { upstreamMs?: number; verifyMs?: number; toClientMs?: number };
  /** ICAP only: the address of the ICAP client (the proxy that asked), and the ICAP status answered (204: the proxy sends its own copy). */
  icapClient?: string;
  icapStatus?: number;
  /** true when this client was served from a download another request started (or a verified cache entry). */
  shared?: boolean;
}
