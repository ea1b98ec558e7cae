import type { SignedFileFormat } from './signedFileFormat.js';
import { peFormat } from '../pe/peFormat.js';
import { cabFormat } from '../cab/cabFormat.js';
import { msiFormat } from '../msi/msiFormat.js';
import { appxFormat } from '../appx/appxFormat.js';

/** Every signed file format the core verifies, in sniffing order: the one place a format is registered. */
export const SIGNED_FILE_FORMATS: readonly SignedFileFormat[] = [peFormat, cabFormat, msiFormat, appxFormat];

/** The format the first bytes announce (names and Content-Types are never trusted). */
export function formatFor(head: Uint8Array): SignedFileFormat | undefined {
  return SIGNED_FILE_FORMATS.find((f) => f.sniff(head));
}
