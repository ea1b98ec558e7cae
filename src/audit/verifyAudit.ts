import { createReadStream } from 'node:fs';
import { hash as oneShotHash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { createGunzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import { GENESIS } from './auditChain.js';
import { auditLineProblem } from './auditSchema.js';
import type { AuditRecord } from './auditRecord.js';

/** The first place where the chain or the schema does not hold. */
export interface ChainBreak {
  file: string;
  /** 1-based line number in `file` (one past the last line for "the log ends too early"). */
  line: number;
  reason: string;
}

export interface FileResult {
  file: string;
  /** Lines read in this file (up to the break when stopping at it). */
  lines: number;
  /** `prev` of the file's first line. */
  firstPrev?: string;
  /** SHA-256 of the file's last line. */
  lastHash?: string;
}

export interface VerifyResult {
  intact: boolean;
  files: FileResult[];
  /** Lines read in all files. */
  records: number;
  /** SHA-256 of the last line read: the chain's head. */
  head: string;
  /** Does the first file start a log (prev = GENESIS)? */
  fromGenesis: boolean;
  /** Where `--head` was found. */
  anchorAt?: { file: string; line: number };
  break?: ChainBreak;
}

export interface VerifyOptions {
  /** Accept any `prev` on the first line of the first file (a log whose older files are gone). */
  partial?: boolean;
  /** A line hash recorded earlier (the gate's head at that time): the chain must contain it. */
  expectHash?: string;
  /** Read on after a break (for a summary): later breaks are not reported, only the first. */
  continueAfterBreak?: boolean;
  /** Every line that parses and matches the schema, in order. */
  onRecord?: (r: AuditRecord, file: string, line: number) => void;
}

const short = (h: string) => `${h.slice(0, 12)}…`;
/** Recent line hashes remembered to explain a break (reorder, insertion): bounded. */
const RECENT = 4096;

/**
 * Verifies one or several audit files as one chain, in the order given (rotated files oldest
 * first: `audit.jsonl.2.gz audit.jsonl.1 audit.jsonl`; `.gz` files are decompressed on the fly).
 * Each line must be complete (end with "\n"), valid UTF-8 and JSON, match the audit-line schema,
 * and carry as `prev` the SHA-256 of the line before it (GENESIS for a log's first line). Streams:
 * memory is bounded by the longest line, whatever the files' size.
 */
export async function verifyAuditFiles(files: string[], o: VerifyOptions = {}): Promise<VerifyResult> {
  const result: VerifyResult = { intact: true, files: [], records: 0, head: GENESIS, fromGenesis: false };
  let expected: string | undefined; // the hash the next line's prev must equal; undefined before the first line
  let prevFile: string | undefined;
  const recent = new Map<string, { file: string; line: number }>();
  let stop = false;

  const fail = (file: string, line: number, reason: string) => {
    if (!result.break) result.break = { file, line, reason };
    result.intact = false;
    if (!o.continueAfterBreak) stop = true;
  };

  for (const file of files) {
    if (stop) break;
    const fr: FileResult = { file, lines: 0 };
    result.files.push(fr);
    const onLine = (bytes: Buffer, n: number, terminated: boolean): void => {
      fr.lines = n;
      result.records++;
      const hash = oneShotHash('sha256', bytes, 'hex');
      const here = { file, line: n };
      try {
        if (!terminated) return fail(file, n, 'the last line has no newline: the file was cut (truncated, or a write torn by a crash)');
        if (bytes.length === 0) return fail(file, n, 'empty line');
        if (!isUtf8(bytes)) return fail(file, n, 'not valid UTF-8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(bytes.toString('utf8'));
        } catch (e) {
          return fail(file, n, `not JSON (${(e as Error).message})`);
        }
        const problem = auditLineProblem(parsed);
        if (problem) return fail(file, n, `not an audit record: ${problem}`);
        const rec = parsed as AuditRecord & { prev: string };
        if (n === 1) fr.firstPrev = rec.prev;
        if (expected === undefined) {
          result.fromGenesis = rec.prev === GENESIS;
          if (rec.prev !== GENESIS && !o.partial) {
            fail(file, n, `prev is ${short(rec.prev)}, not the genesis value (64 zeros): this file continues an earlier one; give that first (audit verify FILE.1 FILE), or --partial to verify from here`);
          }
        } else if (rec.prev !== expected) {
          fail(file, n, explainMismatch(rec.prev, expected, file, n, prevFile, recent));
        }
        o.onRecord?.(rec, file, n);
      } finally {
        if (o.expectHash && hash === o.expectHash && !result.anchorAt) result.anchorAt = here;
        expected = hash;
        result.head = hash;
        fr.lastHash = hash;
        recent.set(hash, here);
        if (recent.size > RECENT) recent.delete(recent.keys().next().value!);
      }
    };
    await forEachLine(file, onLine, () => stop);
    prevFile = file;
  }
  if (!stop && o.expectHash && !result.anchorAt) {
    const last = result.files[result.files.length - 1];
    fail(last?.file ?? '', (last?.lines ?? 0) + 1, `the expected head ${short(o.expectHash)} is not in the chain: lines were removed from the end (or the log was rewritten) since it was recorded`);
  }
  return result;
}

function explainMismatch(prev: string, expected: string, file: string, n: number, prevFile: string | undefined, recent: Map<string, { file: string; line: number }>): string {
  const base = `prev ${short(prev)} is not the SHA-256 of the line before (${short(expected)})`;
  if (n === 1 && prevFile) {
    if (prev === GENESIS) return `${base}: ${file} starts a new log (genesis), it does not continue ${prevFile}`;
    return `${base}: ${file} does not continue ${prevFile} (files out of order, a file missing between them, or the end of ${prevFile} cut or changed)`;
  }
  if (prev === GENESIS) return `${base}: a new log starts here (another log spliced in, or the log restarted without its history)`;
  const seen = recent.get(prev);
  if (seen) {
    const where = seen.file === file ? `line ${seen.line}` : `${seen.file}:${seen.line}`;
    return `${base} but of ${where}: lines were inserted, duplicated or reordered`;
  }
  return `${base}: the line before was changed, or lines were deleted before this one, or another log was spliced in`;
}

/** Calls `fn` with each line's bytes (without "\n"); the last line may lack its "\n" (terminated false). */
async function forEachLine(file: string, fn: (line: Buffer, n: number, terminated: boolean) => void, stopped: () => boolean): Promise<void> {
  let input: Readable = createReadStream(file, { highWaterMark: 1 << 20 });
  if (/\.gz$/i.test(file)) input = input.pipe(createGunzip());
  let rest: Buffer | undefined;
  let n = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      const buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      let start = 0;
      for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, start)) {
        fn(buf.subarray(start, i), ++n, true);
        start = i + 1;
        if (stopped()) return;
      }
      rest = start < buf.length ? Buffer.from(buf.subarray(start)) : undefined;
    }
    if (rest && !stopped()) fn(rest, ++n, false);
  } finally {
    input.destroy();
  }
}
