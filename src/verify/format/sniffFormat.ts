export type SniffedFormat = 'pe' | 'cab' | 'msi' | 'cms' | 'unknown';

/** Bytes the sniffer wants before it decides (fewer only at end of payload). */
export const SNIFF_BYTES = 64;

const OLE_MAGIC = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
// DER of the signedData OID, as it appears near the start of a ContentInfo.
const SIGNED_DATA_OID_DER = Buffer.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);

/** Decides the format from the bytes alone: names and Content-Types are never trusted. */
export function sniffFormat(head: Uint8Array): SniffedFormat {
  if (head.byteLength >= 2 && head[0] === 0x4d && head[1] === 0x5a) return 'pe';
  if (head.byteLength >= 4 && head[0] === 0x4d && head[1] === 0x53 && head[2] === 0x43 && head[3] === 0x46) return 'cab';
  if (head.byteLength >= 8 && OLE_MAGIC.every((b, i) => head[i] === b)) return 'msi';
  if (head.byteLength >= 16 && head[0] === 0x30 && Buffer.from(head.subarray(0, 32)).includes(SIGNED_DATA_OID_DER)) return 'cms';
  return 'unknown';
}
