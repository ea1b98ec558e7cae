import type { ReasonCode } from '../verify/reasonCodes.js';

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
  /** An inspected transfer failed because of the upstream (error, early close, forged 206, stall). */
  upstreamError(code: Extract<ReasonCode, 'UPSTREAM_ERROR' | 'TIMEOUT'>): void;
}
