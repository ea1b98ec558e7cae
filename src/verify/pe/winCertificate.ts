import { MalformedError } from '../malformed.js';
import { reason, type VerdictReason } from '../verdict.js';

const WIN_CERT_REVISION_2_0 = 0x0200;
const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;

/** Length of the DER element at the start of `b` (tag + length + value), or throws. */
export function derElementLength(b: Uint8Array): number {
  if (b.byteLength < 2) throw new MalformedError('signature too short');
  if (b[0] !== 0x30) throw new MalformedError('signature does not start with a SEQUENCE');
  const first = b[1]!;
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  if (n === 0) throw new MalformedError('indefinite length signature');
  if (n > 4) throw new MalformedError('signature length field too large');
  if (b.byteLength < 2 + n) throw new MalformedError('signature length truncated');
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[2 + i]!;
  return 2 + n + len;
}

export interface CertificateTable {
  pkcs7: Uint8Array;
  /** TRAILING_DATA findings: padding beyond alignment, non-zero padding, extra entries. */
  problems: VerdictReason[];
}

/**
 * Reads the WIN_CERTIFICATE table strictly: one PKCS#7 entry, at most 7 zero bytes of padding to
 * reach 8-byte alignment, nothing else (CVE-2013-3900 hid data in exactly that slack).
 */
export function parseCertificateTable(table: Uint8Array): CertificateTable {
  if (table.byteLength < 8) throw new MalformedError('certificate table shorter than a WIN_CERTIFICATE header');
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const dwLength = view.getUint32(0, true);
  const revision = view.getUint16(4, true);
  const type = view.getUint16(6, true);
  if (revision !== WIN_CERT_REVISION_2_0) throw new MalformedError(`WIN_CERTIFICATE revision 0x${revision.toString(16)}`);
  if (type !== WIN_CERT_TYPE_PKCS_SIGNED_DATA) throw new MalformedError(`WIN_CERTIFICATE type ${type} is not PKCS#7 SignedData`);
  if (dwLength < 8 || dwLength > table.byteLength) throw new MalformedError(`WIN_CERTIFICATE length ${dwLength} does not fit the ${table.byteLength}-byte table`);
  const body = table.subarray(8, dwLength);
  const derLen = derElementLength(body);
  if (derLen > body.byteLength) throw new MalformedError(`PKCS#7 blob (${derLen} bytes) longer than its WIN_CERTIFICATE (${body.byteLength})`);
  const problems: VerdictReason[] = [];
  const slack = table.subarray(8 + derLen);
  const aligned = (8 + derLen + 7) & ~7;
  if (aligned < table.byteLength) {
    const extra = table.byteLength - aligned;
    problems.push(reason('TRAILING_DATA', dwLength > aligned
      ? `WIN_CERTIFICATE holds ${dwLength - 8 - derLen} bytes after its PKCS#7 blob (more than alignment padding: CVE-2013-3900)`
      : `certificate table holds ${extra} bytes after the first WIN_CERTIFICATE (extra entries or hidden data)`));
  } else if (slack.some((x) => x !== 0)) {
    problems.push(reason('TRAILING_DATA', 'alignment padding after the PKCS#7 blob is not zero'));
  }
  return { pkcs7: body.subarray(0, derLen), problems };
}
