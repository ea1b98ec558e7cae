import { X509Certificate } from 'node:crypto';
import type { ApprovedCaPolicy, PinnedCertificate } from '../verify/approvedCaPolicy.js';
import type { LoadedRules, PinnedEntry } from './rulesFile.js';
import type { TrustChannels } from './trustChannels.js';
import { pinEntry } from './trustMaterial.js';

export type AnchorRole = 'code' | 'timestamp' | 'trust-list';

/** What an anchor of each role may sign (for `trust list`). */
export const ROLE_SIGNS: Record<AnchorRole, string> = {
  code: 'code and catalogs (leaf and CAs below: codeSigning EKU)',
  timestamp: 'timestamps (leaf and CAs below: timeStamping EKU)',
  'trust-list': 'certificate trust lists (leaf and CAs below: root-list-signer EKU 1.3.6.1.4.1.311.10.3.9)',
};

export interface AnchorRow {
  role: AnchorRole;
  name: string;
  sha256: string;
  /** Known only when the rules give the certificate itself. */
  notBefore?: Date;
  notAfter?: Date;
  status: 'valid' | 'expiring' | 'expired' | 'not-yet-valid' | 'fingerprint-only';
  /** Channels (host patterns) where this anchor applies. */
  channels: string[];
}

/** An anchor expiring within this many days is flagged. */
export const EXPIRY_WARNING_DAYS = 90;
const DAY = 24 * 3600 * 1000;

function rowFor(role: AnchorRole, name: string | undefined, pin: PinnedCertificate, now: Date): AnchorRow {
  let notBefore: Date | undefined;
  let notAfter: Date | undefined;
  if (pin.der) {
    const c = new X509Certificate(pin.der);
    name ??= /CN=([^\n,]+)/.exec(c.subject)?.[1] ?? c.subject;
    notBefore = new Date(c.validFrom);
    notAfter = new Date(c.validTo);
  }
  let status: AnchorRow['status'] = 'fingerprint-only';
  if (notBefore && notAfter) {
    if (now < notBefore) status = 'not-yet-valid';
    else if (now > notAfter) status = 'expired';
    else if (notAfter.getTime() - now.getTime() < EXPIRY_WARNING_DAYS * DAY) status = 'expiring';
    else status = 'valid';
  }
  return { role, name: name ?? pin.label, sha256: pin.sha256, notBefore, notAfter, status, channels: [] };
}

/**
 * Every anchor in force (the policy's, command-line overrides included, and the channels' own),
 * named as the rules name it, with its validity at `now` and the channels where it applies.
 */
export function anchorRows(loaded: LoadedRules, policy: ApprovedCaPolicy, now: Date, channels?: TrustChannels): AnchorRow[] {
  const r = loaded.rules;
  const names = new Map<string, string>();
  const entries: PinnedEntry[] = [...r.anchors, ...(r.tsaAnchors ?? []), ...(r.ctlAnchors ?? [])];
  for (const c of r.channels ?? []) {
    if (Array.isArray(c.anchors)) entries.push(...c.anchors);
    if (Array.isArray(c.ctlAnchors)) entries.push(...c.ctlAnchors);
  }
  for (const e of entries) if (e.name) for (const p of pinEntry(e, e.name)) names.set(p.sha256, e.name);
  const rows: AnchorRow[] = [];
  const add = (role: AnchorRole, pins: PinnedCertificate[], channel?: string) => {
    for (const p of pins) {
      let row = rows.find((x) => x.role === role && x.sha256 === p.sha256);
      if (!row) rows.push((row = rowFor(role, names.get(p.sha256), p, now)));
      if (channel && !row.channels.includes(channel)) row.channels.push(channel);
    }
  };
  add('code', policy.anchors);
  add('timestamp', policy.tsaAnchors);
  add('trust-list', policy.ctlAnchors ?? []);
  for (const ch of channels?.all() ?? []) {
    add('code', ch.policy.anchors, ch.name);
    add('timestamp', ch.policy.tsaAnchors, ch.name);
    add('trust-list', ch.policy.ctlAnchors ?? [], ch.name);
  }
  return rows;
}

/**
 * Warnings about the trust store at `now`: anchors expired or expiring within 90 days, and above
 * all, no code-signing anchor valid now (then only timestamped payloads signed before the expiry
 * can pass: every new release is blocked). Fingerprint-only anchors have unknown validity.
 */
export function trustWarnings(rows: AnchorRow[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    if (r.status === 'expired') out.push(`${r.role} anchor "${r.name}" (${r.sha256.slice(0, 16)}…) expired ${r.notAfter!.toISOString()}: it approves only signatures whose timestamp proves an earlier signing time`);
    if (r.status === 'expiring') out.push(`${r.role} anchor "${r.name}" (${r.sha256.slice(0, 16)}…) expires ${r.notAfter!.toISOString()}, within ${EXPIRY_WARNING_DAYS} days: add its successor (docs/trust.md "Adding an anchor")`);
    if (r.status === 'not-yet-valid') out.push(`${r.role} anchor "${r.name}" is not valid before ${r.notBefore!.toISOString()}`);
  }
  const code = rows.filter((r) => r.role === 'code');
  if (!code.some((r) => r.status === 'valid' || r.status === 'expiring')) {
    const unknown = code.filter((r) => r.status === 'fingerprint-only').length;
    out.push(`no approved code-signing anchor is valid now${unknown ? ` (${unknown} pinned by fingerprint only, validity unknown)` : ''}: payloads signed from now on will be blocked`);
  }
  return out;
}
