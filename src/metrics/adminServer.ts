import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GateMetrics } from './gateMetrics.js';

export interface AdminServerOptions {
  host: string;
  port: number;
  /** The body of GET /healthz. */
  health: () => Record<string, unknown>;
  /** Served on GET /metrics when given. */
  metrics?: Pick<GateMetrics, 'text' | 'contentType'>;
  /** An exception caught while answering (counted as an internal error, where="admin"). */
  onFault?: (err: unknown) => void;
}

/**
 * The admin address: `GET /healthz` (JSON) and `GET /metrics` (Prometheus text format). Read-only;
 * bind it to loopback or a management network, never to the clients' side.
 */
export async function startAdminServer(o: AdminServerOptions): Promise<http.Server & { port: number }> {
  const server = http.createServer((req, res) => {
    try {
      answer(req, res);
    } catch (e) {
      // One guard at the entry: a failing health or metrics source ends this request, not the process.
      o.onFault?.(e);
      if (!res.headersSent) res.writeHead(500, { 'content-length': 0 });
      res.end();
    }
  });
  const answer = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 }).end();
      return;
    }
    if (path === '/healthz') {
      const health = o.health();
      const body = JSON.stringify(health) + '\n';
      // Anything but ok is 503, so that a plain HTTP check (load balancer, systemd, Nagios) notices.
      res.writeHead(health.status === undefined || health.status === 'ok' ? 200 : 503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (path === '/metrics' && o.metrics) {
      const m = o.metrics;
      m.text().then(
        (body) => {
          res.writeHead(200, { 'content-type': m.contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : body);
        },
        (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics: ${e.message}\n`);
        },
      );
      return;
    }
    res.writeHead(404, { 'content-length': 0 }).end();
  };
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(o.port, o.host, () => resolve()));
  return Object.assign(server, { port: (server.address() as AddressInfo).port });
}
