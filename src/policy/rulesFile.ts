import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { RULES_SCHEMA } from './rulesSchema.js';
import { parseCidr } from './accessPolicy.js';

export interface PinnedEntry {
  file?: string;
  sha256?: string;
  name?: string;
  note?: string;
}

export interface HostRule {
  pattern: string;
  mode: 'inspect' | 'pinned' | 'pass';
  paths?: string[];
  /** Ports this host may be reached on besides the rules' `ports` lists; `any` (from `--update-host HOST`) for every port. */
  ports?: number[] | 'any';
  source?: string;
}

/** Which requests get which trust (docs/trust.md "Trust channels"); first match wins. */
export interface ChannelRule {
  name: string;
  hosts: string[];
  paths?: string[];
  anchors?: 'rules' | 'none' | PinnedEntry[];
  ctlAnchors?: 'rules' | 'none' | PinnedEntry[];
  nonPayload?: 'pass' | 'block';
  note?: string;
}

/** The rules file as written (validated), with file paths resolved against the file's folder. */
export interface Rules {
  version: 1;
  description?: string;
  anchors: PinnedEntry[];
  tsaAnchors?: PinnedEntry[];
  ctlAnchors?: PinnedEntry[];
  channels?: ChannelRule[];
  distrust?: PinnedEntry[];
  distrustFiles?: string[];
  policy?: { allowSha1?: boolean; ekuMode?: 'strict' | 'nested'; signatureMode?: 'primary' | 'best' | 'all'; minRsaBits?: number; fileDigests?: ('sha256' | 'sha384' | 'sha512')[] };
  limits?: { maxPayloadBytes?: number; maxSignatureBytes?: number; maxHeaderBytes?: number; upstreamIdleTimeoutMs?: number; totalTimeoutMs?: number; memoryHoldBytes?: number; cacheTtlMs?: number; maxSpoolBytes?: number; maxSpoolBytesPerClient?: number; tunnelIdleTimeoutMs?: number; requestHeadTimeoutMs?: number };
  hosts?: HostRule[];
  nonPayload?: 'pass' | 'block';
  unsignedDeltas?: 'pass' | 'block';
  /** Known kinds the verifier cannot check, by path pattern, each with its own pass/block. */
  unverifiable?: UnverifiableRule[];
  clients?: string[];
  passThrough?: 'forward' | 'deny';
  ports?: { connect?: number[]; http?: number[] };
  inspectAddresses?: boolean;
  audit?: { onError?: 'block' | 'serve' };
}

export interface UnverifiableRule {
  name: string;
  paths: string[];
  action: 'pass' | 'block';
  note?: string;
}

export interface LoadedRules {
  rules: Rules;
  path: string;
  /** SHA-256 of the rules file's bytes: the audit record names the exact rules it was judged by. */
  sha256: string;
}

/** A rules or trust-material problem: the CLI prints it and exits 2. */
export class RulesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RulesError';
  }
}

const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
const validate = ajv.compile(RULES_SCHEMA);

function pathSegments(instancePath: string): (string | number)[] {
  return instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** Parses and validates rules text; errors name the key and the line. */
export function parseRules(text: string, path: string): Rules {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const pos = lineCounter.linePos(e.pos[0]);
    throw new RulesError(`${path}:${pos.line}: YAML error: ${e.message.split('\n')[0]}`);
  }
  const data = doc.toJS() as unknown;
  if (!validate(data)) {
    const messages = (validate.errors ?? []).slice(0, 5).map((err) => {
      let segs = pathSegments(err.instancePath);
      let extra = '';
      if (err.keyword === 'additionalProperties') {
        const prop = (err.params as { additionalProperty: string }).additionalProperty;
        segs = [...segs, prop];
        extra = ` unknown key "${prop}"`;
      }
      let node = segs.length ? doc.getIn(segs, true) : doc.contents;
      if (!isNode(node) && err.keyword === 'additionalProperties') node = doc.getIn(segs.slice(0, -1), true);
      const offset = isNode(node) && node.range ? node.range[0] : 0;
      const line = lineCounter.linePos(offset).line;
      const key = segs.length ? segs.join('.') : '(top level)';
      return `${path}:${line}: ${key}:${extra || ' ' + err.message}`;
    });
    throw new RulesError(messages.join('\n'));
  }
  const rules = data as Rules;
  (rules.clients ?? []).forEach((c, i) => {
    if (!parseCidr(c)) {
      const node = doc.getIn(['clients', i], true);
      const line = lineCounter.linePos(isNode(node) && node.range ? node.range[0] : 0).line;
      throw new RulesError(`${path}:${line}: clients.${i}: "${c}" is not an address range (CIDR, e.g. 10.0.0.0/8)`);
    }
  });
  return rules;
}

export function loadRulesFile(path: string): LoadedRules {
  const abs = resolve(path);
  let bytes: Buffer;
  try {
    bytes = readFileSync(abs);
  } catch (err) {
    throw new RulesError(`cannot read rules file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const rules = parseRules(bytes.toString('utf8'), path);
  const base = dirname(abs);
  const fix = (e: PinnedEntry): PinnedEntry => (e.file ? { ...e, file: resolve(base, e.file) } : e);
  rules.anchors = rules.anchors.map(fix);
  rules.tsaAnchors = rules.tsaAnchors?.map(fix);
  rules.ctlAnchors = rules.ctlAnchors?.map(fix);
  rules.channels = rules.channels?.map((c) => ({
    ...c,
    anchors: Array.isArray(c.anchors) ? c.anchors.map(fix) : c.anchors,
    ctlAnchors: Array.isArray(c.ctlAnchors) ? c.ctlAnchors.map(fix) : c.ctlAnchors,
  }));
  rules.distrust = rules.distrust?.map(fix);
  rules.distrustFiles = rules.distrustFiles?.map((f) => resolve(base, f));
  return { rules, path: abs, sha256: createHash('sha256').update(bytes).digest('hex') };
}
