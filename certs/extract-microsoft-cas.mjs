#!/usr/bin/env node
// Obtain Microsoft's dedicated code-signing / time-stamping issuing CAs from Debian and npm packages
// (offline provenance: the bytes come out of .deb files fetched by apt from Debian's archive, and out
// of the certificate bags of genuinely Microsoft-signed files in npm tarballs fetched by `npm pack`),
// check each one by the SHA-256 of its DER against the fingerprints recorded in MICROSOFT-CAS.md,
// and write them as PEM to certs/microsoft/<short-name>.pem, with certs/microsoft/sources.json
// recording where every certificate was found.
//
// Usage:
//   node certs/extract-microsoft-cas.mjs            download, carve, verify, write (re-runnable)
//   node certs/extract-microsoft-cas.mjs --verify   only check the PEMs already in certs/microsoft
//   options: --out DIR (default: certs/microsoft next to this script), --keep (keep the temp dir)
//
// Needs: apt-get (download only; `apt-get update` is run once if the package lists are missing and
// we are root), dpkg-deb, npm (pack only), tar. Node builtins only.
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// The certificates the default rules pin (fingerprints: SHA-256 of the DER, from MICROSOFT-CAS.md).
export const WANTED = [
  {
    short: 'windows-production-pca-2011',
    name: 'Microsoft Windows Production PCA 2011',
    sha256: 'e8e95f0733a55e8bad7be0a1413ee23c51fcea64b3c8fa6a786935fddcc71961',
    role: 'code-signing anchor (issues the "Microsoft Windows" leaf that signs Windows components)',
  },
  {
    short: 'code-signing-pca-2011',
    name: 'Microsoft Code Signing PCA 2011',
    sha256: '56da8722afd94066ffe1e4595473a4854892b843a0827d53fb7d8f4aeed1e18b',
    role: 'code-signing anchor (issues the "Microsoft Corporation" leaf that signs Microsoft tools)',
  },
  {
    short: 'code-signing-pca-2024',
    name: 'Microsoft Code Signing PCA 2024',
    sha256: '3dadfaf812dd1bbaef45834ccbd188f3cd97139e2ed1aca69c2dd63082142f8f',
    role: 'code-signing anchor (successor of Code Signing PCA 2011: issues the "Microsoft Corporation" leaf since 2026)',
  },
  {
    short: 'windows-code-signing-pca-2024',
    name: 'Microsoft Windows Code Signing PCA 2024',
    sha256: 'fe229efc927f6d77b738896752a21803a59736baa17bf5be9a50c72e219cbcd2',
    role: 'code-signing anchor (successor of Microsoft Code Signing PCA 2010); not carried by every signature',
  },
  {
    short: 'certificate-list-ca-2024',
    name: 'Microsoft Certificate List CA 2024',
    sha256: '56625ec7886445706fe74ccd2abf69b7c9c9ccde3c7354903af1c8f0e30e9d1c',
    role: 'certificate-trust-list anchor (issues "Microsoft Certificate Trust List Publisher", which signs authroot.stl / disallowedcert.stl)',
  },
  {
    short: 'time-stamp-pca-2010',
    name: 'Microsoft Time-Stamp PCA 2010 (2010-07-01 .. 2025-07-01)',
    sha256: '86ec118d1ee69670a46e2be29c4b4208be043e36600d4e1dd3f3d515ca119020',
    role: 'timestamp anchor',
  },
  {
    short: 'time-stamp-pca-2010-reissue',
    name: 'Microsoft Time-Stamp PCA 2010 (reissue, 2021-09-30 .. 2030-09-30)',
    sha256: 'ebec1edd9e140d9c105cc62b15a915c5443ddc514a35e5773c09afb0274c7ba5',
    role: 'timestamp anchor',
  },
];

// Debian (bookworm) packages known to carry some of them, and where.
//  - ovmf: the *.ms.fd variable stores enrol Microsoft's KEK and db certificates
//    (db holds "Microsoft Windows Production PCA 2011" and "Microsoft Corporation UEFI CA 2011").
//  - refind: ships the same db/KEK certificates as .cer files (a second, independent copy).
//  - shim-signed: shimx64.efi.signed is signed by Microsoft's UEFI CAs; the RFC 3161 timestamps in
//    its signatures carry "Microsoft Time-Stamp PCA 2010" (the 2021 reissue).
export const SOURCES = ['ovmf', 'refind', 'shim-signed'];

