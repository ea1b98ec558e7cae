/**
 * MSI and APPX/MSIX packages through `patchgate run` and `patchgate icap` end to end (real sockets,
 * the real verifier): their digests cover parts scattered over the package, so the gate verifies
 * them from the finished spool (memory or disk) after the last byte. Expected reason codes come from
 * the core on the same bytes, never from constants.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { codes, fx, verifyRandomAccessFixture } from '../support/fixtures.js';
import { type GateHandle, type Origin, proxyRequest, quietConsole, send, startGate, startOrigin, waitFor, filesBelow } from '../support/gateHarness.js';
import { type IcapHandle, httpRequestHead, httpResponseHead, respmodOnce, startIcap } from '../support/icapHarness.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const file = (name: string) => readFileSync(fx(name));
const reasonSet = (h: string | string[] | undefined) => String(h ?? '').split(',').map((s) => s.trim()).filter(Boolean).sort();

let restoreConsole: () => void;
let origin: Origin;
let gate: GateHandle;
let icap: IcapHandle;

beforeAll(async () => {
  restoreConsole = quietConsole();
  origin = await startOrigin();
  // 16 KiB in memory: every MSI here spools to disk and is read back from the file.
  gate = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 16 * 1024, maxPayloadBytes: 64 * MiB }, nonPayload: 'pass' });
  icap = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], previewBytes: 4096 });
});

afterAll(async () => {
  await gate?.dispose();
  await icap?.dispose();
  await origin?.close();
  restoreConsole?.();
});

// good.msi (40 KiB: hashed inline) and good-big.msi (3 MiB: a digest thread hashes the whole file).
const ALLOWED = [['good.msi', 'good-msi'], ['good.msp', 'good-msp'], ['good-big.msi', 'good-big-msi'], ['good.appx', 'good-appx'], ['good-big.appx', 'good-big-appx'], ['good.appxbundle', 'good-appxbundle']] as const;
const BLOCKED = [
  ['tampered.msi', 'tampered-msi'], ['tampered-big.msi', 'tampered-big-msi'], ['rogue.msi', 'rogue-msi'], ['flame.msi', 'flame-msi'], ['unsigned.msi', 'unsigned-msi'],
  ['tampered.appx', 'tampered-appx'], ['rogue.appx', 'rogue-appx'], ['unsigned.appx', 'unsigned-appx'], ['appended.appx', 'appended-appx'],
  ['rogue-inner.appxbundle', 'rogue-inner-appxbundle'],
] as const;
const formatOf = (name: string) => (/\.appx(bundle)?$/.test(name) ? 'msix' : 'msi');

describe('patchgate run', () => {
  it.each(ALLOWED)('%s passes byte-identical, verified from the spool', async (name) => {
    const bytes = file(name);
    const path = `/msi/${name}`;
    origin.route(path, send(bytes, { chunk: 8192 }));
    const r = await proxyRequest(gate.port, origin.url(path));
    expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
    expect(r.headers['x-patchgate-verdict']).toBe('allow');
    expect(sha256(r.body)).toBe(sha256(bytes));
    const [rec] = await gate.waitRecords((x) => x.url === origin.url(path));
    expect(rec).toMatchObject({ verdict: 'allow', format: formatOf(name), served: 'full', sha256: sha256(bytes), bytes: bytes.length });
  });

  it.each(BLOCKED)('%s is blocked with the core\'s reasons and none of its bytes', async (name, fixture) => {
    const bytes = file(name);
    const expected = codes(await verifyRandomAccessFixture(fixture));
    expect(expected.length).toBeGreaterThan(0);
    const path = `/msi/${name}`;
    origin.route(path, send(bytes, { chunk: 8192 }));
    const r = await proxyRequest(gate.port, origin.url(path));
    expect(r.status).toBe(403);
    expect(reasonSet(r.headers['x-patchgate-reason'])).toEqual(expected);
    expect(r.body.includes(bytes.subarray(2048, 2112))).toBe(false);
    const [rec] = await gate.waitRecords((x) => x.url === origin.url(path));
    expect(rec).toMatchObject({ verdict: 'block', format: formatOf(name), served: 'blocked' });
  });

  it('ten packages at once (more than the random-access verifications allowed at a time) are all verified', async () => {
    const good = file('good-big.msi');
    const bad = file('tampered-big.msi');
    const paths = Array.from({ length: 10 }, (_, i) => `/msi/par-${i}.msi`);
    paths.forEach((p, i) => origin.route(p, send(i % 3 === 2 ? bad : good, { chunk: 64 * 1024 })));
    const rs = await Promise.all(paths.map((p) => proxyRequest(gate.port, origin.url(p))));
    rs.forEach((r, i) => {
      if (i % 3 === 2) {
        expect(r.status).toBe(403);
        expect(reasonSet(r.headers['x-patchgate-reason'])).toEqual(['DIGEST_MISMATCH']);
      } else {
        expect(r.status).toBe(200);
        expect(sha256(r.body)).toBe(sha256(good));
      }
    });
  });

  it('leaves no spool file behind', async () => {
    await waitFor(() => filesBelow(gate.spoolBase).length === 0);
    expect(filesBelow(gate.spoolBase)).toEqual([]);
  });
});

describe('patchgate icap', () => {
  const U = (p: string) => `http://127.0.0.1:8/${p}`;
  const ok = (body: Buffer) => httpResponseHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });

  it.each(ALLOWED)('%s is allowed (204 after the whole body)', async (name) => {
    const bytes = file(name);
    const a = await respmodOnce(icap.port, { reqHead: httpRequestHead(U(name)), resHead: ok(bytes), body: bytes, preview: 4096, allow204: true });
    expect(a.status).toBe(204);
    const [rec] = await icap.waitRecords((x) => x.url === U(name));
    expect(rec).toMatchObject({ verdict: 'allow', format: formatOf(name), sha256: sha256(bytes) });
  });

  it('echoes the verified bytes when the proxy cannot take a 204', async () => {
    const bytes = file('good-big.msi');
    const a = await respmodOnce(icap.port, { reqHead: httpRequestHead(U('echo.msi')), resHead: ok(bytes), body: bytes, preview: 4096 });
    expect(a.http?.status).toBe(200);
    expect(sha256(a.body!)).toBe(sha256(bytes));
  });

  it.each(BLOCKED)('%s is replaced by the block page with the core\'s reasons', async (name, fixture) => {
    const bytes = file(name);
    const expected = codes(await verifyRandomAccessFixture(fixture));
    const a = await respmodOnce(icap.port, { reqHead: httpRequestHead(U(`b-${name}`)), resHead: ok(bytes), body: bytes, preview: 4096, allow204: true });
    expect(a.status).toBe(200);
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(expected);
    expect(a.body!.includes(bytes.subarray(2048, 2112))).toBe(false);
  });
});
