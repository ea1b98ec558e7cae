import { OID } from '../oids.js';
import type { StreamingFormat } from '../format/signedFileFormat.js';
import { parsePeLayout, peDigestRanges, type PeLayout } from './peLayout.js';
import { parseCertificateTable } from './winCertificate.js';

/**
 * PE32 and PE32+: the Authenticode digest covers the file in order except CheckSum and the
 * Certificate Table entry, up to the certificate table; the table holds the signatures.
 */
export const peFormat: StreamingFormat<PeLayout> = {
  name: 'pe',
  mode: 'streaming',
  sniff: (head) => head.byteLength >= 2 && head[0] === 0x4d && head[1] === 0x5a,
  layout(head, maxHeaderBytes) {
    const r = parsePeLayout(head, maxHeaderBytes);
    return r.kind === 'need' ? { need: r.bytes } : { layout: r.layout };
  },
  digestRanges: (l) => peDigestRanges(l, Number.MAX_SAFE_INTEGER),
  signatureSpan: (l) => ({ offset: l.certTableOffset, size: l.certTableSize }),
  signatures(_l, table, fileDigests) {
    const { entries, problems } = parseCertificateTable(table);
    return { kind: 'signed', signatures: entries, binding: { kind: 'authenticode', dataType: OID.spcPeImageData, fileDigests }, problems };
  },
};
