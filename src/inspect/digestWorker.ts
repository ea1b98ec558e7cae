/**
 * The digest thread (worker_threads): hashes held payloads off the proxy's event loop. For each
 * job it runs the core's DigestStream (the verifier's sniffer and layout parsers, so the same
 * Authenticode ranges; no ASN.1 library, so the thread stays small) over bytes the proxy copies
 * into a shared ring, and
 * returns the whole-file SHA-256 and the Authenticode digests with their ranges. It decides
 * nothing: the verdict is computed on the proxy thread, which checks the ranges against its own.
 */
import { parentPort } from 'node:worker_threads';
import { DigestStream } from '../verify/digestStream.js';
import type { ApprovedCaPolicy } from '../verify/approvedCaPolicy.js';
import type { DigestName } from '../verify/algorithms.js';

export type ToWorker =
  | { op: 'start'; id: number; ring: SharedArrayBuffer; algorithms: DigestName[]; limits: ApprovedCaPolicy['limits'] }
  | { op: 'data'; id: number; spans: number[] } // [offset, length, offset, length, ...] in the ring
  | { op: 'end'; id: number }
  | { op: 'abort'; id: number }
  | { op: 'ping'; id: number };

export type FromWorker =
  | { op: 'ack'; id: number; bytes: number }
  | { op: 'digests'; id: number; sha256: string; fileDigests: [DigestName, Uint8Array][]; ranges: [number, number][] | null }
  | { op: 'error'; id: number; message: string }
  | { op: 'pong'; id: number };

const jobs = new Map<number, { v: DigestStream; ring: Uint8Array }>();
const port = parentPort!;

port.on('message', (m: ToWorker) => {
  try {
    if (m.op === 'ping') {
      port.postMessage({ op: 'pong', id: m.id } satisfies FromWorker);
    } else if (m.op === 'start') {
      jobs.set(m.id, { v: new DigestStream(m.algorithms, m.limits), ring: new Uint8Array(m.ring) });
    } else if (m.op === 'data') {
      const j = jobs.get(m.id);
      if (!j) return;
      let bytes = 0;
      // The stream copies what it keeps (the headers): the ring is reused after the ack.
      for (let i = 0; i < m.spans.length; i += 2) {
        j.v.update(j.ring.subarray(m.spans[i]!, m.spans[i]! + m.spans[i + 1]!));
        bytes += m.spans[i + 1]!;
      }
      port.postMessage({ op: 'ack', id: m.id, bytes } satisfies FromWorker);
    } else if (m.op === 'end') {
      const j = jobs.get(m.id);
      if (!j) return;
      jobs.delete(m.id);
      const d = j.v.finish();
      port.postMessage({
        op: 'digests', id: m.id, sha256: d.sha256, fileDigests: [...d.fileDigests].map(([k, v]) => [k, new Uint8Array(v)] as [DigestName, Uint8Array]),
        ranges: d.ranges ? d.ranges.map(([a, b]) => [a, b] as [number, number]) : null,
      } satisfies FromWorker);
    } else if (m.op === 'abort') {
      jobs.delete(m.id);
    }
  } catch (err) {
    jobs.delete(m.id);
    port.postMessage({ op: 'error', id: m.id, message: (err as Error)?.message ?? String(err) } satisfies FromWorker);
  }
});
