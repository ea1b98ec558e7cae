import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import {
  caCertificatePath,
  isSafeHostName,
  loadOrCreateInterceptionCa,
  nameConstraintsForHosts,
  type InterceptionCa,
} from '../../src/proxy/interceptionCa.js';
import { issueCertificate, loadPrivateKey } from '../../src/pki/certificateFactory.js';

const HOSTS = ['*.windowsupdate.com', 'download.microsoft.com', '127.0.0.1', '::1', 'localhost'];
const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';

function openssl(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', input, timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

let base: string;
let dir: string;
let ca: InterceptionCa;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'patchgate-ca-'));
  dir = join(base, 'ca');
  ca = loadOrCreateInterceptionCa(dir, { permittedHosts: HOSTS });
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** Writes a leaf to a file and runs `openssl verify` against the CA. */
function opensslVerify(leafPem: string, name: string): { status: number | null; out: string } {
  const p = join(base, `${name}.pem`);
  writeFileSync(p, leafPem);
  return openssl(['verify', '-CAfile', ca.caCertificatePath, p]);
}

describe('interception CA files', () => {
  it('creates the directory 0700, the key 0600, and reports the certificate path', () => {
    expect(ca.created).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'ca.key.pem')).mode & 0o777).toBe(0o600);
    expect(caCertificatePath(dir)).toBe(join(dir, 'ca.pem'));
    expect(ca.caCertificatePath).toBe(join(dir, 'ca.pem'));
    const info = JSON.parse(readFileSync(join(dir, 'ca.json'), 'utf8'));
    expect(info.permittedHosts).toEqual(HOSTS);
    expect(info.sha256).toBe(ca.sha256);
  });

  it('reloading an existing directory gives the same CA, unchanged', () => {
    const before = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const again = loadOrCreateInterceptionCa(dir, { permittedHosts: HOSTS });
    expect(again.created).toBe(false);
    expect(again.certPem).toBe(ca.certPem);
    expect(again.sha256).toBe(ca.sha256);
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).toBe(before);
    expect(again.uncoveredHosts).toEqual([]);
  });

  it('refuses a key file that group or others can read, and a group-writable directory', () => {
    const d = join(base, 'loose');
    loadOrCreateInterceptionCa(d, { permittedHosts: ['localhost'] });
    chmodSync(join(d, 'ca.key.pem'), 0o644);
    expect(() => loadOrCreateInterceptionCa(d, { permittedHosts: ['localhost'] })).toThrow(/ca\.key\.pem is accessible by group or others \(mode 644\)/);
    chmodSync(join(d, 'ca.key.pem'), 0o640);
    expect(() => loadOrCreateInterceptionCa(d, {})).toThrow(/accessible by group or others/);
    chmodSync(join(d, 'ca.key.pem'), 0o600);
    expect(loadOrCreateInterceptionCa(d, {}).created).toBe(false);
    chmodSync(d, 0o770);
    expect(() => loadOrCreateInterceptionCa(d, {})).toThrow(/writable by group or others/);
    chmodSync(d, 0o700);
  });

  it('refuses an incomplete directory and a ca.json that does not describe ca.pem', () => {
    const d = join(base, 'partial');
    loadOrCreateInterceptionCa(d, { permittedHosts: ['localhost'] });
    const info = JSON.parse(readFileSync(join(d, 'ca.json'), 'utf8'));
    writeFileSync(join(d, 'ca.json'), JSON.stringify({ ...info, nameConstraints: null }));
    expect(() => loadOrCreateInterceptionCa(d, {})).toThrow(/does not describe/);
    rmSync(join(d, 'ca.json'));
    expect(() => loadOrCreateInterceptionCa(d, {})).toThrow(/incomplete/);
  });

  it('refuses host patterns that cannot become name constraints', () => {
    expect(() => loadOrCreateInterceptionCa(join(base, 'bad'), { permittedHosts: ['*'] })).toThrow(/cannot become a name constraint/);
    expect(() => loadOrCreateInterceptionCa(join(base, 'bad'), { permittedHosts: ['dl*.example.com'] })).toThrow(/cannot become a name constraint/);
    expect(() => loadOrCreateInterceptionCa(join(base, 'bad'), { permittedHosts: ['../x'] })).toThrow(/cannot become a name constraint/);
  });
});

