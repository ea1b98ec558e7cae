import { verify as cryptoVerify } from 'node:crypto';
import { signatureAlgorithmFromOid, type DigestName } from '../algorithms.js';
import type { CertificateInfo } from './certificateInfo.js';

export type SignatureCheck =
  | { ok: true; digest: DigestName | undefined }
  | { ok: false; why: 'invalid' | 'unsupported' | 'key'; detail: string; digest?: DigestName };

/**
 * Verifies `signature` over `data` with the key of `signer`, using node:crypto. MD5 is verified
 * too: the lab shows a forged MD5 signature that is valid yet refused by policy, so refusing
 * MD5 is the policy's job, not this function's.
 */
export function checkSignature(
  signer: CertificateInfo,
  algorithmOid: string,
  data: Uint8Array,
  signature: Uint8Array,
  digestFromSignerInfo?: DigestName,
): SignatureCheck {
  const alg = signatureAlgorithmFromOid(algorithmOid);
  if (!alg) return { ok: false, why: 'unsupported', detail: `signature algorithm ${algorithmOid}` };
  const digest = alg.digest ?? digestFromSignerInfo;
  const key = signer.publicKey();
  if (!key) {
    return { ok: false, why: 'key', detail: `public key of "${signer.subject}" cannot be used`, digest };
  }
  const keyType = key.asymmetricKeyType;
  if ((alg.key === 'rsa' && keyType !== 'rsa') || (alg.key === 'ec' && keyType !== 'ec') || (alg.key === 'ed25519' && keyType !== 'ed25519')) {
    return { ok: false, why: 'invalid', detail: `signature algorithm ${algorithmOid} does not match a ${keyType} key`, digest };
  }
  if (alg.key !== 'ed25519' && !digest) {
    return { ok: false, why: 'unsupported', detail: `no digest for signature algorithm ${algorithmOid}` };
  }
  try {
    const ok = cryptoVerify(alg.key === 'ed25519' ? null : digest!, data, key, signature);
    return ok ? { ok: true, digest } : { ok: false, why: 'invalid', detail: 'signature does not verify', digest };
  } catch (err) {
    return { ok: false, why: 'invalid', detail: `signature check failed: ${(err as Error).message}`, digest };
  }
}
