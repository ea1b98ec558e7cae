/**
 * Tail hold (rules `hold: tail`, issue #18): the gate streams an inspected payload to its client
 * while it arrives and is verified, and withholds its end until the verdict. End to end on
 * 127.0.0.1 with real sockets, real signed PEs, the real verifier, and real curl: an allowed
 * payload arrives byte-identical; a tampered one leaves the client with a transfer cut short of its
 * length (or of its last chunk), never with the withheld end; the withheld bytes never leave before
 * the verdict; a chunked or gzip body, an HTTP/1.0 client, a dying upstream, a Range request and a
 * second client joining the download each get what the README's "Hold modes" promises.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import {
  type GateHandle,
  type Origin,
  httpsThroughProxy,
  makeOriginCert,
  proxyRequest,
  quietConsole,
  send,
  sleep,
  startGate,
  startOrigin,
  syntheticBytes,
  syntheticPe,
  waitFor,
} from '../support/gateHarness.js';
import { TAIL_HOLD_BYTES, RELEASE_STEP_BYTES } from '../../src/inspect/tailHold.js';

const MiB = 1 << 20;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const SIZE = 3 * MiB;
const pe = syntheticPe(SIZE, 7);
const good = syntheticBytes(pe);
// A byte of the signed .text flipped after signing: DIGEST_MISMATCH, found only at the end.
const tampered = syntheticBytes(syntheticPe(SIZE, 7, pe.textOffset + 1000));
/** What may leave before the verdict: everything up to the end of the sections (= the certificate table here) less the fixed tail. */
const LIMIT = pe.certTableOffset - TAIL_HOLD_BYTES;

let restoreConsole: () => void;
let origin: Origin;
let sorigin: Origin; // HTTPS: the gate intercepts it
let g: GateHandle;
let whole: GateHandle;

/** An origin route that sends all but the last `keep` bytes, then waits for `release()`. */
function heldBack(body: Buffer, keep: number, headers: Record<string, string | number> = { 'content-length': body.byteLength }) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const route = async (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', ...headers });
    res.write(body.subarray(0, body.byteLength - keep));
    await released;
    res.end(body.subarray(body.byteLength - keep));
  };
  return { route, release };
}

/** A GET through the gate whose received body bytes can be watched while it runs. */
function watchedGet(url: string, headers: Record<string, string> = {}) {
  const u = new URL(url);
  const state = { received: 0, headersAt: 0, status: 0, headers: {} as http.IncomingHttpHeaders };
  const chunks: Buffer[] = [];
  const done = new Promise<{ body: Buffer; complete: boolean }>((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: g.port, path: u.href, headers: { host: u.host, ...headers }, agent: false });
    req.on('response', (res) => {
      state.headersAt = Date.now();
      state.status = res.statusCode ?? 0;
      state.headers = res.headers;
      res.on('data', (d: Buffer) => { chunks.push(d); state.received += d.byteLength; });
      res.on('end', () => resolve({ body: Buffer.concat(chunks), complete: true }));
      res.on('error', () => resolve({ body: Buffer.concat(chunks), complete: false }));
      res.on('close', () => resolve({ body: Buffer.concat(chunks), complete: res.complete }));
    });
    req.on('error', () => resolve({ body: Buffer.concat(chunks), complete: false }));
    req.end();
  });
  return { state, done };
}

/** curl through the gate: exit code, stderr, and the body it wrote. */
function curl(url: string, extra: string[] = []): Promise<{ code: number; stderr: string; body: Buffer }> {
  return new Promise((resolve) => {
    const p = spawn('curl', ['-sS', '--noproxy', '', '-x', `http://127.0.0.1:${g.port}`, ...extra, url, '-o', '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, stderr: err, body: Buffer.concat(out) }));
  });
}

/** An HTTP/1.0 request through the gate over a raw socket: everything it answers until it closes. */
function http10(url: string): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: g.port });
    const data: Buffer[] = [];
    s.on('connect', () => s.write(`GET ${url} HTTP/1.0\r\nHost: ${new URL(url).host}\r\n\r\n`));
    s.on('data', (d) => data.push(d));
    s.on('close', () => resolve(Buffer.concat(data)));
    s.on('error', () => {});
    setTimeout(() => s.destroy(), 15_000).unref();
  });
}

const records = (pred: (r: Record<string, unknown>) => boolean, n = 1) => g.waitRecords((r) => pred(r as unknown as Record<string, unknown>), n, 8000);