describe('interception CA certificate', () => {
  it('is CA:TRUE pathlen 0, serverAuth only, with the derived name constraints (openssl)', () => {
    const r = openssl(['x509', '-in', ca.caCertificatePath, '-noout', '-text']);
    expect(r.status).toBe(0);
    const text = r.out;
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Extended Key Usage:\s*\n\s+TLS Web Server Authentication\s*\n/);
    expect(text).not.toMatch(/Code Signing/);
    expect(text).toMatch(/Name Constraints: critical/);
    const permitted = /Permitted:\n([\s\S]*?)\n\s+X509v3/.exec(text)?.[1] ?? '';
    const lines = permitted.split('\n').map((l) => l.trim()).filter(Boolean);
    expect(lines).toEqual([
      'DNS:windowsupdate.com',
      'DNS:download.microsoft.com',
      'DNS:localhost',
      'IP:127.0.0.1/255.255.255.255',
      'IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF',
    ]);
    expect(text).not.toMatch(/Excluded:/);
    expect(text).toMatch(/Subject: O = patchgate, CN = patchgate interception CA \(/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
  });

  it('is seen the same way by node (X509Certificate) and by the CA object', () => {
    const x = new X509Certificate(ca.certPem);
    expect(x.ca).toBe(true);
    expect(x.keyUsage).toEqual([EKU_SERVER_AUTH]); // node's keyUsage is the EKU list
    expect(x.keyUsage).not.toContain(EKU_CODE_SIGNING);
    expect(x.checkIssued(x)).toBe(true);
    expect(x.verify(x.publicKey)).toBe(true);
    const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000;
    expect(days).toBeGreaterThan(3650);
    expect(Date.parse(x.validFrom)).toBeLessThan(Date.now() - 23 * 3600_000);
    expect(ca.nameConstraints).toEqual({
      permitted: { dns: ['windowsupdate.com', 'download.microsoft.com', 'localhost'], ip: ['127.0.0.1/32', '0:0:0:0:0:0:0:1/128'] },
      excluded: { dns: [], ip: [] },
    });
  });

  it('a name type without permitted entries is excluded entirely', () => {
    expect(nameConstraintsForHosts(['*.windowsupdate.com'])).toEqual({
      permitted: { dns: ['windowsupdate.com'], ip: [] },
      excluded: { dns: [], ip: ['0.0.0.0/0', '0:0:0:0:0:0:0:0/0'] },
    });
    expect(nameConstraintsForHosts(['10.1.2.3'])).toEqual({
      permitted: { dns: [], ip: ['10.1.2.3/32'] },
      excluded: { dns: [''], ip: [] },
    });
  });
});

describe('leaf certificates', () => {
  for (const host of ['127.0.0.1', 'download.windowsupdate.com', '::1']) {
    it(`a leaf for ${host} verifies against the CA (openssl and node)`, () => {
      const leaf = ca.certificateFor(host);
      const r = opensslVerify(leaf.certPem, `leaf-${host.replace(/[^a-z0-9]/gi, '_')}`);
      expect(r.out).toMatch(/: OK/);
      expect(r.status).toBe(0);
      const x = new X509Certificate(leaf.certPem);
      const caX = new X509Certificate(ca.certPem);
      expect(x.checkIssued(caX)).toBe(true);
      expect(x.verify(caX.publicKey)).toBe(true);
      expect(x.ca).toBe(false);
      expect(x.keyUsage).toEqual([EKU_SERVER_AUTH]);
      expect(host.includes('.') && !/^\d/.test(host) ? x.checkHost(host) : x.checkIP(host)).toBe(host);
      const days = (Date.parse(x.validTo) - Date.now()) / 86_400_000;
      expect(days).toBeGreaterThan(29);
      expect(days).toBeLessThanOrEqual(30);
      expect(loadPrivateKey(leaf.keyPem).asymmetricKeyType).toBe('ec');
      const text = openssl(['x509', '-noout', '-text'], leaf.certPem).out;
      expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
      expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
      expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    });
  }

  it('caches leaves in memory by host', () => {
    const a = ca.certificateFor('download.windowsupdate.com');
    expect(ca.certificateFor('download.windowsupdate.com')).toBe(a);
    expect(ca.certificateFor('DOWNLOAD.windowsupdate.com')).toBe(a);
  });

  it('openssl rejects a leaf outside the name constraints, even though the CA key signed it', () => {
    const caKey = loadPrivateKey(readFileSync(join(dir, 'ca.key.pem'), 'utf8'));
    const rogue = (san: { dns?: string[]; ip?: string[] }, name: string) =>
      issueCertificate({
        subject: { CN: san.dns?.[0] ?? 'x' },
        issuer: { certificate: ca.certPem, key: caKey },
        extensions: {
          basicConstraints: { cA: false },
          keyUsage: { usages: ['digitalSignature'] },
          extendedKeyUsage: { purposes: ['serverAuth'] },
          subjectAltName: san,
        },
      }).pem;
    const dnsOut = opensslVerify(rogue({ dns: ['www.example.com'] }, 'x'), 'rogue-dns');
    expect(dnsOut.status).not.toBe(0);
    expect(dnsOut.out).toMatch(/permitted subtree violation/);
    const ipOut = opensslVerify(rogue({ ip: ['10.0.0.1'] }, 'x'), 'rogue-ip');
    expect(ipOut.status).not.toBe(0);
    expect(ipOut.out).toMatch(/permitted subtree violation/);
    // The apex is inside the dNSName subtree windowsupdate.com (RFC 5280), hence the signature checks.
    expect(opensslVerify(rogue({ dns: ['windowsupdate.com'] }, 'x'), 'apex').status).toBe(0);
  });

  it('refuses hosts outside the constraints or the current patterns, and unsafe names', () => {
    expect(ca.covers('download.windowsupdate.com')).toBe(true);
    expect(ca.covers('www.example.com')).toBe(false);
    expect(ca.covers('windowsupdate.com')).toBe(false); // in the certificate's subtree, but not matched by *.windowsupdate.com
    expect(ca.covers('10.0.0.1')).toBe(false);
    expect(() => ca.certificateFor('www.example.com')).toThrow(/does not cover/);
    expect(() => ca.certificateFor('../../x')).toThrow(/unsafe host name/);
    // Rules changed since creation: a new host is not in the certificate's subtrees, a dropped one is no longer wanted.
    const later = loadOrCreateInterceptionCa(dir, { permittedHosts: ['*.windowsupdate.com', 'example.org'] });
    expect(later.uncoveredHosts).toEqual(['example.org']);
    expect(later.covers('example.org')).toBe(false);
    expect(() => later.certificateFor('example.org')).toThrow(/does not cover/);
    expect(later.covers('download.microsoft.com')).toBe(false);
    expect(later.covers('x.windowsupdate.com')).toBe(true);
  });

  it('an IP-only CA excludes every DNS name, and its IP leaf still verifies (no CN to mistake for a DNS name)', () => {
    const ipCa = loadOrCreateInterceptionCa(join(base, 'ip-only'), { permittedHosts: ['127.0.0.1'] });
    expect(ipCa.nameConstraints?.excluded.dns).toEqual(['']);
    const leafFile = join(base, 'ip-only-leaf.pem');
    writeFileSync(leafFile, ipCa.certificateFor('127.0.0.1').certPem);
    const r = openssl(['verify', '-CAfile', ipCa.caCertificatePath, leafFile]);
    expect(r.out).toMatch(/: OK/);
    expect(ipCa.covers('localhost')).toBe(false);
  });

  it('an empty host list makes a CA that covers nothing (fail closed), not an unconstrained one', () => {
    const none = loadOrCreateInterceptionCa(join(base, 'none'), { permittedHosts: [] });
    expect(none.nameConstraints).toEqual({ permitted: { dns: [], ip: [] }, excluded: { dns: [''], ip: ['0.0.0.0/0', '0:0:0:0:0:0:0:0/0'] } });
    expect(none.covers('localhost')).toBe(false);
    expect(none.covers('127.0.0.1')).toBe(false);
    expect(none.covers('::1')).toBe(false);
  });

  it('issues leaves fast (EC P-256): 200 distinct hosts', () => {
    const fresh = loadOrCreateInterceptionCa(dir, { permittedHosts: HOSTS, leafCacheSize: 50 });
    fresh.certificateFor('warmup.windowsupdate.com');
    const n = 200;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fresh.certificateFor(`h${i}.dl.windowsupdate.com`);
    const mean = (performance.now() - t0) / n;
    console.log(`leaf issuance: mean ${mean.toFixed(3)} ms over ${n} hosts`);
    expect(mean).toBeLessThan(20);
  });
});

describe('isSafeHostName', () => {
  it.each(['../../x', 'a/b', 'x\u0000y', '..', '', '.example.com', 'example.com.', 'a..b', 'a\\b', '[::1]', 'fe80::1%eth0',
    'a b', '-x.com', 'x-.com', 'x'.repeat(64) + '.com', `${'a.'.repeat(127)}com`, '1.2.3', '01.2.3.4', '256.1.1.1', 'x_y.com', 'é.com'])(
    'refuses %j', (h) => expect(isSafeHostName(h)).toBe(false));
  it.each(['download.windowsupdate.com', '127.0.0.1', '::1', 'localhost', '2001:db8::1', '::ffff:10.0.0.1', 'a-b.c0m', 'x'.repeat(63) + '.com'])(
    'accepts %j', (h) => expect(isSafeHostName(h)).toBe(true));
});

describe('TLS with a leaf', () => {
  it('a real handshake with a certificateFor("localhost") leaf is authorized by the CA', async () => {
    const leaf = ca.certificateFor('localhost');
    const server = tls.createServer({ key: leaf.keyPem, cert: leaf.certPem }, (s) => s.end('hello'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      const result = await new Promise<{ authorized: boolean; error?: string; data: string }>((resolve, reject) => {
        const c = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, servername: 'localhost' }, () => {
          let data = '';
          c.on('data', (d) => (data += d));
          c.on('end', () => resolve({ authorized: c.authorized, error: c.authorizationError?.toString(), data }));
        });
        c.on('error', reject);
      });
      expect(result.error).toBeUndefined();
      expect(result.authorized).toBe(true);
      expect(result.data).toBe('hello');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
