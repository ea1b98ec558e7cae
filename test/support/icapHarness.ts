/**
 * End-to-end harness for `patchgate icap`: an in-process IcapService with its own temp folders and
 * audit file, and a raw ICAP client (RFC 3507) written independently of the service's parser, so
 * that the tests speak the protocol as Squid does: Encapsulated offsets, previews, 100 Continue,
 * chunked bodies, persistent connections. Nothing leaves 127.0.0.1.
 */
import net, { type Socket } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IcapService, type IcapLimits, type IcapServiceOptions } from '../../src/icap/icapService.js';
import { HostRules } from '../../src/policy/hostRules.js';
import type { HostRule } from '../../src/policy/rulesFile.js';
import { AuditLog } from '../../src/audit/auditLog.js';
import type { AuditRecord } from '../../src/audit/auditRecord.js';
import type { ApprovedCaPolicy } from '../../src/verify/approvedCaPolicy.js';
import { labPolicy } from './fixtures.js';
import type { AllowedPeers } from '../../src/icap/allowedPeers.js';
import type { GateObserver } from '../../src/metrics/gateObserver.js';
import { waitFor } from './gateHarness.js';

export const ICAP_LIMITS: IcapLimits = { maxPayloadBytes: 64 * 1024 * 1024, idleTimeoutMs: 2000, totalTimeoutMs: 30_000, memoryHoldBytes: 256 * 1024 };

export interface IcapHandle {
  service: IcapService;
  port: number;
  base: string;
  spoolBase: string;
  audit: AuditLog;
  auditFile: string;
  records(): (AuditRecord & { msg: string })[];
  waitRecords(pred: (r: AuditRecord) => boolean, n?: number, ms?: number): Promise<AuditRecord[]>;
  spoolFiles(): string[];
  stop(graceMs?: number): Promise<void>;
  dispose(): Promise<void>;
}

export async function startIcap(o: {
  hosts: HostRule[]; limits?: Partial<IcapLimits>; policy?: ApprovedCaPolicy; nonPayload?: 'pass' | 'block'; unsignedDeltas?: 'pass' | 'block';
  previewBytes?: number; maxConnections?: number; port?: number; allowedPeers?: AllowedPeers; observer?: GateObserver; keepAliveMs?: number; spoolBase?: string; auditOnError?: 'block' | 'serve';
  /** Per-channel trust, as `patchgate icap` wires it from the rules' channels. */
  trustFor?: IcapServiceOptions['trustFor'];
} = { hosts: [] }): Promise<IcapHandle> {
  const base = mkdtempSync(join(tmpdir(), 'patchgate-icap-'));
  const spoolBase = o.spoolBase ?? join(base, 'spool');
  const auditFile = join(base, 'audit.jsonl');
  const audit = new AuditLog(auditFile);
  const service = new IcapService({
    listen: { host: '127.0.0.1', port: o.port ?? 0 }, policy: o.policy ?? labPolicy(), trustFor: o.trustFor, hostRules: new HostRules(o.hosts), rulesSha256: 'test', audit,
    limits: { ...ICAP_LIMITS, ...o.limits }, nonPayload: o.nonPayload ?? 'pass', unsignedDeltas: o.unsignedDeltas ?? 'block', spoolBase,
    previewBytes: o.previewBytes, maxConnections: o.maxConnections, version: 'test', allowedPeers: o.allowedPeers, observer: o.observer, keepAliveMs: o.keepAliveMs, auditOnError: o.auditOnError,
  });
  await service.start();
  const records = () => {
    audit.flush();
    if (!existsSync(auditFile)) return [];
    return readFileSync(auditFile, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as AuditRecord & { msg: string });
  };
  let stopped = false;
  const handle: IcapHandle = {
    service, port: service.address.port, base, spoolBase, audit, auditFile, records,
    async waitRecords(pred, n = 1, ms = 3000) {
      const r = await waitFor(() => {
        const x = records().filter(pred);
        return x.length >= n ? x : undefined;
      }, ms);
      return r ?? records().filter(pred);
    },
    spoolFiles() {
      if (!existsSync(spoolBase)) return [];
      return readdirSync(spoolBase).flatMap((d) => readdirSync(join(spoolBase, d)).map((f) => join(d, f)));
    },
    async stop(graceMs = 0) {
      if (stopped) return;
      stopped = true;
      await service.stop(graceMs);
    },
    async dispose() {
      await handle.stop(0);
      await audit.close();
      rmSync(base, { recursive: true, force: true });
    },
  };
  return handle;
}

