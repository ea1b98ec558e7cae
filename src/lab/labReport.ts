import { createHash } from 'node:crypto';
import { CertificateInfo } from '../verify/chain/certificateInfo.js';
import { OID } from '../verify/oids.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import type { LabResult } from './flameLab.js';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const EKU_NAMES: Record<string, string> = { [OID.ekuCodeSigning]: 'codeSigning', [OID.ekuTimeStamping]: 'timeStamping', '1.3.6.1.5.5.7.3.1': 'serverAuth' };
const SIG_NAMES: Record<string, string> = {
  '1.2.840.113549.1.1.4': 'md5WithRSA', '1.2.840.113549.1.1.5': 'sha1WithRSA', '1.2.840.113549.1.1.11': 'sha256WithRSA', '1.2.840.10045.4.3.2': 'ecdsa-SHA256',
};

interface Box { info: CertificateInfo; marks: { text: string; bad: boolean }[] }

/** Marks each certificate of a blocked chain with what failed on it, from the gate's reasons. */
function chainBoxes(record: AuditRecord, known: Map<string, CertificateInfo>): Box[] {
  const boxes: Box[] = [];
  for (const fp of record.chain ?? []) {
    const info = known.get(fp);
    if (!info) continue;
    const marks: Box['marks'] = [];
    const about = record.reasons.filter((r) => r.message.includes(`"${info.subject}"`));
    marks.push({ text: `EKU: ${info.eku ? info.eku.map((e) => EKU_NAMES[e] ?? e).join(', ') : 'none (no extension)'}`, bad: about.some((r) => r.code === 'NO_CODESIGN_EKU') });
    marks.push({ text: `signed with ${SIG_NAMES[info.signatureAlgorithmOid] ?? info.signatureAlgorithmOid}`, bad: about.some((r) => r.code === 'WEAK_ALGORITHM') });
    marks.push({ text: `valid ${info.notBefore.toISOString().slice(0, 10)} – ${info.notAfter.toISOString().slice(0, 10)}`, bad: about.some((r) => r.code === 'CERT_EXPIRED') });
    if (info.cert.version === 0) marks.push({ text: 'X.509 v1: no extensions at all', bad: true });
    boxes.push({ info, marks });
  }
  // The issuer above the last certificate the signature carried, when the lab knows it.
  const top = boxes[boxes.length - 1]?.info;
  if (top && !top.isSelfIssued && record.verdict !== 'allow') {
    const parent = [...known.values()].find((c) => Buffer.from(c.subjectDer).equals(Buffer.from(top.issuerDer)));
    if (parent) boxes.push({ info: parent, marks: [{ text: 'not carried by the signature', bad: false }] });
  }
  return boxes;
}

function drawChain(title: string, record: AuditRecord | undefined, known: Map<string, CertificateInfo>, anchor: CertificateInfo): string {
  if (!record) return `<section><h3>${esc(title)}</h3><p>No audit record.</p></section>`;
  const boxes = chainBoxes(record, known);
  const anchored = boxes.some((b) => b.info.sha256 === anchor.sha256);
  const items = boxes.map((b, i) => {
    const isAnchor = b.info.sha256 === anchor.sha256;
    return `<div class="cert ${b.marks.some((m) => m.bad) ? 'bad' : ''} ${isAnchor ? 'anchor' : ''}">
      <div class="role">${i === 0 ? 'signer (leaf)' : isAnchor ? 'pinned anchor' : 'issuer'}</div>
      <div class="name">${esc(b.info.subject)}</div>
      <ul>${b.marks.map((m) => `<li class="${m.bad ? 'fail' : ''}">${m.bad ? '✗ ' : ''}${esc(m.text)}</li>`).join('')}</ul>
      <div class="fp">sha256 ${b.info.sha256.slice(0, 16)}…</div></div>`;
  });
  const expected = anchored ? '' : `<div class="cert expected"><div class="role">expected: the approved anchor</div><div class="name">${esc(anchor.subject)}</div><div class="fp">sha256 ${anchor.sha256.slice(0, 16)}…</div><div class="note">the chain never reaches it</div></div>`;
  const verdict = record.verdict === 'allow' ? '<span class="ok">ALLOW</span>' : `<span class="no">BLOCK</span> ${record.reasons.map((r) => `<code>${esc(r.code)}</code>`).join(' ')}`;
  return `<section><h3>${esc(title)}</h3><p>${esc(record.url)} — verdict ${verdict} — audit id <code>${esc(record.id)}</code></p>
    <div class="chain">${items.join('<div class="arrow">→</div>')}${expected ? '<div class="arrow gap">⇢</div>' + expected : ''}</div>
    ${record.reasons.length ? `<ol class="reasons">${record.reasons.map((r) => `<li><code>${esc(r.code)}</code> ${esc(r.message)}</li>`).join('')}</ol>` : ''}</section>`;
}

