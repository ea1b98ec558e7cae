/** Digest and signature algorithm identifiers, mapped to node:crypto names and to the policy's view. */

export type DigestName = 'md5' | 'sha1' | 'sha256' | 'sha384' | 'sha512';

const DIGEST_BY_OID: Record<string, DigestName> = {
  '1.2.840.113549.2.5': 'md5',
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Strength order for the `best` signature mode. */
export const DIGEST_STRENGTH: Record<DigestName, number> = { md5: 0, sha1: 1, sha256: 2, sha384: 3, sha512: 4 };

export function digestFromOid(oid: string): DigestName | undefined {
  return DIGEST_BY_OID[oid];
}

export interface SignatureAlgorithm {
  /** The digest the signature scheme itself uses; undefined when it comes from the SignerInfo (rsaEncryption). */
  digest?: DigestName;
  key: 'rsa' | 'ec' | 'ed25519';
}

const SIGNATURE_BY_OID: Record<string, SignatureAlgorithm> = {
  '1.2.840.113549.1.1.1': { key: 'rsa' }, // rsaEncryption: the digest comes from the SignerInfo
  '1.2.840.113549.1.1.4': { key: 'rsa', digest: 'md5' },
  '1.2.840.113549.1.1.5': { key: 'rsa', digest: 'sha1' },
  '1.3.14.3.2.29': { key: 'rsa', digest: 'sha1' }, // old sha1WithRSASignature
  '1.2.840.113549.1.1.11': { key: 'rsa', digest: 'sha256' },
  '1.2.840.113549.1.1.12': { key: 'rsa', digest: 'sha384' },
  '1.2.840.113549.1.1.13': { key: 'rsa', digest: 'sha512' },
  '1.2.840.10045.4.1': { key: 'ec', digest: 'sha1' },
  '1.2.840.10045.4.3.2': { key: 'ec', digest: 'sha256' },
  '1.2.840.10045.4.3.3': { key: 'ec', digest: 'sha384' },
  '1.2.840.10045.4.3.4': { key: 'ec', digest: 'sha512' },
  '1.2.840.10045.2.1': { key: 'ec' }, // ecPublicKey used as a signature algorithm by some signers
  '1.3.101.112': { key: 'ed25519' },
};

export function signatureAlgorithmFromOid(oid: string): SignatureAlgorithm | undefined {
  return SIGNATURE_BY_OID[oid];
}

/** Digests the streaming verifier can compute. MD5 is never computed: it is refused before any hashing matters. */
export const COMPUTABLE_DIGESTS: readonly DigestName[] = ['sha1', 'sha256', 'sha384', 'sha512'];