// ---------------------------------------------------------------------------------------------
// A raw ICAP client

export interface RespmodRequest {
  /** Encapsulated HTTP request head, e.g. `GET http://127.0.0.1:8/a.exe HTTP/1.1\r\nHost: ...\r\n\r\n`; omit for none. */
  reqHead?: string;
  /** Encapsulated HTTP response head; the status line and headers. */
  resHead: string;
  /** The response body; undefined: null-body. */
  body?: Buffer;
  /** Preview size to offer (the body's first bytes are sent as the preview). */
  preview?: number;
  allow204?: boolean;
  headers?: Record<string, string>;
  /** Size of the body chunks sent. */
  chunkSize?: number;
  /** Send only the first `stopAfter` body bytes, then nothing more (a stalled client). */
  stopAfter?: number;
  service?: string;
}

export interface IcapAnswer {
  status: number;
  headers: Record<string, string>;
  /** Saw 100 Continue before the final answer. */
  continued: boolean;
  http?: { statusLine: string; status: number; headers: Record<string, string> };
  body?: Buffer;
  /** The connection was closed by the service after this answer. */
  closedAfter: boolean;
}

export const httpRequestHead = (url: string, method = 'GET') => `${method} ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\n\r\n`;
export const httpResponseHead = (status: number, headers: Record<string, string | number> = {}) =>
  `HTTP/1.1 ${status} ${status === 200 ? 'OK' : 'X'}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;

function chunked(data: Buffer, size: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) {
    const c = data.subarray(i, i + size);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

function parseHead(text: string): { first: string; headers: Record<string, string> } {
  const [first, ...lines] = text.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { first: first!, headers };
}

/** De-chunks `buf` from `at`; undefined while incomplete. */
function dechunk(buf: Buffer, at: number): { body: Buffer; end: number } | undefined {
  const parts: Buffer[] = [];
  for (;;) {
    const lf = buf.indexOf('\r\n', at);
    if (lf < 0) return undefined;
    const size = parseInt(buf.toString('latin1', at, lf).split(';')[0]!, 16);
    if (Number.isNaN(size)) throw new Error(`bad chunk size at ${at}`);
    if (size === 0) {
      const end = buf.indexOf('\r\n\r\n', lf);
      if (end < 0) return undefined;
      return { body: Buffer.concat(parts), end: end + 4 };
    }
    if (buf.length < lf + 2 + size + 2) return undefined;
    parts.push(buf.subarray(lf + 2, lf + 2 + size));
    at = lf + 2 + size + 2;
  }
}

/** One persistent ICAP connection; requests one at a time, as Squid sends them. */
export class IcapClient {
  private readonly socket: Socket;
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  closed = false;
  private readonly ready: Promise<void>;

  constructor(readonly port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  write(data: Buffer | string): void {
    this.socket.write(data);
  }

  /** Bytes received and not yet read as an answer. */
  get pendingBytes(): number {
    return this.buf.length;
  }

  /** Waits until `parse` returns a value (called on every arrival), or the connection closes, or `ms` pass. */
  private async until<T>(parse: () => T | undefined, ms: number): Promise<T> {
    await this.ready;
    const deadline = Date.now() + ms;
    for (;;) {
      const v = parse();
      if (v !== undefined) return v;
      if (this.closed) throw new Error(`connection closed; received: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete answer in ${ms} ms; received: ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
      this.waiter = undefined;
    }
  }

  /** Reads one ICAP response head (and its encapsulated parts); 100 Continue is returned as such. */
  async readAnswer(ms = 10_000): Promise<IcapAnswer> {
    return this.until(() => {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return undefined;
      const { first, headers } = parseHead(this.buf.toString('latin1', 0, end));
      const status = Number(first.split(' ')[1]);
      if (status === 100) {
        this.buf = this.buf.subarray(end + 4);
        return { status, headers, continued: true, closedAfter: false };
      }
      const enc = Object.fromEntries((headers['encapsulated'] ?? 'null-body=0').split(',').map((p) => p.trim().split('=')).map(([k, v]) => [k!, Number(v)]));
      const start = end + 4;
      let http: IcapAnswer['http'];
      let body: Buffer | undefined;
      let consumed = start;
      if (enc['res-hdr'] !== undefined) {
        const hdrEnd = enc['res-body'] ?? enc['null-body']!;
        if (this.buf.length < start + hdrEnd) return undefined;
        const h = parseHead(this.buf.toString('latin1', start + enc['res-hdr'], start + hdrEnd - 4));
        http = { statusLine: h.first, status: Number(h.first.split(' ')[1]), headers: h.headers };
        consumed = start + hdrEnd;
      }
      if (enc['res-body'] !== undefined) {
        const d = dechunk(this.buf, start + enc['res-body']);
        if (!d) return undefined;
        body = d.body;
        consumed = d.end;
      }
      this.buf = this.buf.subarray(consumed);
      return { status, headers, continued: false, http, body, closedAfter: false };
    }, ms);
  }

  /** Waits for the service to close the connection. */
  async waitClosed(ms = 3000): Promise<boolean> {
    try {
      await this.until(() => (this.closed ? true : undefined), ms);
      return true;
    } catch {
      return this.closed;
    }
  }

  async options(service = '/respmod'): Promise<IcapAnswer> {
    await this.ready;
    this.write(`OPTIONS icap://127.0.0.1:${this.port}${service} ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n`);
    return this.readAnswer();
  }

  /** One RESPMOD, as Squid sends it: heads, then the preview, then (after 100 Continue) the rest. */
  async respmod(r: RespmodRequest, ms = 10_000): Promise<IcapAnswer> {
    await this.ready;
    const req = r.reqHead ?? '';
    const res = r.resHead;
    const parts: string[] = [];
    if (r.reqHead !== undefined) parts.push(`req-hdr=0`);
    parts.push(`res-hdr=${req.length}`);
    parts.push(r.body ? `res-body=${req.length + res.length}` : `null-body=${req.length + res.length}`);
    const hdrs = { ...(r.preview !== undefined && r.body ? { Preview: String(r.preview) } : {}), ...(r.allow204 ? { Allow: '204' } : {}), ...r.headers };
    const head = `RESPMOD icap://127.0.0.1:${this.port}${r.service ?? '/respmod'} ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: ${parts.join(', ')}\r\n${Object.entries(hdrs).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
    this.write(Buffer.from(head + req + res, 'latin1'));
    if (!r.body) return this.readAnswer(ms);
    const size = r.chunkSize ?? 16 * 1024;
    const body = r.stopAfter !== undefined ? r.body.subarray(0, r.stopAfter) : r.body;
    if (r.preview !== undefined) {
      const pv = body.subarray(0, r.preview);
      const ieof = r.body.length <= r.preview && r.stopAfter === undefined;
      this.write(Buffer.concat([chunked(pv, size), Buffer.from(ieof ? '0; ieof\r\n\r\n' : '0\r\n\r\n')]));
      if (ieof) return this.readAnswer(ms);
      const a = await this.readAnswer(ms);
      if (a.status !== 100) return a;
      const rest = body.subarray(r.preview);
      this.write(Buffer.concat([chunked(rest, size), ...(r.stopAfter !== undefined ? [] : [Buffer.from('0\r\n\r\n')])]));
      const b = await this.readAnswer(ms);
      return { ...b, continued: true };
    }
    this.write(Buffer.concat([chunked(body, size), ...(r.stopAfter !== undefined ? [] : [Buffer.from('0\r\n\r\n')])]));
    return this.readAnswer(ms);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One RESPMOD on a fresh connection, closed afterwards. */
export async function respmodOnce(port: number, r: RespmodRequest, ms?: number): Promise<IcapAnswer> {
  const c = new IcapClient(port);
  try {
    const a = await c.respmod(r, ms);
    a.closedAfter = await c.waitClosed(150);
    return a;
  } finally {
    c.close();
  }
}
