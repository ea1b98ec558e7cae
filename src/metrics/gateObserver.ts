import type { ShellReasonCode } from '../verify/reasonCodes.js';

/**
 * What the gate reports as it works, for metrics: the few events that audit records cannot tell
 * (records are per client response; these are per upstream download). Every method is cheap and
 * must never throw. The gate works the same without an observer.
 */
export interface GateObserver {
  /** Payload bytes fed to the verifier (decoded), as they arrive. */
  inspected(bytes: number): void;
  /** One verification finished: once per download, however many clients it then serves. */
  verified(verifyMs: number, verdict: 'allow' | 'block'): void;
  /**
   * A client waiting for a held payload was answered: `releaseMs` from the last body byte read from
   * upstream to the gate starting that client's response (verdict, spool flush for a body read at once).
   */
  released?(releaseMs: number): void;
  /** An inspected transfer failed because of the upstream (error, early close, forged 206, stall). */
  upstreamError(code: Extract<ShellReasonCode, 'UPSTREAM_ERROR' | 'TIMEOUT'>): void;
  /**
   * patchgate itself failed: an exception caught at an entry point (`where`: request, response,
   * connect, tunnel, websocket, icap, admin), or a spool write error (`where`: spool). Counted,
   * told on stderr and shown by /healthz; the transfer concerned is blocked, the process carries on.
   */
  fault?(where: FaultSite, err: unknown): void;
  /** `patchgate icap` closed or refused a connection to protect itself (a peer not allowed, a slow head, a slot reclaimed, all busy). */
  icapConnectionClosed?(why: IcapCloseReason): void;
}

export type IcapCloseReason = 'refused-peer' | 'busy' | 'head-timeout' | 'reclaimed';

export type FaultSite = 'request' | 'response' | 'connect' | 'tunnel' | 'websocket' | 'icap' | 'admin' | 'spool' | 'audit';

/** A fault's text: an errno code first when there is one (`ENOSPC: no space left on device, write`). */
export function faultText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Where no observer is wired (the lab, in-process tests), a fault still reaches stderr: an
 * exception caught by a guard is never silent.
 */
export function reportFault(observer: GateObserver | undefined, where: FaultSite, err: unknown): void {
  try {
    if (observer?.fault) observer.fault(where, err);
    else process.stderr.write(`patchgate: internal error (${where}): ${faultText(err)}\n`);
  } catch { /* reporting never throws */ }
}
