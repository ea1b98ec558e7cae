import http from 'node:http';
import { QuickJS } from 'quickjs-wasi';
import { createPacResolver } from 'pac-resolver';

export interface DownloadResult {
  status: number;
  /** The assembled file when every request succeeded. */
  body?: Buffer;
  /** patchgate's headers when it answered a block. */
  verdictHeader?: string;
  reasons?: string[];
  auditId?: string;
  requests: number;
}

function proxyRequest(proxy: { host: string; port: number }, url: string, method: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.host, port: proxy.port, method, path: url, agent: false, headers: { host: u.host, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error('victim request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Evaluates a PAC file with a real PAC engine (pac-resolver on QuickJS), as a browser or WinHTTP would. */
export async function evaluatePac(pacText: string, url: string): Promise<string> {
  const qjs = await QuickJS.create();
  const find = createPacResolver(qjs, pacText);
  return find(url);
}

export function parsePacProxy(answer: string): { host: string; port: number } | undefined {
  const m = /PROXY\s+([^:;\s]+):(\d+)/i.exec(answer);
  return m ? { host: m[1]!, port: Number(m[2]) } : undefined;
}

export async function fetchText(host: string, port: number, path: string, hostHeader: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host, port, path, agent: false, headers: { host: hostHeader } }, (res) => {
      const c: Buffer[] = [];
      res.on('data', (d: Buffer) => c.push(d));
      res.on('end', () => resolve(Buffer.concat(c).toString('utf8')));
    }).on('error', reject);
  });
}

/**
 * Downloads as BITS does: HEAD for the size, then the file in ranges, through the proxy the
 * victim was given. Stops at the first answer that is not a range of the file.
 */
export async function bitsDownload(proxy: { host: string; port: number }, url: string, rangeSize = 64 * 1024): Promise<DownloadResult> {
  let requests = 1;
  const head = await proxyRequest(proxy, url, 'HEAD');
  const blocked = (r: { status: number; headers: http.IncomingHttpHeaders }): DownloadResult => ({
    status: r.status, requests, verdictHeader: r.headers['x-patchgate-verdict'] as string | undefined,
    reasons: String(r.headers['x-patchgate-reason'] ?? '').split(',').filter(Boolean), auditId: r.headers['x-patchgate-audit-id'] as string | undefined,
  });
  if (head.status !== 200 && head.status !== 206) return blocked(head);
  const total = /\/(\d+)$/.exec(String(head.headers['content-range'] ?? ''))?.[1];
  const size = Number(total ?? head.headers['content-length']);
  if (!Number.isSafeInteger(size) || size <= 0) return { status: head.status, requests };
  const parts: Buffer[] = [];
  for (let start = 0; start < size; start += rangeSize) {
    const end = Math.min(size, start + rangeSize) - 1;
    requests++;
    const r = await proxyRequest(proxy, url, 'GET', { range: `bytes=${start}-${end}` });
    if (r.status !== 206 && !(r.status === 200 && start === 0)) return blocked(r);
    if (r.status === 200) return { status: 200, body: r.body, requests };
    parts.push(r.body);
  }
  return { status: 206, body: Buffer.concat(parts), requests };
}
