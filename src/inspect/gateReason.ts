import type { GateReasonCode } from '../verify/reasonCodes.js';

/**
 * A reason the shell (gate, ICAP service, inspection pipeline) records: a core verdict's reason, or
 * one of the shell's own codes (UPSTREAM_ERROR, TIMEOUT, ACCESS_DENIED, BAD_REQUEST), which a
 * Verdict can never carry. A core VerdictReason is a GateReason as it is.
 */
export interface GateReason {
  code: GateReasonCode;
  message: string;
}

export function gateReason(code: GateReasonCode, message: string): GateReason {
  return { code, message };
}
