/**
 * Shared pieces of the hostile suites: raw TCP origins that can say anything (lying lengths,
 * absurd chunk sizes, header floods, resets, TLS garbage), raw proxy clients, the parallel
 * legitimate client every hostile test runs beside its attack, and the leak check (open file
 * descriptors of this process, which hosts the gate, and the spool folder).
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import http from 'node:http';
import https from 'node:https';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { expect } from 'vitest';
import { fx } from '../support/fixtures.js';
import { type GateHandle, type Origin, filesBelow, proxyRequest, rawExchange, send, sleep } from '../support/gateHarness.js';

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
export const fixture = (name: string) => readFileSync(fx(name));

/** Open file descriptors of this process (the gate runs in it). */
export const fdCount = () => readdirSync('/proc/self/fd').length;
export const fdList = () => readdirSync('/proc/self/fd').map((fd) => { try { return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`; } catch { return fd; } });

/** Drops the gate's pooled upstream keep-alive sockets (they are not leaks, but they hold fds). */
export function dropPooledUpstreams(g: GateHandle): void {
  const p = g.gate as unknown as { upstream: { httpAgent?: http.Agent; httpsAgent?: https.Agent } };
  for (const a of [p.upstream.httpAgent, p.upstream.httpsAgent]) {
    if (!a) continue;
    for (const list of [a.freeSockets, a.sockets] as Record<string, Socket[] | undefined>[]) {
      for (const k of Object.keys(list)) for (const s of list[k] ?? []) s.destroy();
    }
  }
}

/**
 * After a test: nothing in flight, no spool file, and the process's fd count back to the baseline
 * (within `slack`) once the test's own sockets are closed and pooled upstream sockets dropped.
 */
export async function expectNoLeak(g: GateHandle, baseline: number, closeOwn: () => Promise<void> | void = () => {}, slack = 3): Promise<void> {
  await closeOwn();
  let now = fdCount();
  const spool = g.spoolDir();
  const spoolFiles = () => (spool ? filesBelow(spool) : []);
  // A released spool file is unlinked asynchronously (by design): wait for it within the same bound.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    dropPooledUpstreams(g);
    now = fdCount();
    if (now <= baseline + slack && g.gate.inFlight === 0 && spoolFiles().length === 0) break;
    await sleep(50);
  }
  expect(g.gate.inFlight, 'holds still in flight').toBe(0);
  expect(spoolFiles(), 'spool files left').toEqual([]);
  expect(now, `open fds ${now} vs baseline ${baseline}:\n${fdList().join('\n')}`).toBeLessThanOrEqual(baseline + slack);
}

/** The legitimate client that runs beside each attack: a signed PE, allowed and byte-identical. */
export async function legitimateFetch(g: GateHandle, origin: Origin, tag: string): Promise<void> {
  const good = fixture('good.exe');
  const path = `/legit/${tag.replace(/[^a-z0-9]+/gi, "-")}-${Math.random().toString(36).slice(2)}.exe`;
  origin.route(path, send(good, { chunk: 1024, delayMs: 5 }));
  const r = await proxyRequest(g.port, origin.url(path), { timeoutMs: 15_000 });
  expect(r.status, `legitimate client during "${tag}": ${r.body.toString().slice(0, 200)}`).toBe(200);
  expect(r.headers['x-patchgate-verdict']).toBe('allow');
  expect(sha256(r.body)).toBe(sha256(good));
}

// ---------------------------------------------------------------------------------------------
// Raw origin: reads one request head per connection (or more, for keep-alive), answers with bytes.

export interface RawRequest { method: string; target: string; head: string }
export type RawHandler = (socket: Socket, req: RawRequest) => void | Promise<void>;

export interface RawOrigin {
  port: number;
  url(path: string): string;
  route(path: string, h: RawHandler): void;
  hits(path: string): number;
  close(): Promise<void>;
}

export async function startRawOrigin(): Promise<RawOrigin> {
  const routes = new Map<string, RawHandler>();
  const hits = new Map<string, number>();
  const sockets = new Set<Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      const [method = '', target = ''] = head.split('\r\n')[0]!.split(' ');
      const path = target.replace(/^https?:\/\/[^/]+/, '').split('?')[0]!;
      hits.set(path, (hits.get(path) ?? 0) + 1);
      const h = routes.get(path);
      if (!h) { s.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'); return; }
      Promise.resolve(h(s, { method, target, head })).catch(() => s.destroy());
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    route: (path, h) => void routes.set(path, h),
    hits: (path) => hits.get(path) ?? 0,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); setTimeout(r, 300).unref(); }),
  };
}

/** Writes `data` in pieces with a pause between them, stopping when the socket is gone. */
export async function trickle(s: Socket, data: Buffer, piece: number, pauseMs: number): Promise<boolean> {
  for (let i = 0; i < data.length; i += piece) {
    if (s.destroyed) return false;
    s.write(data.subarray(i, i + piece));
    await sleep(pauseMs);
  }
  return !s.destroyed;
}

/** Raw bytes to the proxy (rawExchange, waiting 4 s by default); resolves with everything it sent back. */
export function rawClient(port: number, data: string | Buffer, ms = 4000): ReturnType<typeof rawExchange> {
  return rawExchange(port, data, ms);
}

/** Splits raw HTTP/1.1 responses (Content-Length or chunked bodies) out of a byte stream. */
export function parseResponses(raw: Buffer): { status: number; headers: Record<string, string>; body: Buffer }[] {
  const out: { status: number; headers: Record<string, string>; body: Buffer }[] = [];
  let at = 0;
  while (at < raw.length) {
    const end = raw.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const lines = raw.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) break;
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) { const i = l.indexOf(':'); if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim(); }
    at = end + 4;
    let body = Buffer.alloc(0);
    if (headers['transfer-encoding']?.includes('chunked')) {
      const parts: Buffer[] = [];
      for (;;) {
        const le = raw.indexOf('\r\n', at);
        if (le < 0) { at = raw.length; break; }
        const n = parseInt(raw.subarray(at, le).toString('latin1'), 16);
        at = le + 2;
        if (!n) { at += 2; break; }
        parts.push(raw.subarray(at, at + n));
        at += n + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = raw.subarray(at, at + n);
      at += n;
    } else if (m[1] !== '304' && m[1] !== '204') {
      body = raw.subarray(at);
      at = raw.length;
    }
    out.push({ status: Number(m[1]), headers, body });
  }
  return out;
}

/** CONNECT through the gate; the socket is always destroyed unless the tunnel is returned (200). */
export function connectRaw(port: number, target: string, ms = 3000): Promise<{ status: number; socket?: Socket }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (status: number, keep: boolean) => {
      if (done) return;
      done = true;
      s.removeAllListeners('data');
      if (!keep) s.destroy();
      resolve({ status, socket: keep ? s : undefined });
    };
    s.on('connect', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1'))?.[1] ?? 0);
      if (status === 200 && buf.length > end + 4) s.unshift(buf.subarray(end + 4));
      finish(status, status === 200);
    });
    s.on('error', () => finish(0, false));
    s.on('close', () => finish(0, false));
    setTimeout(() => finish(0, false), ms).unref();
  });
}
