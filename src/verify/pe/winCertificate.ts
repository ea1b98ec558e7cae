import { MalformedError } from '../malformed.js';
import { readDerHeader } from '../derHeader.js';
import { reason, type VerdictReason } from '../verdict.js';

/** WIN_CERTIFICATE wRevision and wCertificateType of an Authenticode entry (the lab signer writes them too). */
export const WIN_CERT_REVISION_2_0 = 0x0200;
export const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;

/** Length of the DER element at the start of `b` (tag + length + value), or throws. */
export function derElementLength(b: Uint8Array): number {
  if (b.byteLength < 2) throw new MalformedError('signature too short');
  if (b[0] !== 0x30) throw new MalformedError('signature does not start with a SEQUENCE');
  // A non-minimal length is read here as it is: the strict DER scan of the blob refuses it.
  const h = readDerHeader(b, 0);
  if (h.ok) return h.end;
  if (h.problem === 'indefinite') throw new MalformedError('indefinite length signature');
  if (h.problem === 'length-too-long') throw new MalformedError('signature length field too large');
  throw new MalformedError('signature length truncated');
}

export interface CertificateTable {
  /** Each WIN_CERTIFICATE entry's PKCS#7 blob, in table order (the first is what Windows evaluates). */
  entries: Uint8Array[];
  /** TRAILING_DATA findings: padding beyond alignment, non-zero padding, bytes that are no entry. */
  problems: VerdictReason[];
}

/** Entries beyond this many are refused: real files carry one, dual-signed UEFI binaries two. */
export const MAX_TABLE_ENTRIES = 8;

/**
 * Reads the WIN_CERTIFICATE table strictly: each entry is one PKCS#7 blob followed by at most 7
 * zero bytes that reach 8-byte alignment, and nothing else (CVE-2013-3900 hid data in that slack).
 */
export function parseCertificateTable(table: Uint8Array): CertificateTable {
  const entries: Uint8Array[] = [];
  const problems: VerdictReason[] = [];
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  let at = 0;
  while (at < table.byteLength) {
    const left = table.byteLength - at;
    if (left < 8) {
      problems.push(reason('TRAILING_DATA', `${left} bytes after the last WIN_CERTIFICATE entry`));
      break;
    }
    if (entries.length >= MAX_TABLE_ENTRIES) throw new MalformedError(`more than ${MAX_TABLE_ENTRIES} WIN_CERTIFICATE entries`);
    const dwLength = view.getUint32(at, true);
    const revision = view.getUint16(at + 4, true);
    const type = view.getUint16(at + 6, true);
    if (entries.length > 0 && dwLength === 0 && table.subarray(at).every((b) => b === 0)) {
      problems.push(reason('TRAILING_DATA', `${left} zero bytes after the last WIN_CERTIFICATE entry`));
      break;
    }
    if (revision !== WIN_CERT_REVISION_2_0) throw new MalformedError(`WIN_CERTIFICATE revision 0x${revision.toString(16)}`);
    if (type !== WIN_CERT_TYPE_PKCS_SIGNED_DATA) throw new MalformedError(`WIN_CERTIFICATE type ${type} is not PKCS#7 SignedData`);
    if (dwLength < 8 || dwLength > left) throw new MalformedError(`WIN_CERTIFICATE length ${dwLength} does not fit the table`);
    const body = table.subarray(at + 8, at + dwLength);
    const derLen = derElementLength(body);
    if (derLen > body.byteLength) throw new MalformedError(`PKCS#7 blob (${derLen} bytes) longer than its WIN_CERTIFICATE (${body.byteLength})`);
    entries.push(body.subarray(0, derLen));
    const next = Math.min(table.byteLength, at + ((dwLength + 7) & ~7));
    const slack = table.subarray(at + 8 + derLen, next);
    if (slack.byteLength >= 8) {
      problems.push(reason('TRAILING_DATA', `WIN_CERTIFICATE entry ${entries.length} holds ${slack.byteLength} bytes after its PKCS#7 blob (more than alignment padding: CVE-2013-3900)`));
    } else if (slack.some((x) => x !== 0)) {
      problems.push(reason('TRAILING_DATA', `non-zero alignment padding after WIN_CERTIFICATE entry ${entries.length}`));
    }
    at = next;
  }
  return { entries, problems };
}
