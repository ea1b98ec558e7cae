/**
 * `patchgate icap` end to end over real sockets: a raw ICAP client (written apart from the
 * service's parser) speaks RFC 3507 as Squid does (previews, 100 Continue, Allow: 204, persistent
 * connections) to an in-process IcapService running the real verifier on signed fixtures.
 * Expected verdicts come from the core on the same bytes, never from constants.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { codes, fx, labPolicy, pki, verifyFixture } from '../support/fixtures.js';
import { sleep, syntheticBytes, syntheticPe, waitFor } from '../support/gateHarness.js';
import {
  IcapClient, type IcapHandle, httpRequestHead, httpResponseHead, respmodOnce, startIcap,
} from '../support/icapHarness.js';
import { verifyBytes } from '../../src/verify/incrementalVerifier.js';
import { pinCertificateFile } from '../../src/policy/trustMaterial.js';
import { IcapService, istagFor } from '../../src/icap/icapService.js';
import { HostRules } from '../../src/policy/hostRules.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const file = (name: string) => readFileSync(fx(name));
const reasonSet = (h: string | undefined) => String(h ?? '').split(',').map((s) => s.trim()).filter(Boolean).sort();
const U = (path: string) => `http://127.0.0.1:8/${path}`;
const ok = (body: Buffer, extra: Record<string, string | number> = {}) => httpResponseHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length, ...extra });

let svc: IcapHandle;
let strict: IcapHandle; // small limits, non-payload content blocked
let good: Buffer;
let big: Buffer;
let bigBad: Buffer;

beforeAll(async () => {
  svc = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], previewBytes: 4096 });
  strict = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], nonPayload: 'block', limits: { maxPayloadBytes: 1 * MiB, idleTimeoutMs: 700 }, maxConnections: 4 });
  good = file('good.exe');
  const pe = syntheticPe(3 * MiB, 7);
  big = syntheticBytes(pe);
  bigBad = syntheticBytes(syntheticPe(3 * MiB, 7, pe.textOffset + 5000));
});

afterAll(async () => {
  await svc?.dispose();
  await strict?.dispose();
});

describe('OPTIONS', () => {
  it('advertises RESPMOD, a Preview for sniffing, Allow: 204, Transfer-Preview for every file, and Max-Connections', async () => {
    const c = new IcapClient(svc.port);
    const a = await c.options();
    c.close();
    expect(a.status).toBe(200);
    expect(a.headers['methods']).toBe('RESPMOD');
    expect(a.headers['istag']).toMatch(/^"pg-[0-9a-f]{24}"$/);
    expect(Number(a.headers['preview'])).toBe(4096);
    expect(a.headers['allow']).toBe('204');
    expect(a.headers['transfer-preview']).toBe('*');
    expect(a.headers['transfer-ignore']).toBeUndefined(); // extensions lie: nothing skips the gate by name
    expect(Number(a.headers['max-connections'])).toBe(256);
  });

  it('answers 404 for another service path', async () => {
    const c = new IcapClient(svc.port);
    const a = await c.options('/reqmod');
    expect(a.status).toBe(404);
    expect(await c.waitClosed()).toBe(true);
  });

  it('changes the ISTag when the trust material or inspected hosts change, and only then', () => {
    const base = { hostRules: new HostRules([{ pattern: '127.0.0.1', mode: 'inspect' }]), rulesSha256: 'r', nonPayload: 'pass' as const, unsignedDeltas: 'block' as const };
    const a = istagFor({ ...base, policy: labPolicy() });
    expect(istagFor({ ...base, policy: labPolicy() })).toBe(a);
    expect(istagFor({ ...base, policy: labPolicy({ anchors: pinCertificateFile(pki('rogueroot')) }) })).not.toBe(a);
    expect(istagFor({ ...base, policy: labPolicy({ distrust: new Set(['00'.repeat(32)]) }) })).not.toBe(a);
    expect(istagFor({ ...base, policy: labPolicy(), hostRules: new HostRules([{ pattern: '*.windowsupdate.com', mode: 'inspect' }]) })).not.toBe(a);
    expect(istagFor({ ...base, policy: labPolicy(), rulesSha256: 'other' })).not.toBe(a);
  });
});

describe('RESPMOD on an update host', () => {
  it('allows a good payload sent whole in the preview with 204 (the proxy keeps its own copy), and audits it', async () => {
    const expected = verifyBytes(good, labPolicy());
    expect(expected.verdict).toBe('allow');
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('good.exe')), resHead: ok(good), body: good, preview: 16 * 1024, headers: { 'X-Client-IP': '10.1.2.3' } });
    expect(a.status).toBe(204);
    expect(a.headers['istag']).toBe(svc.service.istag);
    const [r] = await svc.waitRecords((x) => x.url === U('good.exe'));
    expect(r).toMatchObject({ verdict: 'allow', served: 'full', client: '10.1.2.3', icapClient: '127.0.0.1', icapStatus: 204, sha256: sha256(good), inspected: true, status: 200 });
  });

  it('asks for the rest after the preview, then echoes the verified bytes when the proxy cannot take a 204', async () => {
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('big.exe')), resHead: ok(big, { ETag: '"e1"' }), body: big, preview: 4096 });
    expect(a.continued).toBe(true);
    expect(a.status).toBe(200);
    expect(a.http?.status).toBe(200);
    expect(a.http?.headers['x-patchgate-verdict']).toBe('allow');
    expect(Number(a.http?.headers['content-length'])).toBe(big.length);
    expect(a.http?.headers['etag']).toBe('"e1"');
    expect(sha256(a.body!)).toBe(sha256(big));
    const [r] = await svc.waitRecords((x) => x.url === U('big.exe'));
    expect(r).toMatchObject({ verdict: 'allow', served: 'full', icapStatus: 200, bytes: big.length, bytesToClient: big.length });
    await waitFor(() => svc.spoolFiles().length === 0);
    expect(svc.spoolFiles()).toEqual([]);
  });

  it('answers 204 after the whole body when the proxy sent Allow: 204', async () => {
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('big204.exe')), resHead: ok(big), body: big, preview: 4096, allow204: true });
    expect(a.continued).toBe(true);
    expect(a.status).toBe(204);
  });

  it('replaces a Flame-like payload with the proxy\'s 403 block page and the core\'s reason codes', async () => {
    const flame = file('flame.exe');
    const expected = verifyFixture('flame');
    expect(expected.verdict).toBe('block');
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('flame.exe')), resHead: ok(flame), body: flame, preview: 4096, allow204: true });
    expect(a.status).toBe(200);
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(codes(expected));
    expect(a.http?.headers['x-patchgate-verdict']).toBe('block');
    const id = a.http?.headers['x-patchgate-audit-id'];
    expect(a.body!.toString()).toContain(`Audit id: ${id}`);
    expect(a.body!.includes(flame.subarray(1024, 1100))).toBe(false);
    const [r] = await svc.waitRecords((x) => x.id === id);
    expect(r).toMatchObject({ verdict: 'block', served: 'blocked', status: 403, icapStatus: 200, sha256: sha256(flame) });
    expect(r!.reasons.map((x) => x.code).sort()).toEqual(expected.reasons.map((x) => x.code).sort());
  });

  it('blocks a tampered large payload (DIGEST_MISMATCH from the core) and sends none of its bytes', async () => {
    const expected = verifyBytes(bigBad, labPolicy());
    expect(codes(expected)).toContain('DIGEST_MISMATCH');
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('bigbad.exe')), resHead: ok(bigBad), body: bigBad, preview: 4096 });
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(codes(expected));
    expect(a.body!.length).toBeLessThan(2000);
    await waitFor(() => svc.spoolFiles().length === 0);
    expect(svc.spoolFiles()).toEqual([]);
  });

  it('blocks an unsigned payload with NOT_SIGNED even when its name and Content-Type say text', async () => {
    const unsigned = file('unsigned.exe');
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('notes.txt')), resHead: httpResponseHead(200, { 'Content-Type': 'text/plain', 'Content-Length': unsigned.length }), body: unsigned, preview: 4096 });
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(codes(verifyBytes(unsigned, labPolicy())));
  });

  it('verifies the decoded bytes of a gzip-encoded payload and delivers exactly those, without the coding', async () => {
    const gz = gzipSync(good);
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('good.gz.exe')), resHead: ok(gz, { 'Content-Encoding': 'gzip' }), body: gz, preview: 64 * 1024, allow204: true });
    expect(a.status).toBe(200); // never 204: the proxy's copy is not the verified representation
    expect(a.http?.headers['content-encoding']).toBeUndefined();
    expect(Number(a.http?.headers['content-length'])).toBe(good.length);
    expect(sha256(a.body!)).toBe(sha256(good));
  });

  it('blocks a 206 Partial Content answer: a part of a payload cannot be verified', async () => {
    const part = good.subarray(0, 4000);
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('part.exe')), resHead: httpResponseHead(206, { 'Content-Range': `bytes 0-3999/${good.length}`, 'Content-Length': 4000 }), body: part, preview: 4096 });
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
  });

  it('blocks a redirect to a host the rules do not inspect, and lets one to an inspected host through', async () => {
    const away = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('r1.exe')), resHead: httpResponseHead(302, { Location: 'http://elsewhere.test/x.exe', 'Content-Length': 0 }) });
    expect(away.http?.status).toBe(403);
    expect(reasonSet(away.http?.headers['x-patchgate-reason'])).toEqual(['UPSTREAM_ERROR']);
    const here = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('r2.exe')), resHead: httpResponseHead(302, { Location: '/good.exe', 'Content-Length': 0 }) });
    expect(here.status).toBe(204);
  });

  it('lets HEAD and 304 answers through unchanged, with an audit record each', async () => {
    const head = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('h.exe'), 'HEAD'), resHead: ok(good) });
    expect(head.status).toBe(204);
    const nm = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('nm.exe')), resHead: httpResponseHead(304, { ETag: '"x"' }) });
    expect(nm.status).toBe(204);
    expect(await svc.waitRecords((x) => x.url === U('h.exe') && x.served === 'head')).toHaveLength(1);
    expect(await svc.waitRecords((x) => x.url === U('nm.exe') && x.served === 'not-modified')).toHaveLength(1);
  });

  it('passes content that is not a payload when the rules say so (204 at the end of the preview), and blocks it when they do not', async () => {
    const html = Buffer.from('<html>' + 'x'.repeat(20_000) + '</html>');
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('index.html')), resHead: httpResponseHead(200, { 'Content-Type': 'text/html', 'Content-Length': html.length }), body: html, preview: 4096 });
    expect(a.status).toBe(204);
    expect(a.continued).toBe(false);
    const [r] = await svc.waitRecords((x) => x.url === U('index.html'));
    expect(r).toMatchObject({ verdict: 'pass', served: 'passed', inspected: false, icapStatus: 204 });
    const b = await respmodOnce(strict.port, { reqHead: httpRequestHead(U('index.html')), resHead: httpResponseHead(200, { 'Content-Length': html.length }), body: html, preview: 4096 });
    expect(b.http?.status).toBe(403);
    expect(reasonSet(b.http?.headers['x-patchgate-reason'])).toEqual(['UNSUPPORTED_FORMAT']);
  });

  it('streams passed content back decoded when the proxy offers neither preview nor Allow: 204', async () => {
    const text = Buffer.from('{"updates":[]}'.repeat(1000));
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('meta.json')), resHead: httpResponseHead(200, { 'Content-Length': text.length }), body: text });
    expect(a.status).toBe(200);
    expect(a.http?.headers['x-patchgate-verdict']).toBe('pass');
    expect(a.body!.equals(text)).toBe(true);
  });

  it('blocks an oversize body as soon as it passes the limit and closes the connection', async () => {
    const a = await respmodOnce(strict.port, { reqHead: httpRequestHead(U('huge.exe')), resHead: ok(big), body: big, preview: 4096 });
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(['OVERSIZE']);
    expect(a.closedAfter).toBe(true);
  });
});

describe('RESPMOD on other hosts', () => {
  it('answers 204 at the end of the preview without reading the body, and writes no audit record', async () => {
    const before = svc.records().length;
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead('http://elsewhere.test/big.exe'), resHead: ok(big), body: big, preview: 4096 });
    expect(a.status).toBe(204);
    expect(a.continued).toBe(false);
    await sleep(50);
    expect(svc.records().length).toBe(before);
  });

  it('echoes the body unchanged when the proxy offers neither preview nor Allow: 204', async () => {
    const body = Buffer.from('plain content '.repeat(5000));
    const a = await respmodOnce(svc.port, { reqHead: httpRequestHead('http://elsewhere.test/a.txt'), resHead: httpResponseHead(200, { 'Content-Length': body.length }), body });
    expect(a.status).toBe(200);
    expect(a.body!.equals(body)).toBe(true);
    expect(Number(a.http?.headers['content-length'])).toBe(body.length);
  });
});

describe('connections', () => {
  it('serves several transactions on one persistent connection', async () => {
    const c = new IcapClient(svc.port);
    const a = await c.respmod({ reqHead: httpRequestHead(U('k1.exe')), resHead: ok(good), body: good, preview: 16 * 1024 });
    const b = await c.respmod({ reqHead: httpRequestHead(U('k2.exe')), resHead: ok(file('flame.exe')), body: file('flame.exe'), preview: 16 * 1024 });
    const o = await c.options();
    c.close();
    expect([a.status, b.status, b.http?.status, o.status]).toEqual([204, 200, 403, 200]);
  });

  it('blocks a stalled transfer with TIMEOUT while another connection is served at once', async () => {
    const stalled = respmodOnce(strict.port, { reqHead: httpRequestHead(U('slow.exe')), resHead: ok(big), body: big, stopAfter: 100_000, chunkSize: 10_000 });
    await sleep(100);
    const t0 = Date.now();
    const other = await respmodOnce(strict.port, { reqHead: httpRequestHead(U('fast.exe')), resHead: ok(good), body: good, preview: 16 * 1024 });
    expect(other.status).toBe(204);
    expect(Date.now() - t0).toBeLessThan(500);
    const a = await stalled;
    expect(a.http?.status).toBe(403);
    expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(['TIMEOUT']);
    expect(a.closedAfter).toBe(true);
  });

  it('records a transfer whose ICAP client went away as client-aborted, and leaves no spool file', async () => {
    const c = new IcapClient(svc.port);
    const pending = c.respmod({ reqHead: httpRequestHead(U('gone.exe')), resHead: ok(big), body: big, stopAfter: 1_000_000 }).catch(() => undefined);
    await waitFor(() => svc.service.spoolBytes > 0, 3000);
    c.close();
    await pending;
    const [r] = await svc.waitRecords((x) => x.url === U('gone.exe'));
    expect(r).toMatchObject({ served: 'client-aborted', verdict: 'block' });
    await waitFor(() => svc.spoolFiles().length === 0);
    expect(svc.spoolFiles()).toEqual([]);
  });

  it('keeps held payloads within the total memory budget: past it they spool to disk', async () => {
    const s = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 1 * MiB, memoryTotalBytes: 1 * MiB, idleTimeoutMs: 10_000 } });
    const clients = [new IcapClient(s.port), new IcapClient(s.port)];
    try {
      const body = syntheticBytes(syntheticPe(700 * 1024, 9));
      // Both send all but the last chunk and wait: two holds of 700 KiB at once.
      const pending = clients.map((c, i) => c.respmod({ reqHead: httpRequestHead(U(`mem${i}.exe`)), resHead: ok(body), body, stopAfter: body.length - 1 }).catch(() => undefined));
      await waitFor(() => s.service.spoolBytes >= 2 * (body.length - 1), 5000);
      expect(s.service.spoolBytes).toBeGreaterThanOrEqual(2 * (body.length - 1));
      expect(s.service.spoolMemoryBytes).toBeLessThanOrEqual(1 * MiB);
      expect(s.spoolFiles().length).toBeGreaterThanOrEqual(1);
      for (const c of clients) c.close();
      await Promise.all(pending);
      await waitFor(() => s.spoolFiles().length === 0 && s.service.spoolMemoryBytes === 0);
      expect(s.service.spoolMemoryBytes).toBe(0);
    } finally {
      for (const c of clients) c.close();
      await s.dispose();
    }
  });

  it('beyond Max-Connections: reclaims the longest-idle connection first; 503 only when every slot is in a transaction', async () => {
    const held = [0, 1, 2, 3].map(() => new IcapClient(strict.port));
    for (const c of held) await c.options(); // one after another: held[0] has been idle the longest
    const extra = new IcapClient(strict.port);
    expect((await extra.options()).status).toBe(200);
    expect(await held[0]!.waitClosed(2000), 'the longest-idle connection was reclaimed').toBe(true);
    expect(held.slice(1).map((c) => c.closed)).toEqual([false, false, false]);
    // Every slot busy with a transaction (a body that stops coming): no slot to reclaim.
    const body = syntheticBytes(syntheticPe(64 * 1024, 3));
    const busy = [...held.slice(1), extra].map((c, i) => c.respmod({ reqHead: httpRequestHead(U(`busy${i}.exe`)), resHead: ok(body), body, stopAfter: 1000 }).catch(() => undefined));
    await waitFor(() => strict.service.inFlight === 4, 2000);
    const late = new IcapClient(strict.port);
    const a = await late.readAnswer(3000);
    expect(a.status).toBe(503);
    for (const c of [...held, extra, late]) c.close();
    await Promise.all(busy);
    await waitFor(() => strict.service.connectionCount === 0);
  });
});

describe('bad ICAP input', () => {
  const bad = async (raw: string): Promise<{ status: number; closed: boolean }> => {
    const c = new IcapClient(svc.port);
    c.write(Buffer.from(raw, 'latin1'));
    const a = await c.readAnswer(3000);
    const closed = await c.waitClosed();
    c.close();
    return { status: a.status, closed };
  };
  const head = (enc: string, extra = '') => `RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nHost: x\r\nEncapsulated: ${enc}\r\n${extra}\r\n`;
  const req = httpRequestHead(U('bad.exe'));
  const res = httpResponseHead(200, { 'Content-Length': 10 });
  const heads = req + res;
  const enc = `req-hdr=0, res-hdr=${req.length}, res-body=${heads.length}`;

  it.each([
    ['a chunk size that is not hex', head(enc) + heads + 'zz\r\nabc\r\n0\r\n\r\n'],
    ['a chunk size of 2^64', head(enc) + heads + 'ffffffffffffffffff\r\n'],
    ['chunk data without its CRLF', head(enc) + heads + '3\r\nabcXY'],
    ['an endless chunk-size line', head(enc) + heads + '1'.repeat(5000)],
    ['a bare LF in a chunk line', head(enc) + heads + '3\nabc\r\n0\r\n\r\n'],
    ['Encapsulated offsets out of order', head(`req-hdr=0, res-hdr=${heads.length}, res-body=${req.length}`) + heads],
    ['no Encapsulated header', `RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nHost: x\r\n\r\n`],
    ['a malformed encapsulated response line', head(`req-hdr=0, res-hdr=${req.length}, res-body=${req.length + 'HTTP/9 ok\r\n\r\n'.length}`) + req + 'HTTP/9 ok\r\n\r\n'],
    ['a header line without a colon', `RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nHost x\r\n\r\n`],
    ['a bad request line', `RESPMOD icap://127.0.0.1/respmod HTTP/1.1\r\n\r\n`],
    ['an ICAP head over 64 KiB', `RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nX: ${'a'.repeat(70_000)}\r\n\r\n`],
  ])('%s: ICAP 400 and the connection closed', async (_name, raw) => {
    expect(await bad(raw)).toEqual({ status: 400, closed: true });
  });

  it('REQMOD gets 405 and an unknown method 501', async () => {
    expect((await bad(`REQMOD icap://127.0.0.1/respmod ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n`)).status).toBe(405);
    expect((await bad(`BREW icap://127.0.0.1/respmod ICAP/1.0\r\n\r\n`)).status).toBe(501);
  });

  it('a framing error in the middle of a held payload is a block in the audit trail, and the service keeps serving', async () => {
    const c = new IcapClient(svc.port);
    const r = httpRequestHead(U('midbad.exe'));
    const s = ok(good);
    c.write(Buffer.from(head(`req-hdr=0, res-hdr=${r.length}, res-body=${r.length + s.length}`) + r + s, 'latin1'));
    c.write(Buffer.concat([Buffer.from('1000\r\n'), good.subarray(0, 4096), Buffer.from('\r\nnot-hex\r\n')]));
    const a = await c.readAnswer(3000);
    expect(a.status).toBe(400);
    c.close();
    const [rec] = await svc.waitRecords((x) => x.url === U('midbad.exe'));
    expect(rec).toMatchObject({ verdict: 'block', served: 'client-aborted' });
    expect(rec!.reasons[0]!.code).toBe('MALFORMED');
    const after = await respmodOnce(svc.port, { reqHead: httpRequestHead(U('after.exe')), resHead: ok(good), body: good, preview: 16 * 1024 });
    expect(after.status).toBe(204);
  });
});

describe('stopping', () => {
  it('blocks a payload still held when the service stops (INTERNAL_ERROR), never a 204', async () => {
    const s = await startIcap({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { idleTimeoutMs: 10_000 } });
    try {
      const c = new IcapClient(s.port);
      const pending = c.respmod({ reqHead: httpRequestHead(U('held.exe')), resHead: ok(big), body: big, stopAfter: 500_000 });
      await waitFor(() => s.service.inFlight === 1, 3000);
      await s.stop(0);
      const a = await pending;
      expect(a.http?.status).toBe(403);
      expect(reasonSet(a.http?.headers['x-patchgate-reason'])).toEqual(['INTERNAL_ERROR']);
      c.close();
    } finally {
      await s.dispose();
    }
  });

  it('a second service instance can listen where the first stopped (no stale listener)', async () => {
    const s = await startIcap({ hosts: [] });
    const port = s.port;
    await s.dispose();
    const again = new IcapService({
      listen: { host: '127.0.0.1', port }, policy: labPolicy(), hostRules: new HostRules([]), rulesSha256: 't', audit: { record() {}, debug() {} } as never,
      limits: { maxPayloadBytes: 0, idleTimeoutMs: 1000, totalTimeoutMs: 1000, memoryHoldBytes: 1024 }, nonPayload: 'pass', unsignedDeltas: 'block',
    });
    await again.start();
    expect(again.address.port).toBe(port);
    await again.stop(0);
  });
});
