import { OID } from '../oids.js';
import { reason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import type { StreamingFormat } from '../format/signedFileFormat.js';
import { derElementLength } from '../pe/winCertificate.js';
import { parseCabLayout, type CabLayout } from './cabLayout.js';

/** Cabinets: the signature sits after the data, located by the reserved header area (cbCFHeader 20). */
export const cabFormat: StreamingFormat<CabLayout> = {
  name: 'cab',
  mode: 'streaming',
  sniff: (head) => head.byteLength >= 4 && head[0] === 0x4d && head[1] === 0x53 && head[2] === 0x43 && head[3] === 0x46,
  layout(head, maxHeaderBytes) {
    const r = parseCabLayout(head, maxHeaderBytes);
    return r.kind === 'need' ? { need: r.bytes } : { layout: r.layout };
  },
  digestRanges: (l) => l.ranges,
  signatureSpan: (l) => ({ offset: l.signatureOffset, size: l.signatureSize }),
  signatures(_l, area, fileDigests) {
    // The signature area holds one DER blob plus at most 7 zero bytes of alignment, nothing else.
    const derLen = derElementLength(area);
    if (derLen > area.byteLength) throw new MalformedError('CAB signature blob longer than its area');
    const slack = area.subarray(derLen);
    const problems = slack.byteLength < 8 && slack.every((b) => b === 0) ? [] : [reason('TRAILING_DATA', `${slack.byteLength} bytes after the CAB signature's PKCS#7 blob`)];
    return { kind: 'signed', signatures: [area.subarray(0, derLen)], binding: { kind: 'authenticode', dataType: OID.spcCabData, fileDigests }, problems };
  },
};
