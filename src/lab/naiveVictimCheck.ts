import { parsePeLayout } from '../verify/pe/peLayout.js';
import { parseCertificateTable } from '../verify/pe/winCertificate.js';
import { parseSignedData, findSignerCertificate } from '../verify/cms/signedDataParts.js';
import { checkSignature } from '../verify/chain/signatureCheck.js';
import { digestFromOid } from '../verify/algorithms.js';
import type { CertificateInfo } from '../verify/chain/certificateInfo.js';

export interface NaiveCheckResult {
  accepted: boolean;
  why: string;
  chain: string[];
}

/**
 * The victim's own check, the pre-2012 way, as many tools still do it: the signer's signature
 * over its attributes verifies and its certificates chain, by signature, to a root in the client's
 * trust store. Nothing more: no file digest, no EKU, no MD5 refusal, no validity, no pinning.
 * This is the client being attacked, not a verifier of patchgate's (patchgate's verdicts come only
 * from src/verify through the gate).
 */
export function naiveCheck(file: Uint8Array, trustedRoots: CertificateInfo[]): NaiveCheckResult {
  try {
    const l = parsePeLayout(file, 1 << 20);
    if (l.kind !== 'layout' || !l.layout.certTableSize) return { accepted: false, why: 'not a signed PE', chain: [] };
    const table = file.subarray(l.layout.certTableOffset, l.layout.certTableOffset + l.layout.certTableSize);
    const parts = parseSignedData(parseCertificateTable(table).entries[0]!);
    const si = parts.signers[0]!;
    const signer = findSignerCertificate(si.info, parts.certificates);
    if (!signer || !si.signedAttrsDer) return { accepted: false, why: 'no signer', chain: [] };
    const digest = digestFromOid(si.info.digestAlgorithm.algorithmId);
    if (!checkSignature(signer, si.info.signatureAlgorithm.algorithmId, si.signedAttrsDer, si.info.signature.valueBlock.valueHexView, digest).ok) {
      return { accepted: false, why: 'signer signature does not verify', chain: [signer.subject] };
    }
    const chain: CertificateInfo[] = [signer];
    const pool = [...parts.certificates, ...trustedRoots];
    for (let guard = 0; guard < 10; guard++) {
      const top = chain[chain.length - 1]!;
      const root = trustedRoots.find((r) => Buffer.from(r.subjectDer).equals(Buffer.from(top.issuerDer)) && checkSignature(r, top.signatureAlgorithmOid, top.signedPart().tbs, top.signedPart().signature).ok);
      if (root) {
        chain.push(root);
        return { accepted: true, why: `chains to trusted root "${root.subject}"`, chain: chain.map((c) => c.subject) };
      }
      const up = pool.find((c) => !chain.includes(c) && Buffer.from(c.subjectDer).equals(Buffer.from(top.issuerDer)) && checkSignature(c, top.signatureAlgorithmOid, top.signedPart().tbs, top.signedPart().signature).ok);
      if (!up) break;
      chain.push(up);
    }
    return { accepted: false, why: 'no chain to a trusted root', chain: chain.map((c) => c.subject) };
  } catch (err) {
    return { accepted: false, why: `unreadable: ${(err as Error).message}`, chain: [] };
  }
}
