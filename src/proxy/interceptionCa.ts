/**
 * patchgate's own TLS interception CA. http-mitm-proxy's default CA is not used: it carries the
 * codeSigning EKU (a CA that can mint code-signing certificates, on a box whose job is to judge code
 * signatures) and writes its private key world-readable.
 *
 * This CA: EC P-256, EKU serverAuth only, pathLen 0, name-constrained to the inspected hosts (so a
 * stolen key cannot impersonate anything else to clients that enforce name constraints), key file
 * created 0600 in a 0700 directory and refused later if that stops being true. Leaf certificates
 * live in memory only (nothing is ever written under a CONNECT host name).
 *
 * Files in `dir`: ca.key.pem (PKCS#8, 0600), ca.pem (the certificate to install on clients),
 * ca.json (what it was created for: the host patterns and the derived name constraints).
 */
import { createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
  chmodSync,
  existsSync,
} from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { isIPv4 } from 'node:net';
import { canonicalHost, hostMatches, isSafeHostName } from '../policy/hostRules.js';
import { join } from 'node:path';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import {
  generateKey,
  ipAddressBytes,
  issueCertificate,
  loadPrivateKey,
  parseCertificate,
  prepareIssuer,
  type GeneralNamesSpec,
  type PreparedIssuer,
} from '../pki/certificateFactory.js';

export const CA_KEY_FILE = 'ca.key.pem';
export const CA_CERT_FILE = 'ca.pem';
export const CA_INFO_FILE = 'ca.json';

const DAY_MS = 86_400_000;
const CA_VALIDITY_YEARS = 10;
const LEAF_VALIDITY_MS = 30 * DAY_MS;
/** A cached leaf is re-issued when it has less than this left. */
const LEAF_REFRESH_MS = DAY_MS;
const DEFAULT_LEAF_CACHE = 1024;

export class InterceptionCaError extends Error {
  override name = 'InterceptionCaError';
}

export interface InterceptionCaOptions {
  /**
   * The host patterns to intercept (the rules' `inspect` patterns): `*.example.com`, `host.example.com`,
   * an IPv4 or IPv6 literal. On creation they become the CA's name constraints; on later runs they
   * narrow `covers` further (a host must be covered by both the certificate and the current list).
   * Absent: an unconstrained CA (not recommended).
   */
  permittedHosts?: string[];
  /** Most leaves kept in memory (least recently used dropped first). Default 1024. */
  leafCacheSize?: number;
}

export interface LeafCertificate {
  keyPem: string;
  certPem: string;
}

/** Name constraints as written in (and read back from) the CA certificate. */
export interface CaNameConstraints {
  permitted: { dns: string[]; ip: string[] };
  excluded: { dns: string[]; ip: string[] };
}

export interface InterceptionCa {
  readonly dir: string;
  /** ca.pem: the certificate clients must trust. */
  readonly caCertificatePath: string;
  readonly certPem: string;
  readonly certDer: Uint8Array;
  /** SHA-256 of the CA certificate's DER, lower-case hex. */
  readonly sha256: string;
  /** True when this call created the CA. */
  readonly created: boolean;
  /** The CA certificate's name constraints; undefined for an unconstrained CA. */
  readonly nameConstraints: CaNameConstraints | undefined;
  /** Current `permittedHosts` patterns the CA certificate cannot cover (the rules grew since creation). */
  readonly uncoveredHosts: string[];
  /** Whether `certificateFor(host)` would issue: a safe name, inside the CA's constraints and the current patterns. */
  covers(host: string): boolean;
  /** A leaf certificate (EC P-256, serverAuth, 30 days) for the host, from memory when cached. Throws when not covered. */
  certificateFor(host: string): LeafCertificate;
}

/** Where the CA certificate of a CA directory is (for printing install instructions). */
export function caCertificatePath(dir: string): string {
  return join(dir, CA_CERT_FILE);
}

// ---------------------------------------------------------------------------------------------
// Host names

// isSafeHostName lives with the rules' host matching (one definition of a host name for both).
export { isSafeHostName };

type HostName = { kind: 'dns'; name: string } | { kind: 'ip'; bytes: Uint8Array; text: string };

