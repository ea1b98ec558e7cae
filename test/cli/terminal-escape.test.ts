/**
 * Strings from the network on the operator's terminal (issue 13, item 14): a payload's signer
 * subject carries terminal escapes (a window-title OSC, clear-screen), a line feed that forges an
 * "ALLOW" line, and a right-to-left override. `patchgate verify` (human output) and `patchgate
 * audit summary` over a log the gate wrote while serving that payload through real sockets must show
 * them escaped; the JSON outputs keep the exact string (JSON escapes it itself).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pki, REPO } from '../support/fixtures.js';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin } from '../support/gateHarness.js';
import { issueCertificate } from '../../src/pki/certificateFactory.js';
import { createSyntheticSignedPe } from '../../src/lab/syntheticPe.js';

const EVIL_CN = 'Evil\u001b]0;owned\u0007\u001b[2J\nALLOW  C:\\good.exe \u202eexe.txt';
const pg = (...args: string[]) => spawnSync(process.execPath, [join(REPO, 'bin', 'patchgate.js'), ...args], { encoding: 'utf8', timeout: 30_000 });
/** Bytes a terminal would act on: C0 controls but the line feed, DEL, C1, bidi overrides. */
const UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

let dir: string;
let file: string;
let payload: Buffer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'patchgate-escape-'));
  const caPem = readFileSync(pki('updateca'), 'utf8');
  const caKey = createPrivateKey(readFileSync(pki('updateca').replace(/\.pem$/, '.key')));
  const leaf = issueCertificate({
    subject: { O: 'patchgate test', CN: EVIL_CN },
    issuer: { certificate: caPem, key: caKey },
    key: { type: 'ec', namedCurve: 'P-256' },
    extensions: { basicConstraints: { cA: false }, keyUsage: { usages: ['digitalSignature'] }, extendedKeyUsage: { purposes: ['codeSigning'] } },
  });
  const pe = createSyntheticSignedPe({
    size: 64 * 1024, seed: 3,
    signer: { signerCertDer: new Uint8Array(new X509Certificate(leaf.pem).raw), signerKey: createPrivateKey(leaf.keyPem), extraCertsDer: [new Uint8Array(new X509Certificate(caPem).raw)], digest: 'sha256' },
  });
  payload = Buffer.concat([...pe.chunks()].map((c) => Buffer.from(c)));
  file = join(dir, 'evil-subject.exe');
  writeFileSync(file, payload);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('control characters from the network are escaped on the terminal', () => {
  it('patchgate verify: escaped in the human output, exact in --json', () => {
    const r = pg('verify', '--anchor', pki('updateca'), file);
    expect(r.stdout).toContain('Evil\\x1b]0;owned\\x07\\x1b[2J\\x0aALLOW  C:\\good.exe \\u202eexe.txt');
    expect(r.stdout).not.toMatch(UNSAFE);
    // The forged line never starts a line of its own.
    expect(r.stdout.split('\n').filter((l) => l.startsWith('ALLOW  C:'))).toEqual([]);
    const j = pg('verify', '--json', '--anchor', pki('updateca'), file);
    const v = JSON.parse(j.stdout.trim()) as { signer: { subject: string } };
    expect(v.signer.subject).toContain(EVIL_CN);
  });

  describe('patchgate audit summary over a log the gate wrote', () => {
    let restore: () => void;
    let g: GateHandle;
    let origin: Origin;
    beforeAll(async () => {
      restore = quietConsole();
      origin = await startOrigin();
      origin.route('/evil.exe', send(payload));
      g = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }] });
    });
    afterAll(async () => {
      await g?.dispose();
      await origin?.close();
      restore?.();
    });

    it('the signer subject is escaped in the report, exact in --json', async () => {
      const r = await proxyRequest(g.port, origin.url('/evil.exe'));
      expect([200, 403]).toContain(r.status);
      const recs = g.records().filter((x) => x.url.endsWith('/evil.exe'));
      expect(recs[0]?.signer?.subject).toContain(EVIL_CN);
      const s = pg('audit', 'summary', g.auditFile);
      expect(s.status).toBe(0);
      expect(s.stdout).toContain('Evil\\x1b]0;owned\\x07\\x1b[2J\\x0aALLOW  C:\\good.exe \\u202eexe.txt');
      expect(s.stdout).not.toMatch(UNSAFE);
      const j = JSON.parse(pg('audit', 'summary', '--json', g.auditFile).stdout) as { bySigner: Record<string, unknown> };
      expect(Object.keys(j.bySigner).some((k) => k.includes(EVIL_CN))).toBe(true);
    });
  });
});
