import type { ServerResponse } from 'node:http';
import type { VerdictReason } from '../verify/verdict.js';

/** Writes the 403 that replaces a blocked payload: reason codes in headers, a short text body. */
export function writeBlockPage(res: ServerResponse, reasons: VerdictReason[], auditId: string, url: string): number {
  const codes = [...new Set(reasons.map((r) => r.code))];
  const body = [
    'patchgate blocked this download: its code signature did not pass the approved-CA policy.',
    '',
    `URL:      ${url}`,
    ...reasons.map((r) => `Reason:   ${r.code}: ${r.message}`),
    `Audit id: ${audit(auditId)}`,
    '',
  ].join('\n');
  const buf = Buffer.from(body, 'utf8');
  if (!res.headersSent) {
    res.writeHead(403, 'Forbidden by patchgate', {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': buf.byteLength,
      'cache-control': 'no-store',
      'x-patchgate-verdict': 'block',
      'x-patchgate-reason': codes.join(','),
      'x-patchgate-audit-id': auditId,
    });
    res.end(buf);
  } else {
    // Headers already went out (should not happen for held payloads): cut the connection.
    res.destroy();
  }
  return buf.byteLength;
}

const audit = (id: string) => id;
