// HTTP(S) clients for the benchmark: direct to the origin, or through the gate (absolute-form
// requests for HTTP; CONNECT + TLS, trusting the gate's interception CA, for HTTPS). Keep-alive
// agents throughout; every response body is read and counted, never stored.
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { nowMs } from './common.mjs';

/** An http.Agent whose connections come from an async function (a tunnel, or TLS we set up ourselves). */
class SocketAgent extends http.Agent {
  constructor(opts, connect) {
    super(opts);
    this.connect = connect;
  }
  createConnection(options, callback) {
    this.connect(options).then((s) => callback(null, s), (e) => callback(e));
    return undefined;
  }
}

/**
 * CONNECT host:port through the gate, then TLS to the interception leaf. Resolves with the socket
 * and the timings: CONNECT answered, TLS handshake done.
 */
export function connectTunnel({ gatePort, host, port, ca, tlsTarget = true }) {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.request({ host: '127.0.0.1', port: gatePort, method: 'CONNECT', path: `${host}:${port}`, headers: { host: `${host}:${port}` }, agent: false });
    req.once('connect', (res, sock, head) => {
      if (res.statusCode !== 200) {
        sock.destroy();
        return reject(new Error(`CONNECT ${host}:${port} answered ${res.statusCode}`));
      }
      if (head?.length) sock.unshift(head);
      const t1 = nowMs();
      if (!tlsTarget) return resolve({ socket: sock, connectMs: t1 - t0, tlsMs: 0, totalMs: t1 - t0 });
      const s = tls.connect({ socket: sock, host, servername: net.isIP(host) ? undefined : host, ca });
      s.once('secureConnect', () => {
        const t2 = nowMs();
        resolve({ socket: s, connectMs: t1 - t0, tlsMs: t2 - t1, totalMs: t2 - t0 });
      });
      s.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** TLS straight to the origin (127.0.0.1), with SNI and name check for `host`. */
export function connectDirectTls({ host, port, ca }) {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const s = tls.connect({ host: '127.0.0.1', port, servername: net.isIP(host) ? undefined : host, ca, checkServerIdentity: (_h, cert) => tls.checkServerIdentity(host, cert) });
    s.once('secureConnect', () => resolve({ socket: s, connectMs: 0, tlsMs: nowMs() - t0, totalMs: nowMs() - t0 }));
    s.on('error', reject);
  });
}

/**
 * A client for one origin host:port and one route.
 *   route 'direct' | 'gate'; proto 'http' | 'https'
 *   gate: { port, ca }  (for route 'gate'); originCa: the origin's CA (direct https)
 *   tunnelTls: false for a blind tunnel (the gate does not intercept the host): TLS end to end with the origin
 */
export function makeClient({ route, proto, host, port, gate, originCa, keepAlive = true, maxSockets = Infinity, timeoutMs = 300_000 }) {
  const agentOpts = { keepAlive, maxSockets, keepAliveMsecs: 30_000 };
  let agent;
  if (proto === 'http') agent = new http.Agent(agentOpts);
  else if (route === 'gate') {
    agent = new SocketAgent(agentOpts, async (o) => {
      const intercepted = gate.intercepts(o.host);
      const t = await connectTunnel({ gatePort: gate.port, host: o.host, port: o.port, ca: gate.ca, tlsTarget: intercepted });
      if (intercepted) return t.socket;
      // A blind tunnel: the TLS session is with the origin itself.
      return await new Promise((resolve, reject) => {
        const s = tls.connect({ socket: t.socket, servername: o.host, ca: originCa });
        s.once('secureConnect', () => resolve(s));
        s.on('error', reject);
      });
    });
  } else agent = new SocketAgent(agentOpts, async (o) => (await connectDirectTls({ host: o.host, port: o.port, ca: originCa })).socket);

  const hostHeader = `${host}:${port}`;
  function get(path, headers = {}) {
    return new Promise((resolve, reject) => {
      const t0 = nowMs();
      let opts;
      if (proto === 'http' && route === 'gate') opts = { host: '127.0.0.1', port: gate.port, path: `http://${hostHeader}${path}` };
      else if (proto === 'http') opts = { host: '127.0.0.1', port, path };
      else opts = { host, port, path };
      const req = http.request({ ...opts, method: 'GET', agent, headers: { host: hostHeader, ...headers } }, (res) => {
        const tHead = nowMs();
        let bytes = 0;
        res.on('data', (c) => { bytes += c.byteLength; });
        res.once('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode, bytes, t0, tHead, tEnd: nowMs(),
            auditId: res.headers['x-patchgate-audit-id'], verdict: res.headers['x-patchgate-verdict'],
          });
        });
        res.on('error', (e) => { clearTimeout(timer); reject(e); });
      });
      const timer = setTimeout(() => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${route} ${proto} ${hostHeader}${path}`)), timeoutMs);
      req.on('error', (e) => { clearTimeout(timer); reject(e); });
      req.end();
    });
  }
  return { get, close: () => agent.destroy(), agent };
}

/**
 * `concurrency` workers each issue requests back to back for `durationMs` (after `warmupMs` not
 * counted). `pathFor(i)` gives the i-th request's path. Returns req/s and latency percentiles.
 */
export async function loadRun({ client, concurrency, durationMs, warmupMs = 300, pathFor, expectBytes }) {
  let seq = 0;
  const lat = [];
  let errors = 0;
  let wrong = 0;
  let bytes = 0;
  const tWarm = nowMs();
  const tStart = tWarm + warmupMs;
  const tStop = tStart + durationMs;
  let firstError;
  const worker = async () => {
    while (nowMs() < tStop) {
      try {
        const r = await client.get(pathFor(seq++));
        if (r.t0 >= tStart && r.tEnd <= tStop) {
          lat.push(r.tEnd - r.t0);
          bytes += r.bytes;
          if (r.status !== 200 || (expectBytes && r.bytes !== expectBytes)) wrong++;
        }
      } catch (e) {
        errors++;
        firstError ??= e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const sorted = lat.sort((a, b) => a - b);
  const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : null);
  return {
    requests: lat.length, reqPerS: lat.length / (durationMs / 1000), bytes, errors, wrong, firstError: firstError ? String(firstError.message ?? firstError) : undefined,
    p50: pct(50), p99: pct(99), max: sorted.at(-1) ?? null,
  };
}