beforeAll(async () => {
  restoreConsole = quietConsole();
  origin = await startOrigin();
  origin.route('/good.exe', send(good, { chunk: 256 * 1024 }));
  origin.route('/tampered.exe', send(tampered, { chunk: 256 * 1024 }));
  origin.route('/good-chunked.exe', send(good, { chunk: 256 * 1024, contentLength: null }));
  origin.route('/tampered-chunked.exe', send(tampered, { chunk: 256 * 1024, contentLength: null }));
  const gz = gzipSync(good);
  origin.route('/good.exe.gz', send(gz, { chunk: 64 * 1024, headers: { 'content-encoding': 'gzip' } }));
  origin.route('/dies.exe', send(good, { chunk: 256 * 1024, stopAfter: { bytes: good.byteLength - 300 * 1024, then: 'destroy' } }));
  const cert = makeOriginCert();
  sorigin = await startOrigin({ tls: cert });
  sorigin.route('/good.exe', send(good, { chunk: 256 * 1024 }));
  sorigin.route('/tampered.exe', send(tampered, { chunk: 256 * 1024 }));
  g = await startGate({
    hosts: [{ pattern: '127.0.0.1', mode: 'inspect', hold: 'tail' }],
    limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 5000, cacheTtlMs: 2000 },
    upstreamCaPem: cert.certPem,
  });
  whole = await startGate({ hosts: [{ pattern: '127.0.0.1', mode: 'inspect' }], limits: { memoryHoldBytes: 1 * MiB, idleTimeoutMs: 5000 } });
}, 60_000);

afterAll(async () => {
  await g?.dispose();
  await whole?.dispose();
  await origin?.close();
  await sorigin?.close();
  restoreConsole?.();
});

describe('tail hold: allow', () => {
  it('streams an allowed PE byte-identical, marked as a tail hold in its headers and its audit record', async () => {
    const r = await proxyRequest(g.port, origin.url('/good.exe'), { timeoutMs: 20_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.headers['x-patchgate-hold']).toBe('tail');
    expect(Number(r.headers['content-length'])).toBe(good.byteLength);
    expect(sha256(r.body)).toBe(sha256(good));
    const [rec] = await records((x) => x.url === origin.url('/good.exe') && x.served === 'full');
    expect(rec).toMatchObject({ verdict: 'allow', hold: 'tail', bytesToClient: good.byteLength, format: 'pe' });
  });

  it('the same rules without `hold: tail` hold the whole payload (audit hold: whole)', async () => {
    const r = await proxyRequest(whole.port, origin.url('/good.exe'), { timeoutMs: 20_000 });
    expect(r.status).toBe(200);
    expect(r.headers['x-patchgate-hold']).toBeUndefined();
    expect(r.headers['x-patchgate-verdict']).toBe('allow');
    expect(sha256(r.body)).toBe(sha256(good));
    const [rec] = await whole.waitRecords((x) => x.url === origin.url('/good.exe') && x.served === 'full');
    expect(rec!.hold).toBe('whole');
  });

  it('real curl gets the allowed payload complete (exit 0)', async () => {
    const r = await curl(origin.url('/good.exe') + '?curl');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sha256(r.body)).toBe(sha256(good));
  });
});

