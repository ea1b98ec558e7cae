import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createHash, hash } from 'node:crypto';
import type { AuditLine, AuditRecord } from './auditRecord.js';

/**
 * The audit chain. Every line of an audit log carries `prev`: the SHA-256 (lowercase hex) of the
 * exact bytes of the previous line, without its terminating "\n". The first line of a brand-new
 * log has `prev` = GENESIS (64 zeros). Editing, deleting, inserting or reordering a line changes
 * the hash the next line expects, so `patchgate audit verify` finds the first line that no longer
 * links. The chain carries on across restarts (the writer hashes the last line of the file it
 * appends to) and across rotation (the first line of the new file links to the last of the old).
 */
export const GENESIS = '0'.repeat(64);

/** pino's info level: audit records are written at it, so the log stays pino-compatible JSON lines. */
export const AUDIT_LEVEL = 30;

/** SHA-256 (hex) of one line's bytes as written (UTF-8, without the "\n"). */
export function lineHash(line: string | Uint8Array): string {
  return hash('sha256', line, 'hex');
}

/**
 * Top-level field order of a line. The chain does not depend on it (the hash is over the bytes as
 * written), but a fixed order keeps the lines easy to read and diff. Unknown fields follow, sorted.
 */
export const RECORD_FIELD_ORDER: readonly (keyof AuditRecord)[] = [
  'id', 'kind', 'client', 'method', 'url', 'host', 'inspected', 'served', 'status', 'upstreamStatus', 'range', 'bytes',
  'bytesToClient', 'sha256', 'format', 'verdict', 'reasons', 'signer', 'chain', 'timestamp', 'rulesSha256', 'durations', 'shared',
  'icapClient', 'icapStatus',
];

const RESERVED = new Set(['level', 'time', 'prev', 'msg']);
const ORDERED = new Set<string>(RECORD_FIELD_ORDER);

/**
 * One audit line (without "\n"): `level`, `time` (epoch ms), `prev`, the record's fields, `msg`
 * (= kind), which is pino's own layout with `prev` added. Fields whose value is undefined are left out.
 */
export function serializeAuditLine(r: AuditLine, prev: string, time: number): string {
  const rec = r as unknown as Record<string, unknown>;
  // The same bytes as JSON.stringify of one object in this key order, written field by field:
  // one record per transfer, and the intermediate object was a third of its cost.
  let line = `{"level":${AUDIT_LEVEL},"time":${JSON.stringify(time)},"prev":${JSON.stringify(prev)}`;
  const field = (k: string) => {
    const v = rec[k];
    if (v === undefined) return;
    const json = JSON.stringify(v);
    if (json !== undefined) line += `,${JSON.stringify(k)}:${json}`;
  };
  for (const k of RECORD_FIELD_ORDER) field(k);
  for (const k of Object.keys(rec).sort()) if (!ORDERED.has(k) && !RESERVED.has(k)) field(k);
  return `${line},"msg":${JSON.stringify(r.kind)}}`;
}

export interface ChainTail {
  /** SHA-256 of the last line (complete or torn). */
  hash: string;
  /** The file does not end with "\n": its last line was cut (a crash mid-write, or a truncation). */
  torn: boolean;
  /** The file the tail was read from. */
  file: string;
}

const CHUNK = 64 * 1024;

/**
 * The hash of the last line of `file`, or undefined when the file is missing or empty. Reads
 * backwards from the end in 64 KiB chunks until it finds the line's start, then hashes the line
 * forwards: memory stays bounded whatever the file's or the line's size.
 */
export function readTail(file: string): ChainTail | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return undefined;
    const buf = Buffer.alloc(CHUNK);
    readSync(fd, buf, 0, 1, size - 1);
    const torn = buf[0] !== 0x0a;
    const end = torn ? size : size - 1; // the line's bytes are [start, end)
    let start = 0;
    for (let pos = end; pos > 0; ) {
      const n = Math.min(CHUNK, pos);
      readSync(fd, buf, 0, n, pos - n);
      const i = buf.subarray(0, n).lastIndexOf(0x0a);
      if (i >= 0) {
        start = pos - n + i + 1;
        break;
      }
      pos -= n;
    }
    const h = createHash('sha256');
    for (let off = start; off < end; ) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, end - off), off);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      off += n;
    }
    return { hash: h.digest('hex'), torn, file };
  } finally {
    closeSync(fd);
  }
}

/**
 * Where a writer appending to `file` resumes the chain: the last line of `file`; if `file` is
 * missing or empty, the last line of `file.1` (logrotate's previous file, kept uncompressed by
 * `delaycompress`), so a gate started right after a rotation still links to the old file; else
 * undefined (a brand-new log starts at GENESIS).
 */
export function resumePoint(file: string): ChainTail | undefined {
  return readTail(file) ?? readTail(`${file}.1`);
}
