import { readFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { normaliseFingerprint, normaliseThumbprint, type PinnedCertificate } from '../verify/approvedCaPolicy.js';
import { RulesError, type PinnedEntry } from './rulesFile.js';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/** Reads every certificate of a PEM or DER file; errors are RulesErrors naming the file. */
export function readCertificateFile(path: string): Uint8Array[] {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new RulesError(`cannot read certificate ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const text = bytes.toString('latin1');
  const ders: Uint8Array[] = [];
  if (text.includes('-----BEGIN CERTIFICATE-----')) {
    for (const m of text.matchAll(PEM_BLOCK)) ders.push(new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')));
  } else {
    ders.push(new Uint8Array(bytes));
  }
  if (!ders.length) throw new RulesError(`${path} holds no certificate`);
  for (const der of ders) {
    try {
      new X509Certificate(der);
    } catch (err) {
      throw new RulesError(`${path} is not a valid PEM or DER certificate: ${(err as Error).message}`);
    }
  }
  return ders;
}

export function pinCertificateFile(path: string): PinnedCertificate[] {
  return readCertificateFile(path).map((der) => ({ sha256: createHash('sha256').update(der).digest('hex'), der, label: path }));
}

/** A rules entry (file and/or fingerprint) as pins; a file and a fingerprint given together must agree. */
export function pinEntry(entry: PinnedEntry, what: string): PinnedCertificate[] {
  const fp = entry.sha256 !== undefined ? normaliseFingerprint(entry.sha256) : undefined;
  if (entry.sha256 !== undefined && !fp) throw new RulesError(`${what}: "${entry.sha256}" is not a SHA-256 fingerprint (64 hex digits)`);
  if (entry.file) {
    const pins = pinCertificateFile(entry.file);
    if (fp && !pins.some((p) => p.sha256 === fp)) {
      throw new RulesError(`${what}: ${entry.file} does not match its sha256 ${fp} (it is ${pins.map((p) => p.sha256).join(', ')})`);
    }
    return fp ? pins.filter((p) => p.sha256 === fp) : pins;
  }
  return [{ sha256: fp!, label: entry.name ? `${entry.name} (fingerprint)` : `fingerprint ${fp}` }];
}

/**
 * A distrust list: one certificate fingerprint per line (SHA-256; a 40-digit SHA-1 thumbprint is
 * accepted too, as Microsoft publishes them); colons, spaces and case ignored; `#` comments.
 */
export function parseDistrustList(text: string, path: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const fp = normaliseThumbprint(line);
    if (!fp) throw new RulesError(`${path}:${i + 1}: not a SHA-256 fingerprint (or SHA-1 thumbprint): "${line}"`);
    out.push(fp);
  });
  return out;
}

export function readDistrustFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RulesError(`cannot read distrust list ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseDistrustList(text, path);
}