describe('tail hold: block cuts the transfer', () => {
  it('a tampered PE: the client gets a transfer short of its Content-Length, without the withheld end', async () => {
    const r = await proxyRequest(g.port, origin.url('/tampered.exe'), { timeoutMs: 20_000 });
    expect(r.status).toBe(200); // the head went out before the verdict: no 403 can follow it
    expect(r.complete).toBe(false);
    expect(Number(r.headers['content-length'])).toBe(tampered.byteLength);
    expect(r.body.byteLength).toBe(LIMIT);
    expect(r.body.equals(tampered.subarray(0, LIMIT))).toBe(true);
    const [rec] = await records((x) => x.url === origin.url('/tampered.exe'));
    expect(rec).toMatchObject({ served: 'blocked', verdict: 'block', hold: 'tail', bytesToClient: LIMIT });
    expect((rec!.reasons as { code: string }[]).map((x) => x.code)).toContain('DIGEST_MISMATCH');
  });

  it('real curl reports the cut transfer ("transfer closed with N bytes remaining", exit 18)', async () => {
    const r = await curl(origin.url('/tampered.exe') + '?curl');
    expect(r.code).toBe(18);
    expect(r.stderr).toMatch(new RegExp(`transfer closed with ${tampered.byteLength - LIMIT} bytes remaining`));
    expect(r.body.byteLength).toBe(LIMIT);
  });

  it('a chunked upstream streams chunked; a block leaves out the last chunk (curl exit 18)', async () => {
    const ok = await proxyRequest(g.port, origin.url('/good-chunked.exe'), { timeoutMs: 20_000 });
    expect(ok.complete).toBe(true);
    expect(ok.headers['transfer-encoding']).toBe('chunked');
    expect(ok.headers['x-patchgate-hold']).toBe('tail');
    expect(sha256(ok.body)).toBe(sha256(good));
    const bad = await proxyRequest(g.port, origin.url('/tampered-chunked.exe'), { timeoutMs: 20_000 });
    expect(bad.complete).toBe(false);
    expect(bad.headers['transfer-encoding']).toBe('chunked');
    expect(bad.body.byteLength).toBe(LIMIT);
    // The raw bytes end without the last-chunk.
    expect(bad.raw.subarray(-5).toString('latin1')).not.toBe('0\r\n\r\n');
    const c = await curl(origin.url('/tampered-chunked.exe') + '?curl');
    expect(c.code).toBe(18);
    expect(c.stderr).toMatch(/transfer closed with outstanding read data remaining/);
  });

  it('an upstream that dies mid-way: the client is cut, never given the end (UPSTREAM_ERROR)', async () => {
    const r = await proxyRequest(g.port, origin.url('/dies.exe'), { timeoutMs: 20_000 });
    expect(r.complete).toBe(false);
    expect(r.body.byteLength).toBeLessThanOrEqual(good.byteLength - 300 * 1024 - TAIL_HOLD_BYTES);
    const [rec] = await records((x) => x.url === origin.url('/dies.exe'));
    expect(rec).toMatchObject({ served: 'blocked', hold: 'tail' });
    expect((rec!.reasons as { code: string }[])[0]!.code).toBe('UPSTREAM_ERROR');
  });

  it('a PE whose headers place its end far beyond what arrives: the last MiB that arrived is still withheld', async () => {
    // Section and certificate table claimed at 64 MiB: only the lag behind the arrival front withholds anything.
    const lying = Buffer.from(tampered);
    const coff = lying.readUInt32LE(0x3c) + 4;
    const opt = coff + 20;
    const sect = opt + lying.readUInt16LE(coff + 16);
    lying.writeUInt32LE(64 * MiB, sect + 16); // SizeOfRawData
    lying.writeUInt32LE(64 * MiB, opt + 112 + 4 * 8); // certificate table offset (PE32+)
    origin.route('/lying.exe', send(lying, { chunk: 256 * 1024, contentLength: null }));
    const r = await proxyRequest(g.port, origin.url('/lying.exe'), { timeoutMs: 20_000 });
    expect(r.complete).toBe(false);
    // Released a step at a time (RELEASE_STEP_BYTES): up to one step more may stay withheld, never less.
    expect(r.body.byteLength).toBeLessThanOrEqual(lying.byteLength - TAIL_HOLD_BYTES);
    expect(r.body.byteLength).toBeGreaterThan(lying.byteLength - TAIL_HOLD_BYTES - RELEASE_STEP_BYTES);
  });
});

describe('tail hold: backpressure from a slow client', () => {
  it('a client that stops reading stops the upstream too: what the gate takes in stays bounded, and the payload arrives whole once it reads again', async () => {
    // 48 MiB streamed to a client that reads nothing for a while: were backpressure ignored anywhere
    // on the way (tail release, client writes, spool, digest thread), the gate would take it all in.
    const big = syntheticBytes(syntheticPe(48 * MiB, 11));
    let trace: { written: number } | undefined;
    origin.route('/slow-client.exe', send(big, { chunk: 256 * 1024, trace: (t) => (trace = t) }));
    const u = new URL(origin.url('/slow-client.exe'));
    const got = await new Promise<{ body: Buffer; complete: boolean; writtenWhileStalled: number }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: g.port, path: u.href, headers: { host: u.host }, agent: false }, (res) => {
        res.pause();
        const chunks: Buffer[] = [];
        setTimeout(() => {
          const writtenWhileStalled = trace?.written ?? 0;
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('close', () => resolve({ body: Buffer.concat(chunks), complete: res.complete, writtenWhileStalled }));
          res.resume();
        }, 1500);
      });
      req.on('error', reject);
      req.end();
    });
    // Socket buffers on the two loopback connections, the 1 MiB withheld tail plus a release step,
    // two spool writes of 512 KiB in flight and the digest thread's 1 MiB ring: well under 24 MiB.
    expect(got.writtenWhileStalled).toBeGreaterThan(TAIL_HOLD_BYTES);
    expect(got.writtenWhileStalled).toBeLessThan(24 * MiB);
    const [rec] = await records((x) => x.url === origin.url('/slow-client.exe') && x.served === 'full');
    expect(rec).toMatchObject({ verdict: 'allow', hold: 'tail' });
    expect(got.complete).toBe(true);
    expect(sha256(got.body)).toBe(sha256(big));
  }, 60_000);
});

