import { Ajv, type ErrorObject } from 'ajv';
import { ALL_REASON_CODES } from '../verify/reasonCodes.js';
import { AUDIT_LEVEL } from './auditChain.js';
import { WPAD_FINDINGS, WPAD_PROTOCOLS } from './auditRecord.js';

const hex64 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const str = { type: 'string' } as const;
const nonNegInt = { type: 'integer', minimum: 0 } as const;
const ms = { type: 'number', minimum: 0 } as const;

/**
 * The JSON Schema of one audit line, as `patchgate audit verify` checks it: pino's fields, `prev`,
 * and the AuditRecord (src/audit/auditRecord.ts). The "Audit records" table of docs/audit.md documents it
 * (test/docs/auditFields.test.ts checks that it names exactly these fields).
 * Unknown top-level fields are refused: a line has exactly the fields this version writes.
 */
export const AUDIT_LINE_SCHEMA = {
  type: 'object',
  required: ['level', 'time', 'prev', 'msg', 'id', 'kind', 'client', 'method', 'url', 'host', 'inspected', 'served', 'status', 'verdict', 'reasons', 'rulesSha256', 'durations'],
  additionalProperties: false,
  properties: {
    level: { const: AUDIT_LEVEL },
    time: nonNegInt,
    prev: hex64,
    msg: { enum: ['transfer', 'connect'] },
    id: { type: 'string', minLength: 1 },
    kind: { enum: ['transfer', 'connect'] },
    client: str,
    method: { type: 'string', minLength: 1 },
    url: { type: 'string', minLength: 1 },
    host: str,
    inspected: { type: 'boolean' },
    served: { enum: ['full', 'range', 'head', 'not-modified', 'redirect', 'passed', 'blocked', 'tunnel', 'unsatisfiable', 'client-aborted'] },
    status: { type: 'integer', minimum: 0, maximum: 999 },
    upstreamStatus: { type: 'integer', minimum: 0, maximum: 999 },
    range: str,
    bytes: nonNegInt,
    bytesToClient: nonNegInt,
    sha256: hex64,
    format: { enum: ['pe', 'cab', 'msi', 'msix', 'cms-detached', 'ctl', 'catalog', 'ctl-cab', 'unknown'] },
    verdict: { enum: ['allow', 'block', 'pass'] },
    reasons: {
      type: 'array',
      items: { type: 'object', required: ['code', 'message'], additionalProperties: false, properties: { code: { enum: ALL_REASON_CODES }, message: str } },
    },
    signer: {
      type: 'object', required: ['subject', 'issuer', 'serial', 'sha256'],
      properties: { subject: str, issuer: str, serial: str, sha256: hex64 },
    },
    chain: { type: 'array', items: hex64 },
    timestamp: { type: 'object', required: ['time', 'authority'], properties: { time: str, authority: str } },
    trustChannel: str,
    rulesSha256: { type: 'string', minLength: 1 },
    durations: {
      type: 'object', additionalProperties: false,
      properties: { upstreamMs: ms, verifyMs: ms, toClientMs: ms, releaseMs: ms },
    },
    shared: { type: 'boolean' },
    hold: { enum: ['whole', 'tail'] },
    rule: { type: 'string', minLength: 1 },
    icapClient: str,
    icapStatus: { type: 'integer', minimum: 100, maximum: 999 },
  },
} as const;

/** A line of kind `wpad` (a WPAD guard finding, WpadAuditRecord): pino's fields, `prev`, the finding. */
export const WPAD_LINE_SCHEMA = {
  type: 'object',
  required: ['level', 'time', 'prev', 'msg', 'id', 'kind', 'finding', 'protocol', 'interface', 'asked', 'responder', 'addresses', 'message'],
  additionalProperties: false,
  properties: {
    level: { const: AUDIT_LEVEL },
    time: nonNegInt,
    prev: hex64,
    msg: { const: 'wpad' },
    id: { type: 'string', minLength: 1 },
    kind: { const: 'wpad' },
    finding: { enum: WPAD_FINDINGS },
    protocol: { enum: WPAD_PROTOCOLS },
    interface: str,
    asked: str,
    responder: str,
    addresses: { type: 'array', items: str },
    pacUrl: str,
    updateUrl: str,
    pacResult: str,
    message: str,
  },
} as const;

const ajv = new Ajv({ allErrors: false, strict: true, strictRequired: false });
const validateTransfer = ajv.compile(AUDIT_LINE_SCHEMA);
const validateWpad = ajv.compile(WPAD_LINE_SCHEMA);

const describe = (e: ErrorObject): string => {
  const at = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : '';
  if (e.keyword === 'required') return `missing field "${(e.params as { missingProperty: string }).missingProperty}"${at ? ` in ${at}` : ''}`;
  if (e.keyword === 'additionalProperties') return `unexpected field "${(e.params as { additionalProperty: string }).additionalProperty}"${at ? ` in ${at}` : ''}`;
  return `${at || 'line'} ${e.message ?? 'is invalid'}`;
};

/** Undefined when `v` is a valid audit line (parsed), else what is wrong with it. */
export function auditLineProblem(v: unknown): string | undefined {
  const validate = (v as { kind?: unknown } | null)?.kind === 'wpad' ? validateWpad : validateTransfer;
  if (!validate(v)) return describe(validate.errors![0]!);
  const o = v as { msg: string; kind: string };
  if (o.msg !== o.kind) return `msg "${o.msg}" differs from kind "${o.kind}"`;
  return undefined;
}