function parseHost(host: string): HostName | undefined {
  if (!isSafeHostName(host)) return undefined;
  if (isIPv4(host) || host.includes(':')) {
    const bytes = ipAddressBytes(host);
    return { kind: 'ip', bytes, text: formatIp(bytes) };
  }
  return { kind: 'dns', name: host.toLowerCase() };
}

function formatIp(bytes: Uint8Array): string {
  if (bytes.byteLength === 4) return Array.from(bytes).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

/** `a.b.c.d/len` or `x:x:x:x:x:x:x:x/len` from address-then-mask bytes. */
function formatIpSubtree(bytes: Uint8Array): string {
  const half = bytes.byteLength / 2;
  if (half !== 4 && half !== 16) throw new InterceptionCaError(`bad iPAddress constraint length ${bytes.byteLength}`);
  const addr = bytes.subarray(0, half);
  const mask = bytes.subarray(half);
  let prefix = 0;
  for (const b of mask) for (let i = 7; i >= 0; i--) if (b & (1 << i)) prefix++;
  return `${formatIp(addr)}/${prefix}`;
}

interface ParsedPattern {
  pattern: string;
  /** `*.base` (every name strictly below base) or an exact name. */
  wildcard: boolean;
  host: HostName;
}

function parsePattern(raw: string): ParsedPattern {
  const p = canonicalHost(raw);
  const wildcard = p.startsWith('*.');
  const body = wildcard ? p.slice(2) : p;
  const host = parseHost(body);
  if (!host || body.includes('*')) {
    throw new InterceptionCaError(
      `host pattern ${JSON.stringify(raw)} cannot become a name constraint: use "*.example.com", "host.example.com" or an IP literal`,
    );
  }
  if (wildcard && host.kind === 'ip') throw new InterceptionCaError(`host pattern ${JSON.stringify(raw)}: a wildcard needs a DNS name`);
  return { pattern: raw, wildcard, host };
}

/**
 * The name constraints for a set of host patterns. `*.example.com` and `example.com` both become
 * dNSName `example.com` (RFC 5280: that subtree is example.com and every name below it); IP literals
 * become /32 or /128 iPAddress subtrees. A name type with no permitted entry is excluded entirely
 * (empty dNSName; 0.0.0.0/0 and ::/0), since permitted subtrees only restrict names of their own type.
 */
export function nameConstraintsForHosts(patterns: string[]): CaNameConstraints {
  const dns = new Set<string>();
  const ip = new Set<string>();
  for (const raw of patterns) {
    const { host } = parsePattern(raw);
    if (host.kind === 'dns') dns.add(host.name);
    else ip.add(`${host.text}/${host.bytes.byteLength * 8}`);
  }
  const excluded = { dns: [] as string[], ip: [] as string[] };
  if (dns.size === 0) excluded.dns.push('');
  if (ip.size === 0) excluded.ip.push('0.0.0.0/0', '0:0:0:0:0:0:0:0/0');
  return { permitted: { dns: [...dns], ip: [...ip] }, excluded };
}

function dnsInSubtree(name: string, base: string): boolean {
  if (base === '') return true;
  const b = base.toLowerCase().replace(/^\./, '');
  return name === b || name.endsWith('.' + b);
}

function ipInSubtree(bytes: Uint8Array, cidr: string): boolean {
  const slash = cidr.lastIndexOf('/');
  const base = ipAddressBytes(cidr.slice(0, slash));
  const prefix = Number(cidr.slice(slash + 1));
  if (base.byteLength !== bytes.byteLength) return false;
  for (let i = 0; i < prefix; i++) {
    const bit = 0x80 >> (i & 7);
    if (((base[i >> 3] ?? 0) & bit) !== ((bytes[i >> 3] ?? 0) & bit)) return false;
  }
  return true;
}

/** RFC 5280 6.1.3 (b)/(c) for one name: inside some permitted subtree of its type (if any), in no excluded one. */
function withinConstraints(host: HostName, nc: CaNameConstraints | undefined): boolean {
  if (!nc) return true;
  if (host.kind === 'dns') {
    if (nc.excluded.dns.some((b) => dnsInSubtree(host.name, b))) return false;
    return nc.permitted.dns.length === 0 || nc.permitted.dns.some((b) => dnsInSubtree(host.name, b));
  }
  if (nc.excluded.ip.some((c) => ipInSubtree(host.bytes, c))) return false;
  const sameFamily = nc.permitted.ip.filter((c) => ipAddressBytes(c.slice(0, c.lastIndexOf('/'))).byteLength === host.bytes.byteLength);
  return nc.permitted.ip.length === 0 || sameFamily.some((c) => ipInSubtree(host.bytes, c));
}

/** Does a pattern's whole host set fall inside the constraints? */
function patternWithinConstraints(p: ParsedPattern, nc: CaNameConstraints | undefined): boolean {
  if (!nc) return true;
  if (!p.wildcard) return withinConstraints(p.host, nc);
  const base = (p.host as { name: string }).name;
  // Every name below `base` is covered when `base` itself sits in a permitted subtree and no excluded
  // subtree reaches into it (an excluded subtree below base would cut a hole: treat as not covered).
  if (nc.excluded.dns.some((b) => dnsInSubtree(base, b) || dnsInSubtree(b, base))) return false;
  return nc.permitted.dns.length === 0 || nc.permitted.dns.some((b) => dnsInSubtree(base, b));
}

// ---------------------------------------------------------------------------------------------
// Files

const canCheckOwner = typeof process.getuid === 'function';

function checkDirectory(dir: string): void {
  const st = statSync(dir);
  if (!st.isDirectory()) throw new InterceptionCaError(`${dir} is not a directory`);
  if (canCheckOwner && st.uid !== process.getuid!()) {
    throw new InterceptionCaError(`CA directory ${dir} is not owned by the current user (uid ${st.uid}): refusing to use it`);
  }
  if (canCheckOwner && (st.mode & 0o022) !== 0) {
    throw new InterceptionCaError(
      `CA directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): refusing to use it; chmod 700 it`,
    );
  }
}

/** Reads the CA key without following symlinks, refusing one that others can read or that someone else owns. */
function readPrivateKeyFile(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0));
  } catch (err) {
    throw new InterceptionCaError(`cannot open the CA key ${path}: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new InterceptionCaError(`the CA key ${path} is not a regular file`);
    if (canCheckOwner) {
      if (st.uid !== process.getuid!()) {
        throw new InterceptionCaError(`the CA key ${path} is not owned by the current user (uid ${st.uid}): refusing to use it`);
      }
      if ((st.mode & 0o077) !== 0) {
        throw new InterceptionCaError(
          `the CA key ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}): refusing to use it; ` +
            `chmod 600 it if it never left this machine, else delete the directory to make a new CA`,
        );
      }
    }
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Creates a file that must not exist yet, with exactly `mode`, and writes it durably. */
function writeNewFile(path: string, data: string, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    fchmodSync(fd, mode); // the umask may have removed bits we want (never added any)
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The CA

interface CaInfoFile {
  version: 1;
  createdAt: string;
  subject: string;
  sha256: string;
  permittedHosts: string[] | null;
  nameConstraints: CaNameConstraints | null;
}

function caCommonName(): string {
  const prefix = 'patchgate interception CA (';
  const room = 64 - prefix.length - 1; // ub-common-name is 64
  const host = osHostname() || 'unknown host';
  return `${prefix}${host.length > room ? host.slice(0, room) : host})`;
}

function nameConstraintsOf(cert: pkijs.Certificate): CaNameConstraints | undefined {
  const ext = cert.extensions?.find((e) => e.extnID === '2.5.29.30');
  if (!ext) return undefined;
  const nc = ext.parsedValue;
  if (!(nc instanceof pkijs.NameConstraints)) throw new InterceptionCaError('the CA certificate has an unreadable nameConstraints extension');
  const collect = (subtrees: pkijs.GeneralSubtree[] | undefined) => {
    const out = { dns: [] as string[], ip: [] as string[] };
    for (const s of subtrees ?? []) {
      if (s.base.type === 2) out.dns.push(String(s.base.value));
      else if (s.base.type === 7 && s.base.value instanceof asn1js.OctetString) {
        out.ip.push(formatIpSubtree(new Uint8Array(s.base.value.valueBlock.valueHexView)));
      } else {
        throw new InterceptionCaError(`the CA certificate has a name constraint of a type patchgate does not write (${s.base.type})`);
      }
    }
    return out;
  };
  return { permitted: collect(nc.permittedSubtrees), excluded: collect(nc.excludedSubtrees) };
}

const sameConstraints = (a: CaNameConstraints | null | undefined, b: CaNameConstraints | null | undefined): boolean =>
  JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function createCa(dir: string, permittedHosts: string[] | undefined): void {
  const nc = permittedHosts ? nameConstraintsForHosts(permittedHosts) : undefined;
  const now = Date.now();
  const notBefore = new Date(now - DAY_MS);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const cn = caCommonName();
  const ca = issueCertificate({
    subject: { O: 'patchgate', CN: cn },
    key: { type: 'ec', namedCurve: 'P-256' },
    notBefore,
    notAfter,
    extensions: {
      basicConstraints: { cA: true, pathLen: 0, critical: true },
      keyUsage: { usages: ['keyCertSign', 'cRLSign'], critical: true },
      extendedKeyUsage: { purposes: ['serverAuth'] },
      ...(nc ? { nameConstraints: { permitted: nc.permitted, excluded: nc.excluded, critical: true } } : {}),
    },
  });
  const info: CaInfoFile = {
    version: 1,
    createdAt: new Date(now).toISOString(),
    subject: `O=patchgate, CN=${cn}`,
    sha256: new X509Certificate(ca.der).fingerprint256.replace(/:/g, '').toLowerCase(),
    permittedHosts: permittedHosts ?? null,
    nameConstraints: nc ?? null,
  };
  // Key first, created 0600 and exclusive: never briefly readable, never over an existing one.
  writeNewFile(join(dir, CA_KEY_FILE), ca.keyPem, 0o600);
  writeNewFile(join(dir, CA_CERT_FILE), ca.pem, 0o644);
  writeNewFile(join(dir, CA_INFO_FILE), JSON.stringify(info, null, 2) + '\n', 0o644);
}

/**
 * Loads the interception CA from `dir`, creating it on first use (see the module comment). Throws
 * InterceptionCaError, failing closed, when the directory or key file is readable or writable by
 * others, owned by someone else, incomplete, or inconsistent.
 */
export function loadOrCreateInterceptionCa(dir: string, opts: InterceptionCaOptions = {}): InterceptionCa {
  const keyPath = join(dir, CA_KEY_FILE);
  const certPath = join(dir, CA_CERT_FILE);
  const infoPath = join(dir, CA_INFO_FILE);
  // Parse the current patterns first: a bad pattern is an error whether or not the CA exists.
  const current = opts.permittedHosts?.map(parsePattern);

  let created = false;
  const present = [keyPath, certPath, infoPath].filter((p) => existsSync(p));
  if (present.length === 0) {
    const existed = existsSync(dir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = statSync(dir);
    if (canCheckOwner && st.uid !== process.getuid!()) {
      throw new InterceptionCaError(`CA directory ${dir} is not owned by the current user (uid ${st.uid}): refusing to use it`);
    }
    if (existed || (st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
    createCa(dir, opts.permittedHosts);
    created = true;
  } else if (present.length !== 3) {
    throw new InterceptionCaError(
      `the CA directory ${dir} is incomplete (has ${present.map((p) => p.slice(dir.length + 1)).join(', ')}; needs ${CA_KEY_FILE}, ${CA_CERT_FILE} and ${CA_INFO_FILE}): ` +
        'remove it to create a new CA (clients must then trust the new ca.pem)',
    );
  }
  checkDirectory(dir);

  const keyPem = readPrivateKeyFile(keyPath);
  let key: KeyObject;
  try {
    key = loadPrivateKey(keyPem);
  } catch (err) {
    throw new InterceptionCaError(`the CA key ${keyPath} cannot be read: ${(err as Error).message}`);
  }
  const certPem = readFileSync(certPath, 'utf8');
  let x509: X509Certificate;
  let cert: pkijs.Certificate;
  try {
    x509 = new X509Certificate(certPem);
    cert = parseCertificate(certPem);
  } catch (err) {
    throw new InterceptionCaError(`the CA certificate ${certPath} cannot be read: ${(err as Error).message}`);
  }
  const certSpki = x509.publicKey.export({ type: 'spki', format: 'der' });
  const keySpki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  if (!certSpki.equals(keySpki)) throw new InterceptionCaError(`the CA key ${keyPath} does not match ${certPath}`);
  if (!x509.ca) throw new InterceptionCaError(`${certPath} is not a CA certificate`);
  if (key.asymmetricKeyType !== 'ec') throw new InterceptionCaError(`the CA key ${keyPath} is not an EC key`);
  const caNotAfter = new Date(x509.validTo);
  if (caNotAfter.getTime() <= Date.now()) {
    throw new InterceptionCaError(`the interception CA expired on ${caNotAfter.toISOString()}: remove ${dir} to create a new one`);
  }
  const sha256 = x509.fingerprint256.replace(/:/g, '').toLowerCase();
  const nameConstraints = nameConstraintsOf(cert);
  let info: CaInfoFile;
  try {
    info = JSON.parse(readFileSync(infoPath, 'utf8')) as CaInfoFile;
  } catch (err) {
    throw new InterceptionCaError(`${infoPath} cannot be read: ${(err as Error).message}`);
  }
  if (info.sha256 !== sha256 || !sameConstraints(info.nameConstraints, nameConstraints)) {
    throw new InterceptionCaError(`${infoPath} does not describe ${certPath} (fingerprint or name constraints differ)`);
  }

  const uncoveredHosts = (current ?? []).filter((p) => !patternWithinConstraints(p, nameConstraints)).map((p) => p.pattern);
  const issuer: PreparedIssuer = prepareIssuer({ certificate: x509.raw, key });
  const cacheSize = Math.max(1, opts.leafCacheSize ?? DEFAULT_LEAF_CACHE);
  const cache = new Map<string, { leaf: LeafCertificate; notAfter: number }>();

  const coveredHost = (host: string): HostName | undefined => {
    const parsed = parseHost(host);
    if (!parsed) return undefined;
    if (!withinConstraints(parsed, nameConstraints)) return undefined;
    if (current && !current.some((p) => hostMatches(p.pattern, host))) return undefined;
    return parsed;
  };

  return {
    dir,
    caCertificatePath: certPath,
    certPem,
    certDer: new Uint8Array(x509.raw),
    sha256,
    created,
    nameConstraints,
    uncoveredHosts,
    covers: (host: string) => coveredHost(host) !== undefined,
    certificateFor(host: string): LeafCertificate {
      if (!isSafeHostName(host)) throw new InterceptionCaError(`refusing to issue for an unsafe host name ${JSON.stringify(host)}`);
      const parsed = coveredHost(host);
      if (!parsed) {
        throw new InterceptionCaError(
          `the interception CA does not cover ${host} (its name constraints or the current host rules exclude it)`,
        );
      }
      const cacheKey = parsed.kind === 'dns' ? parsed.name : parsed.text;
      const now = Date.now();
      const hit = cache.get(cacheKey);
      if (hit) {
        cache.delete(cacheKey);
        if (hit.notAfter - now > LEAF_REFRESH_MS) {
          cache.set(cacheKey, hit);
          return hit.leaf;
        }
      }
      const notAfter = Math.min(now + LEAF_VALIDITY_MS, caNotAfter.getTime());
      const san: GeneralNamesSpec = parsed.kind === 'dns' ? { dns: [parsed.name] } : { ip: [parsed.text] };
      const issued = issueCertificate({
        // The CN repeats a DNS name (if it fits ub-common-name); IP leaves carry none, so that no
        // verifier mistakes a dotted quad in a CN for a DNS name under the DNS constraints.
        subject: parsed.kind === 'dns' && parsed.name.length <= 64 ? { O: 'patchgate interception', CN: parsed.name } : { O: 'patchgate interception' },
        key: generateKey({ type: 'ec', namedCurve: 'P-256' }),
        issuer,
        notBefore: new Date(now - 3600_000),
        notAfter: new Date(notAfter),
        signatureHash: 'sha256',
        extensions: {
          basicConstraints: { cA: false, critical: true },
          keyUsage: { usages: ['digitalSignature'], critical: true },
          extendedKeyUsage: { purposes: ['serverAuth'] },
          subjectAltName: san,
          subjectKeyIdentifier: false,
          authorityKeyIdentifier: true,
        },
      });
      const leaf = { keyPem: issued.keyPem, certPem: issued.pem };
      cache.set(cacheKey, { leaf, notAfter });
      while (cache.size > cacheSize) {
        const oldest = cache.keys().next().value;
        if (oldest === undefined) break;
        cache.delete(oldest);
      }
      return leaf;
    },
  };
}
