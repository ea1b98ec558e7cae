import type { PayloadFormat } from '../verdict.js';
import { formatFor } from './formats.js';

export type SniffedFormat = Exclude<PayloadFormat, 'cms-detached'> | 'cms';

/** Bytes the sniffer wants before it decides (fewer only at end of payload). */
export const SNIFF_BYTES = 64;

// DER of the signedData OID, as it appears near the start of a ContentInfo.
const SIGNED_DATA_OID_DER = Buffer.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);

/** Decides the format from the bytes alone (the registered formats' own sniffers): names and Content-Types are never trusted. */
export function sniffFormat(head: Uint8Array): SniffedFormat {
  const f = formatFor(head);
  if (f) return f.name as SniffedFormat;
  if (head.byteLength >= 16 && head[0] === 0x30 && Buffer.from(head.subarray(0, 32)).includes(SIGNED_DATA_OID_DER)) return 'cms';
  return 'unknown';
}