/** A self-contained HTML page: the narrated steps, and each chain drawn with where it failed. */
export function renderLabReport(r: LabResult): string {
  const known = new Map<string, CertificateInfo>();
  for (const c of Object.values(r.pki)) {
    const info = new CertificateInfo(c.der);
    known.set(info.sha256, info);
  }
  const anchor = new CertificateInfo(r.pki.updateCa.der);
  const inspected = r.audit.filter((a) => a.kind === 'transfer' && a.inspected);
  const blocked = inspected.find((a) => a.verdict === 'block');
  const allowed = inspected.find((a) => a.verdict === 'allow');
  const rows = r.steps.map((s) => `<tr class="${s.phase}"><td>${s.step}</td><td>${esc(s.phase)}</td><td>${esc(s.actor)}</td><td>${esc(s.answeredBy)}</td><td>${esc(s.served)}</td><td>${esc(s.verdict)}</td><td>${esc(s.reasons)}</td></tr>`);
  const digest = createHash('sha256').update(JSON.stringify(r.steps)).digest('hex').slice(0, 12);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>patchgate lab: ${esc(r.scenario)}</title><style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.4em}h3{margin-top:1.6em}code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;text-align:left}
tr.attack td{background:#fff6f6}tr.defended td{background:#f5fbf5}
.chain{display:flex;align-items:stretch;flex-wrap:wrap;gap:.3em;margin:.6em 0}
.cert{border:2px solid #8a8;border-radius:6px;padding:.5em .7em;min-width:200px;max-width:260px;background:#fbfffb}
.cert.bad{border-color:#c33;background:#fff5f5}.cert.anchor{border-color:#27a;background:#f3f8ff}
.cert.expected{border-style:dashed;border-color:#27a;background:#fff}.role{font-size:11px;text-transform:uppercase;color:#666}
.name{font-weight:600;margin:.2em 0}.cert ul{margin:.2em 0;padding-left:1.1em}.fail{color:#b00;font-weight:600}
.fp,.note{font-size:11px;color:#777}.arrow{align-self:center;font-size:22px;color:#888}.ok{color:#080;font-weight:700}.no{color:#b00;font-weight:700}
</style></head><body>
<h1>patchgate lab — Flame's man-in-the-middle update attack, scenario <code>${esc(r.scenario)}</code></h1>
<p><b>${esc(r.title)}.</b> The attacker answers the victim's <code>wpad</code> look-up, serves a PAC file that makes its proxy the victim's proxy, and swaps the targeted update for ${esc(r.attack)}.</p>
<p>Without patchgate the victim's own check (chains to a root in its store, the pre-2012 way) said: <b>${r.naive.accepted ? 'accepted — the forged update would be installed' : 'refused'}</b> (${esc(r.naive.why)}).
With patchgate in the path (the vendor's dedicated update CA pinned, the attacker still upstream) the forged update got HTTP ${r.gate.status} with <code>${esc(r.gate.reasons.join(','))}</code>,
and the genuine update arrived ${r.genuine.identical ? 'byte-identical' : 'NOT identical'}.</p>
<h2>Steps</h2><table><tr><th>#</th><th>phase</th><th>who asked</th><th>who answered</th><th>what was served</th><th>verdict</th><th>reasons</th></tr>${rows.join('')}</table>
<h2>Chains, as patchgate judged them</h2>
${drawChain('The forged update (blocked)', blocked, known, anchor)}
${drawChain('The genuine update (allowed)', allowed, known, anchor)}
<p class="note">Generated by <code>patchgate lab flame --scenario ${esc(r.scenario)}</code>; steps digest ${digest}. Everything ran on 127.0.0.1.</p>
</body></html>
`;
}
