import type { PayloadFormat, Verdict } from '../verify/verdict.js';
import type { GateReason } from '../inspect/gateReason.js';

/**
 * One audit record: one line of JSON per response to a client for an inspected resource (and per
 * CONNECT to a pinned host). docs/audit.md "Audit records" documents every field.
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
  reasons: GateReason[];
  signer?: Verdict['signer'];
  chain?: string[];
  timestamp?: Verdict['timestamp'];
  /** The trust channel (rules `channels`) whose anchors judged the payload, when channels are in use. */
  trustChannel?: string;
  rulesSha256: string;
  durations: { upstreamMs?: number; verifyMs?: number; toClientMs?: number; releaseMs?: number };
  /** ICAP only: the address of the ICAP client (the proxy that asked), and the ICAP status answered (204: the proxy sends its own copy). */
  icapClient?: string;
  icapStatus?: number;
  /**
   * The rule that decided content the verifier does not check: `nonPayload` (metadata passed or
   * blocked), `unverifiable:NAME`, `unsignedDeltas`, `unrecognised` (blocked: neither a verified
   * format nor metadata).
   */
  rule?: string;
  /**
   * How this client got an inspected payload: `whole` (nothing before the verdict) or `tail`
   * (streamed as it arrived, its end withheld until the verdict; a block cuts the transfer).
   */
  hold?: 'whole' | 'tail';
  /** true when this client was served from a download another request started (or a verified cache entry). */
  shared?: boolean;
}

/** What `patchgate wpad-guard` found (docs/wpad-guard.md): stable strings. */
export const WPAD_FINDINGS = ['random-name-answered', 'unexpected-wpad-responder', 'pac-diverts-updates'] as const;
export type WpadFinding = (typeof WPAD_FINDINGS)[number];
export const WPAD_PROTOCOLS = ['dns', 'llmnr', 'nbns', 'mdns', 'http'] as const;
export type WpadProtocol = (typeof WPAD_PROTOCOLS)[number];

/**
 * One finding of the WPAD guard, in the same hash chain as the gate's records. Every string in it
 * that came from the network is kept as received (JSON escapes it); the stderr line escapes it.
 */
export interface WpadAuditRecord {
  id: string;
  kind: 'wpad';
  finding: WpadFinding;
  /** How the answer came: a name protocol, or `http` for a PAC file's verdict. */
  protocol: WpadProtocol;
  /** The interface probed (`dns` probes go through the host's routing: empty). */
  interface: string;
  /** The name asked for (`wpad`, `wpad.corp.example`, or the random name). */
  asked: string;
  /** The address the answer (or the PAC file) came from. */
  responder: string;
  /** The addresses the answer gave for the name. */
  addresses: string[];
  /** pac-diverts-updates: the PAC's URL, the update URL evaluated, and FindProxyForURL's answer (or the evaluation error). */
  pacUrl?: string;
  updateUrl?: string;
  pacResult?: string;
  message: string;
}

/** Any line of the audit chain. */
export type AuditLine = AuditRecord | WpadAuditRecord;
