import http from 'node:http';
import { QuickJS } from 'quickjs-wasi';
import { createPacResolver } from 'pac-resolver';

/** Bounds of one PAC fetch and evaluation. */
export const PAC_MAX_BYTES = 64 * 1024;
export const PAC_FETCH_TIMEOUT_MS = 3000;
export const PAC_EVAL_TIMEOUT_MS = 1000;
const PAC_MEMORY_LIMIT = 16 * 1024 * 1024;

export type PacFetch = { ok: true; text: string } | { ok: false; why: string };

/**
 * GET http://`host`/wpad.dat (Host: `hostHeader`), as a WPAD client does: at most PAC_MAX_BYTES,
 * within PAC_FETCH_TIMEOUT_MS in all, no redirect followed, only a 200 counts.
 */
export function fetchPac(o: { host: string; port?: number; hostHeader: string; timeoutMs?: number }): Promise<PacFetch> {
  const timeoutMs = o.timeoutMs ?? PAC_FETCH_TIMEOUT_MS;
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: PacFetch) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.get({ host: o.host, port: o.port ?? 80, path: '/wpad.dat', agent: false, headers: { host: o.hostHeader, 'user-agent': 'patchgate-wpad-guard' } }, (res) => {
      if (res.statusCode !== 200) return done({ ok: false, why: `HTTP ${res.statusCode}` });
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > PAC_MAX_BYTES) return done({ ok: false, why: `larger than ${PAC_MAX_BYTES} bytes` });
        chunks.push(c);
      });
      res.on('end', () => done({ ok: true, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (e) => done({ ok: false, why: e.message }));
    });
    req.on('error', (e) => done({ ok: false, why: e.message }));
    const timer = setTimeout(() => done({ ok: false, why: `no complete answer within ${timeoutMs} ms` }), timeoutMs);
  });
}

/**
 * Runs the PAC's FindProxyForURL for each URL with the PAC engine the lab's victim uses
 * (pac-resolver on QuickJS), in a runtime with a memory limit and an interrupt after
 * PAC_EVAL_TIMEOUT_MS per URL. The PAC comes from whoever answered: its DNS helpers are given no
 * network (dnsResolve is null, isResolvable false) and myIpAddress is the probing interface's
 * address, so evaluating it sends nothing anywhere. Returns one answer (or `error: ...`) per URL.
 */
export async function evaluatePacFor(pacText: string, urls: string[], myAddress: string): Promise<string[]> {
  let deadline = Infinity;
  const qjs = await QuickJS.create({ memoryLimit: PAC_MEMORY_LIMIT, interruptHandler: () => Date.now() > deadline });
  try {
    let find: (url: string) => Promise<string>;
    try {
      deadline = Date.now() + PAC_EVAL_TIMEOUT_MS;
      find = createPacResolver(qjs, pacText, {
        sandbox: {
          alert: () => {},
          dnsResolve: async () => null,
          isResolvable: async () => false,
          myIpAddress: async () => myAddress,
        },
      });
    } catch (e) {
      return urls.map(() => `error: ${(e as Error).message}`);
    }
    const out: string[] = [];
    for (const url of urls) {
      deadline = Date.now() + PAC_EVAL_TIMEOUT_MS;
      try {
        const r = await find(url);
        out.push(typeof r === 'string' ? r : `error: FindProxyForURL returned ${typeof r}`);
      } catch (e) {
        out.push(`error: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    return out;
  } finally {
    (qjs as unknown as { dispose?: () => void }).dispose?.();
  }
}

/** One entry of a PAC answer ("PROXY h:p; DIRECT" has two). */
export interface PacRoute {
  kind: string;
  host?: string;
  port?: number;
}

export function parsePacRoutes(answer: string): PacRoute[] {
  return answer.split(';').map((s) => s.trim()).filter(Boolean).map((entry) => {
    const m = /^(\S+)(?:\s+(\[[^\]]+\]|[^:\s]+)(?::(\d+))?)?$/.exec(entry);
    if (!m) return { kind: entry.toUpperCase() };
    return { kind: m[1]!.toUpperCase(), ...(m[2] ? { host: m[2].replace(/^\[|\]$/g, '').toLowerCase() } : {}), ...(m[3] ? { port: Number(m[3]) } : {}) };
  });
}

/**
 * Does this answer send the URL to patchgate, and only there? Every entry must be PROXY (or HTTP)
 * to a gate: a `DIRECT` fallback or a second proxy is a way around the gate.
 */
export function sendsOnlyToGate(answer: string, isGate: (host: string, port: number | undefined) => boolean): boolean {
  if (answer.startsWith('error:')) return false;
  const routes = parsePacRoutes(answer);
  return routes.length > 0 && routes.every((r) => (r.kind === 'PROXY' || r.kind === 'HTTP') && r.host !== undefined && isGate(r.host, r.port));
}