// npm tarballs (exact versions: a tarball never changes once published) holding genuinely
// Microsoft-signed Windows binaries; their Authenticode certificate bags carry the issuing PCAs.
//  - @typescript/native-preview-win32-x64: lib/tsgo.exe, signed 2026-07-07 under Code Signing PCA 2024.
//  - node-pty: the bundled conpty.dll / OpenConsole.exe, signed 2025 under Code Signing PCA 2011.
export const NPM_SOURCES = ['@typescript/native-preview-win32-x64@7.0.0-dev.20260707.2', 'node-pty@1.1.0'];

function parseArgs(argv) {
  const opts = { out: path.join(here, 'microsoft'), keep: false, verify: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = path.resolve(argv[++i]);
    else if (a === '--keep') opts.keep = true;
    else if (a === '--verify') opts.verify = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node certs/extract-microsoft-cas.mjs [--verify] [--out DIR] [--keep]');
      process.exit(0);
    } else throw new Error(`unknown argument: ${a}`);
  }
  return opts;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

export function toPem(der) {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * Carve DER certificates out of arbitrary bytes: every 0x30 0x82 (SEQUENCE, two length bytes) whose
 * declared length fits in the buffer and whose content starts with another SEQUENCE (tbsCertificate)
 * is a candidate; `wanted` maps SHA-256 hex -> anything. Returns [{ sha256, der, offset }] for the
 * candidates whose SHA-256 is wanted and which parse as X.509 with the very same bytes.
 */
export function carve(buf, wanted) {
  const found = [];
  for (let i = buf.indexOf(0x30); i !== -1 && i + 4 <= buf.length; i = buf.indexOf(0x30, i + 1)) {
    if (buf[i + 1] !== 0x82 || buf[i + 4] !== 0x30) continue;
    const len = buf.readUInt16BE(i + 2);
    if (len < 0x80 || i + 4 + len > buf.length) continue;
    const der = buf.subarray(i, i + 4 + len);
    const h = sha256(der);
    if (!wanted.has(h)) continue;
    try {
      const cert = new X509Certificate(der);
      if (!cert.raw.equals(der)) continue;
    } catch {
      continue;
    }
    found.push({ sha256: h, der: Buffer.from(der), offset: i });
  }
  return found;
}

function* walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

function aptDownload(pkg, dir) {
  try {
    run('apt-get', ['download', pkg], { cwd: dir });
  } catch (err) {
    const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (!isRoot) throw new Error(`apt-get download ${pkg} failed (and not root, so no apt-get update): ${err.stderr || err.message}`);
    process.stderr.write(`apt-get download ${pkg} failed; running apt-get update once and retrying\n`);
    run('apt-get', ['update']);
    run('apt-get', ['download', pkg], { cwd: dir });
  }
  const debs = fs.readdirSync(dir).filter((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (debs.length !== 1) throw new Error(`expected one ${pkg}_*.deb in ${dir}, found ${debs.join(', ') || 'none'}`);
  return path.join(dir, debs[0]);
}

function describe(der) {
  const c = new X509Certificate(der);
  return {
    subject: c.subject.replace(/\n/g, ', '),
    issuer: c.issuer.replace(/\n/g, ', '),
    serial: c.serialNumber,
    notBefore: new Date(c.validFrom).toISOString(),
    notAfter: new Date(c.validTo).toISOString(),
    ca: c.ca,
    // node's X509Certificate.keyUsage is the extended key usage list (undefined: no EKU extension)
    eku: c.keyUsage ?? null,
  };
}

function verifyExisting(outDir) {
  let bad = 0;
  let present = 0;
  for (const w of WANTED) {
    const file = path.join(outDir, `${w.short}.pem`);
    if (!fs.existsSync(file)) {
      console.log(`-    ${w.short}.pem: absent (pinned by fingerprint only: ${w.sha256})`);
      continue;
    }
    present++;
    const der = new X509Certificate(fs.readFileSync(file)).raw;
    const h = sha256(der);
    if (h === w.sha256) console.log(`ok   ${w.short}.pem ${h}`);
    else {
      console.log(`BAD  ${w.short}.pem ${h} (expected ${w.sha256})`);
      bad++;
    }
  }
  console.log(`${present - bad} passed, ${bad} failed`);
  return bad === 0;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.verify) process.exit(verifyExisting(opts.out) ? 0 : 1);

  const wanted = new Map(WANTED.map((w) => [w.sha256, w]));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'patchgate-mscas-'));
  // apt's _apt sandbox user must be able to write the download dir
  fs.chmodSync(tmp, 0o755);
  const hits = new Map(); // sha256 -> { der, sources: [] }
  try {
    for (const pkg of SOURCES) {
      const pdir = path.join(tmp, pkg);
      fs.mkdirSync(pdir, { mode: 0o777 });
      fs.chmodSync(pdir, 0o777);
      let deb;
      try {
        deb = aptDownload(pkg, pdir);
      } catch (err) {
        process.stderr.write(`warning: ${pkg}: ${err.message.trim()}\n`);
        continue;
      }
      const version = run('dpkg-deb', ['-f', deb, 'Version']).trim();
      const root = path.join(pdir, 'root');
      run('dpkg-deb', ['-x', deb, root]);
      for (const file of walk(root)) {
        const buf = fs.readFileSync(file);
        for (const f of carve(buf, wanted)) {
          const entry = hits.get(f.sha256) ?? { der: f.der, sources: [] };
          const rel = `/${path.relative(root, file)}`;
          if (!entry.sources.some((s) => s.package === pkg && s.path === rel)) {
            entry.sources.push({ package: pkg, version, deb: path.basename(deb), path: rel, offset: f.offset });
          }
          hits.set(f.sha256, entry);
        }
      }
    }

    for (const spec of NPM_SOURCES) {
      const pdir = path.join(tmp, `npm-${NPM_SOURCES.indexOf(spec)}`);
      fs.mkdirSync(pdir);
      let tgz;
      try {
        tgz = path.join(pdir, run('npm', ['pack', '--silent', spec], { cwd: pdir }).trim().split('\n').pop());
      } catch (err) {
        process.stderr.write(`warning: npm pack ${spec}: ${(err.stderr || err.message).trim()}\n`);
        continue;
      }
      const root = path.join(pdir, 'root');
      fs.mkdirSync(root);
      run('tar', ['-xzf', tgz, '-C', root]);
      for (const file of walk(root)) {
        if (!/\.(exe|dll|sys|node|cat|cab|msi)$/i.test(file)) continue;
        const buf = fs.readFileSync(file);
        for (const f of carve(buf, wanted)) {
          const entry = hits.get(f.sha256) ?? { der: f.der, sources: [] };
          entry.sources.push({ npm: spec, tarball: path.basename(tgz), path: `/${path.relative(root, file)}`, offset: f.offset });
          hits.set(f.sha256, entry);
        }
      }
    }

    fs.mkdirSync(opts.out, { recursive: true });
    const manifest = [];
    for (const w of WANTED) {
      const hit = hits.get(w.sha256);
      const file = path.join(opts.out, `${w.short}.pem`);
      if (!hit) {
        console.log(`not found offline: ${w.name} (${w.sha256}) -> pin by fingerprint only`);
        manifest.push({ short: w.short, name: w.name, sha256: w.sha256, role: w.role, pem: null, sources: [] });
        continue;
      }
      fs.writeFileSync(file, toPem(hit.der));
      const origin = (s) => (s.npm ? `npm ${s.npm}` : `deb ${s.package} ${s.version}`);
      hit.sources.sort((a, b) => (origin(a) + a.path).localeCompare(origin(b) + b.path));
      console.log(`wrote ${path.relative(process.cwd(), file)}  ${w.sha256}  from ${hit.sources.map((s) => `${origin(s)}:${s.path}`).join(', ')}`);
      manifest.push({ short: w.short, name: w.name, sha256: w.sha256, role: w.role, pem: `${w.short}.pem`, ...describe(hit.der), sources: hit.sources });
    }
    fs.writeFileSync(path.join(opts.out, 'sources.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    const got = manifest.filter((m) => m.pem).length;
    console.log(`${got} of ${WANTED.length} certificates obtained from Debian and npm packages; the rest are fingerprint-only`);
  } finally {
    if (opts.keep) console.log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
