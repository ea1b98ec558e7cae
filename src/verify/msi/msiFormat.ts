import { OID } from '../oids.js';
import { reason, type VerdictReason } from '../verdict.js';
import { MalformedError } from '../malformed.js';
import { derElementLength } from '../pe/winCertificate.js';
import type { RandomAccessFormat, SignedContent } from '../format/signedFileFormat.js';
import { CompoundFile, ENTRY_STREAM, type DirectoryEntry } from './compoundFile.js';
import { DIGITAL_SIGNATURE, isSignatureStream, msiDigests, msiPrehashes, MSI_DIGITAL_SIGNATURE_EX } from './msiDigest.js';

const OLE_MAGIC = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
/** The MSI SIP's GUID {000C10F1-0000-0000-C000-000000000046}, as SpcSipInfo carries it. */
export const MSI_SIP_GUID = Buffer.from('f1100c0000000000c000000000000046', 'hex');
/** MsiDigitalSignatureEx holds one digest: anything longer is not one. */
const MAX_EX_BYTES = 64;

function findSignatureStreamsOutsideRoot(e: DirectoryEntry, isRoot: boolean): DirectoryEntry | undefined {
  for (const c of e.children) {
    if (!isRoot && isSignatureStream(c)) return c;
    const deeper = findSignatureStreamsOutsideRoot(c, false);
    if (deeper) return deeper;
  }
  return undefined;
}

/**
 * MSI and MSP packages (and any OLE compound file): the Authenticode signature is the
 * `\x05DigitalSignature` stream of the root storage; the signed digest covers every other stream's
 * bytes and the storages' CLSIDs (see msiDigest.ts), so it is computed after the last byte.
 */
export const msiFormat: RandomAccessFormat = {
  name: 'msi',
  mode: 'random-access',
  sniff: (head) => head.byteLength >= 8 && OLE_MAGIC.every((b, i) => head[i] === b),
  async read(source, limits, algorithms): Promise<SignedContent> {
    const cf = await CompoundFile.open(source);
    const misplaced = findSignatureStreamsOutsideRoot(cf.root, true);
    // osslsigncode skips such streams anywhere, Windows only in the root: refuse the ambiguity.
    if (misplaced) throw new MalformedError(`a signature stream named "${misplaced.name.toString('utf16le').slice(1)}" outside the root storage`);
    const ds = cf.root.children.find((c) => c.name.equals(DIGITAL_SIGNATURE));
    const ex = cf.root.children.find((c) => c.name.equals(MSI_DIGITAL_SIGNATURE_EX));
    if (ds && ds.type !== ENTRY_STREAM) throw new MalformedError('DigitalSignature is a storage, not a stream');
    if (ex && ex.type !== ENTRY_STREAM) throw new MalformedError('MsiDigitalSignatureEx is a storage, not a stream');
    if (!ds || ds.size === 0) {
      return { kind: 'blocked', reasons: [reason('NOT_SIGNED', ex ? 'the package has MsiDigitalSignatureEx but no DigitalSignature stream' : 'the package carries no DigitalSignature stream')] };
    }
    if (ds.size > limits.maxSignatureBytes) {
      return { kind: 'blocked', reasons: [reason('OVERSIZE', `signature of ${ds.size} bytes exceeds the ${limits.maxSignatureBytes}-byte limit`)] };
    }
    if (ex && (ex.size === 0 || ex.size > MAX_EX_BYTES)) throw new MalformedError(`MsiDigitalSignatureEx of ${ex.size} bytes is not a digest`);
    const signature = await cf.readStream(ds);
    const problems: VerdictReason[] = [];
    if (cf.trailingBytes > 0) problems.push(reason('TRAILING_DATA', `${cf.trailingBytes} bytes after the last sector the compound file allocates, outside what the signature covers`));
    const derLen = derElementLength(signature);
    if (derLen > signature.byteLength) throw new MalformedError('DigitalSignature stream shorter than its PKCS#7 blob');
    if (derLen < signature.byteLength) problems.push(reason('TRAILING_DATA', `${signature.byteLength - derLen} bytes after the PKCS#7 blob in the DigitalSignature stream`));

    let prehashes: Map<typeof algorithms[number], Buffer> | undefined;
    let digestAlgorithms = algorithms;
    if (ex) {
      const exValue = await cf.readStream(ex);
      // The pre-hash uses the signature's digest algorithm: only the algorithms of that length can match.
      digestAlgorithms = algorithms.filter((a) => (msiPrehashLength[a] ?? 0) === exValue.byteLength);
      prehashes = msiPrehashes(cf, digestAlgorithms);
      if (![...prehashes.values()].some((p) => p.equals(exValue))) {
        problems.push(reason('DIGEST_MISMATCH', 'MsiDigitalSignatureEx does not match the streams\' metadata (names, sizes or times changed after signing)'));
      }
    }
    const fileDigests = await msiDigests(cf, digestAlgorithms, prehashes);
    return {
      kind: 'signed',
      signatures: [signature.subarray(0, derLen)],
      binding: { kind: 'authenticode', dataType: OID.spcSipInfo, sipGuid: MSI_SIP_GUID, fileDigests },
      problems,
    };
  },
};

const msiPrehashLength: Record<string, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64, md5: 16 };
