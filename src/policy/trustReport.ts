import { X509Certificate } from 'node:crypto';
import type { PinnedCertificate } from '../verify/approvedCaPolicy.js';
import type { LoadedRules, PinnedEntry } from './rulesFile.js';
import { pinEntry } from './trustMaterial.js';
import type { TrustChannels } from './trustChannels.js';

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

function rowFor(role: AnchorRole, entry: PinnedEntry, pin: PinnedCertificate, now: Date): AnchorRow {
  let name = entry.name;
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

/** Every anchor the rules name (code, timestamp, trust list, and channels' own), with its validity at `now`. */
export function anchorRows(loaded: LoadedRules, now: Date, channels?: TrustChannels): AnchorRow[] {
  const r = loaded.rules;
  const rows: AnchorRow[] = [];
  const add = (role: AnchorRole, entries: PinnedEntry[] | undefined, what: string) =>
    (entries ?? []).forEach((e, i) => pinEntry(e, `${what}[${i}]`).forEach((p) => {
      if (!rows.some((x) => x.role === role && x.sha256 === p.sha256)) rows.push(rowFor(role, e, p, now));
    }));
  add('code', r.anchors, 'anchors');
  add('timestamp', r.tsaAnchors, 'tsaAnchors');
  add('trust-list', r.ctlAnchors, 'ctlAnchors');
  (r.channels ?? []).forEach((c, i) => {
    if (Array.isArray(c.anchors)) add('code', c.anchors, `channels[${i}].anchors`);
    if (Array.isArray(c.ctlAnchors)) add('trust-list', c.ctlAnchors, `channels[${i}].ctlAnchors`);
  });
  if (channels) {
    for (const ch of channels.all()) {
      const label = ch.name;
      for (const p of ch.policy.anchors) rows.find((x) => x.role === 'code' && x.sha256 === p.sha256)?.channels.push(label);
      for (const p of ch.policy.ctlAnchors ?? []) rows.find((x) => x.role === 'trust-list' && x.sha256 === p.sha256)?.channels.push(label);
      for (const p of ch.policy.tsaAnchors) {
        const row = rows.find((x) => x.role === 'timestamp' && x.sha256 === p.sha256);
        if (row && !row.channels.includes(label)) row.channels.push(label);
      }
    }
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
    if (r.status === 'expiring') out.push(`${r.role} anchor "${r.name}" (${r.sha256.slice(0, 16)}…) expires ${r.notAfter!.toISOString()}, within ${EXPIRY_WARNING_DAYS} days: add its successor (README "Adding an anchor")`);
    if (r.status === 'not-yet-valid') out.push(`${r.role} anchor "${r.name}" is not valid before ${r.notBefore!.toISOString()}`);
  }
  const code = rows.filter((r) => r.role === 'code');
  if (!code.some((r) => r.status === 'valid' || r.status === 'expiring')) {
    const unknown = code.filter((r) => r.status === 'fingerprint-only').length;
    out.push(`no approved code-signing anchor is valid now${unknown ? ` (${unknown} pinned by fingerprint only, validity unknown)` : ''}: payloads signed from now on will be blocked`);
  }
  return out;
}