describe('tail hold over intercepted HTTPS', () => {
  it('an allowed PE arrives byte-identical, a tampered one is cut without its end', async () => {
    const ok = await httpsThroughProxy(g.port, sorigin.url('/good.exe'), { ca: g.caPem, timeoutMs: 20_000 });
    expect(ok.complete).toBe(true);
    expect(ok.headers['x-patchgate-hold']).toBe('tail');
    expect(sha256(ok.body)).toBe(sha256(good));
    const bad = await httpsThroughProxy(g.port, sorigin.url('/tampered.exe'), { ca: g.caPem, timeoutMs: 20_000 });
    expect(bad.status).toBe(200);
    expect(bad.complete).toBe(false);
    expect(bad.body.byteLength).toBe(LIMIT);
  });
});

describe('tail hold: nothing withheld leaves before the verdict', () => {
  it('while the last bytes are still upstream, the client holds exactly the streamed prefix; then the rest after the allow', async () => {
    const h = heldBack(good, 100);
    origin.route('/slow-end.exe', h.route);
    const c = watchedGet(origin.url('/slow-end.exe'));
    await waitFor(() => c.state.received >= LIMIT, 10_000);
    await sleep(300); // whatever else the gate would send has time to arrive
    expect(c.state.received).toBe(LIMIT);
    expect(c.state.headers['x-patchgate-hold']).toBe('tail');
    h.release();
    const r = await c.done;
    expect(r.complete).toBe(true);
    expect(sha256(r.body)).toBe(sha256(good));
  });

  it('a second client joining the download mid-stream waits for the verdict and gets the verified copy whole', async () => {
    const h = heldBack(good, 100);
    origin.route('/joined.exe', h.route);
    const first = watchedGet(origin.url('/joined.exe'));
    await waitFor(() => first.state.received >= LIMIT, 10_000);
    const second = watchedGet(origin.url('/joined.exe'));
    await sleep(300);
    expect(second.state.headersAt).toBe(0); // nothing at all before the verdict
    const releasedAt = Date.now();
    h.release();
    const [a, b] = await Promise.all([first.done, second.done]);
    expect(sha256(a.body)).toBe(sha256(good));
    expect(sha256(b.body)).toBe(sha256(good));
    expect(second.state.headersAt).toBeGreaterThanOrEqual(releasedAt);
    expect(second.state.headers['x-patchgate-verdict']).toBe('allow');
    expect(origin.hits('/joined.exe')).toBe(1);
    const recs = await records((x) => x.url === origin.url('/joined.exe') && x.served === 'full', 2);
    expect(recs.map((x) => `${x.hold}:${x.shared ?? false}`).sort()).toEqual(['tail:false', 'whole:true']);
  });
});

describe('tail hold: clients and bodies that cannot stream', () => {
  it('an HTTP/1.0 client, body without a length: held whole (it could not tell a cut from the end)', async () => {
    const raw = await http10(origin.url('/good-chunked.exe') + '?v10');
    const sep = raw.indexOf('\r\n\r\n');
    const head = raw.subarray(0, sep).toString('latin1');
    expect(head).toMatch(/^HTTP\/1\.[01] 200/);
    expect(head.toLowerCase()).toContain('x-patchgate-verdict: allow');
    expect(head.toLowerCase()).toContain(`content-length: ${good.byteLength}`);
    expect(sha256(raw.subarray(sep + 4))).toBe(sha256(good));
    const [rec] = await records((x) => x.url === origin.url('/good-chunked.exe') + '?v10' && x.served === 'full');
    expect(rec!.hold).toBe('whole');
  });

  it('an HTTP/1.0 client, body with a Content-Length: streamed (a cut is short of the length)', async () => {
    const raw = await http10(origin.url('/tampered.exe') + '?v10');
    const sep = raw.indexOf('\r\n\r\n');
    const head = raw.subarray(0, sep).toString('latin1').toLowerCase();
    expect(head).toContain('x-patchgate-hold: tail');
    expect(head).toContain(`content-length: ${tampered.byteLength}`);
    expect(raw.byteLength - sep - 4).toBe(LIMIT);
  });

  it('a gzip body streams decoded and chunked (its decoded length is unknown)', async () => {
    const r = await proxyRequest(g.port, origin.url('/good.exe.gz'), { timeoutMs: 20_000 });
    expect(r.complete).toBe(true);
    expect(r.headers['content-encoding']).toBeUndefined();
    expect(r.headers['transfer-encoding']).toBe('chunked');
    expect(r.headers['x-patchgate-hold']).toBe('tail');
    expect(sha256(r.body)).toBe(sha256(good));
  });

  it('a Range request is served from the verified copy (206), not streamed', async () => {
    const r = await proxyRequest(g.port, origin.url('/good.exe') + '?range', { headers: { range: 'bytes=100-199' }, timeoutMs: 20_000 });
    expect(r.status).toBe(206);
    expect(r.headers['x-patchgate-hold']).toBeUndefined();
    expect(r.body.equals(good.subarray(100, 200))).toBe(true);
  });
});
