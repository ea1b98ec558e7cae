import type { ServerResponse } from 'node:http';
import type { GateReason } from './gateReason.js';

/** The 403 that replaces a blocked payload, as data: the proxy writes it, the ICAP service encapsulates it. */
export interface BlockPage {
  status: 403;
  statusText: string;
  headers: Record<string, string | number>;
  body: Buffer;
}

/** Reason codes in headers (X-Patchgate-Reason), a short text body naming the audit record. */
export function blockPage(reasons: GateReason[], auditId: string, url: string): BlockPage {
  const codes = [...new Set(reasons.map((r) => r.code))];
  const body = Buffer.from([
    'patchgate blocked this download: its code signature did not pass the approved-CA policy.',
    '',
    `URL:      ${url}`,
    ...reasons.map((r) => `Reason:   ${r.code}: ${r.message}`),
    `Audit id: ${auditId}`,
    '',
  ].join('\n'), 'utf8');
  return {
    status: 403,
    statusText: 'Forbidden by patchgate',
    headers: {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': body.byteLength,
      'cache-control': 'no-store',
      'x-patchgate-verdict': 'block',
      'x-patchgate-reason': codes.join(','),
      'x-patchgate-audit-id': auditId,
    },
    body,
  };
}

/** Writes the 403 that replaces a blocked payload; returns the body's size. */
export function writeBlockPage(res: ServerResponse, reasons: GateReason[], auditId: string, url: string, status?: number): number {
  const page = blockPage(reasons, auditId, url);
  if (!res.headersSent) {
    // A bad gateway (an upstream answer the gate cannot take, e.g. an unknown transfer-coding) is 502, as Squid answers.
    if (status && status !== page.status) res.writeHead(status, 'Bad Gateway (patchgate)', page.headers);
    else res.writeHead(page.status, page.statusText, page.headers);
    res.end(page.body);
  } else {
    // Headers already went out (should not happen for held payloads): cut the connection.
    res.destroy();
  }
  return page.body.byteLength;
}
