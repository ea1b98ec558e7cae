import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { issueCertificate } from '../pki/certificateFactory.js';

/**
 * http-mitm-proxy insists on loading (or, slowly, generating with a world-readable key and the
 * codeSigning EKU) a CA of its own at listen time, even though patchgate supplies every leaf from
 * its own CA. We hand it a throwaway: a private temp folder with a fresh key and a self-signed
 * certificate that nothing trusts and nothing uses, removed when the gate stops.
 */
export function makeLibraryCaDecoy(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'patchgate-libca-'));
  mkdirSync(join(dir, 'certs'), { mode: 0o700 });
  mkdirSync(join(dir, 'keys'), { mode: 0o700 });
  // RSA because the library parses the key with node-forge, which reads RSA keys only.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = issueCertificate({
    subject: { CN: 'patchgate decoy for http-mitm-proxy (unused, untrusted)' },
    key: privateKey,
    notAfter: new Date(Date.now() + 24 * 3600 * 1000),
    extensions: { basicConstraints: { cA: false }, extendedKeyUsage: { purposes: ['serverAuth'] } },
  });
  writeFileSync(join(dir, 'certs', 'ca.pem'), cert.pem, { mode: 0o600 });
  writeFileSync(join(dir, 'keys', 'ca.private.key'), privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(join(dir, 'keys', 'ca.public.key'), publicKey.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
