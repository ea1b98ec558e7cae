import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadRulesFile } from '../policy/rulesFile.js';
import { buildPolicy } from '../policy/buildPolicy.js';
import { buildTrustChannels } from '../policy/trustChannels.js';
import { anchorRows, trustWarnings, ROLE_SIGNS } from '../policy/trustReport.js';
import { parseDistrustList } from '../policy/trustMaterial.js';
import { Verifier } from '../verify/verifier.js';
import { singleCabinetFile } from '../verify/ctl/cabinetFile.js';
import { parseAt } from './verifyCommand.js';
import { UsageError } from './usageError.js';

const day = (d?: Date) => (d ? d.toISOString().slice(0, 10) : '?');

/** `patchgate trust list`: every anchor, its fingerprint, validity and what it may sign; warnings last. */
export function runTrustList(args: { rules: string; at?: string; json?: boolean }, out: (l: string) => void, err: (l: string) => void): number {
  const now = parseAt(args.at);
  const loaded = loadRulesFile(args.rules);
  const policy = buildPolicy(loaded);
  const channels = buildTrustChannels(loaded, policy);
  const rows = anchorRows(loaded, policy, now, channels);
  const warnings = trustWarnings(rows);
  if (args.json) {
    out(JSON.stringify({ at: now.toISOString(), anchors: rows.map((r) => ({ ...r, signs: ROLE_SIGNS[r.role], notBefore: r.notBefore?.toISOString(), notAfter: r.notAfter?.toISOString() })), warnings }));
  } else {
    for (const r of rows) {
      out(`${r.role.padEnd(10)} ${r.name}`);
      out(`           sha256 ${r.sha256}`);
      out(`           valid  ${r.notBefore ? `${day(r.notBefore)} .. ${day(r.notAfter)}` : 'unknown (pinned by fingerprint; matched in the signature\'s own bag)'}  [${r.status}]`);
      out(`           signs  ${ROLE_SIGNS[r.role]}${r.channels.length ? `; channels: ${r.channels.join(', ')}` : '; in no channel'}`);
    }
  }
  for (const w of warnings) err(`patchgate: warning: ${w}`);
  return 0;
}

/**
 * `patchgate trust import-ctl FILE --out DISTRUST`: verifies a certificate trust list (Microsoft's
 * disallowedcert.stl, or disallowedcertstl.cab) under the rules' CTL anchors, then adds its entries
 * (certificate thumbprints) to a distrust file that the rules' distrustFiles can name.
 */
export function runImportCtl(args: { rules: string; file: string; out: string; at?: string }, out: (l: string) => void): number {
  const now = parseAt(args.at);
  const policy = buildPolicy(loadRulesFile(args.rules));
  let bytes: Buffer;
  try {
    bytes = readFileSync(args.file);
  } catch (e) {
    throw new UsageError(`cannot read ${args.file}: ${(e as NodeJS.ErrnoException).code}`);
  }
  // A cabinet goes through the verifier's cabinet path; a bare .stl straight to the CTL check.
  let der: Uint8Array = bytes;
  if (bytes.subarray(0, 4).toString('latin1') === 'MSCF') {
    try {
      der = singleCabinetFile(bytes, policy.limits.maxSignatureBytes).data;
    } catch (e) {
      out(`BLOCK  ${args.file}: not imported`);
      out(`  reason   MALFORMED: trust-list cabinet: ${(e as Error).message}`);
      return 1;
    }
  }
  const { verdict, list } = new Verifier(policy).trustList(der, { now });
  if (verdict.verdict !== 'allow' || !list || list.isCatalog) {
    out(`BLOCK  ${args.file}: not imported`);
    for (const r of verdict.reasons) out(`  reason   ${r.code}: ${r.message}`);
    if (list?.isCatalog) out('  reason   UNSUPPORTED_FORMAT: a catalog lists files, not certificates');
    return 1;
  }
  const existing = existsSync(args.out) ? parseDistrustList(readFileSync(args.out, 'utf8'), args.out) : [];
  const have = new Set(existing);
  const fresh: string[] = [];
  for (const s of list.subjects) {
    const hex = Buffer.from(s.identifier).toString('hex');
    if ((hex.length === 40 || hex.length === 64) && !have.has(hex)) {
      have.add(hex);
      fresh.push(hex);
    }
  }
  const header = `# ${fresh.length} entries from ${args.file} (usage ${list.subjectUsage.join(', ')}; sequence ${list.sequenceNumber ?? '-'}; thisUpdate ${list.thisUpdate.toISOString()}; signed by ${verdict.signer?.subject ?? '?'}; verified ${now.toISOString()})`;
  const prior = existsSync(args.out) ? readFileSync(args.out, 'utf8') : '# patchgate distrust list: certificate fingerprints (SHA-256) or thumbprints (SHA-1), one per line\n';
  writeFileSync(args.out, `${prior.replace(/\n?$/, '\n')}${header}\n${fresh.map((h) => `${h}\n`).join('')}`);
  out(`ALLOW  ${args.file}: ${list.subjects.length} entries, ${fresh.length} new, written to ${args.out}`);
  out(`  signer   ${verdict.signer?.subject ?? '?'}`);
  out(`  chain    ${(verdict.chain ?? []).map((c) => /CN=([^,]+)/.exec(c.subject)?.[1] ?? c.subject).join(' -> ')}`);
  out(`  use it   distrustFiles: [${args.out}] in the rules file`);
  return 0;
}
