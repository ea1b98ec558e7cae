import pino, { type Logger } from 'pino';
import type { AuditRecord } from './auditRecord.js';
import { GENESIS, lineHash, resumePoint, serializeAuditLine, type ChainTail } from './auditChain.js';

type Destination = ReturnType<typeof pino.destination>;

/** Where the chain stands: what the next line's `prev` will be, and what this writer added. */
export interface AuditHead {
  /** SHA-256 of the last line written (GENESIS before any). Record it elsewhere to anchor the log (`audit verify --head`). */
  hash: string;
  /** Records written by this AuditLog since it opened. */
  written: number;
  /** The file the chain was resumed from at open (the log itself, or `FILE.1` right after a rotation). */
  resumedFrom?: string;
}

export interface AuditLogOptions {
  /** Level of the debug (pass-through) logger on stderr; default `info` (no debug lines), `debug` when PATCHGATE_DEBUG is set. */
  level?: string;
}

/**
 * The audit trail: hash-chained JSON lines, appended to a file (or written to stdout with `-`).
 *
 * Each record is serialised here (see auditChain.ts: pino's layout, `level`, `time`, `msg`, plus
 * `prev`), hashed, and written in order by one writer, pino's own destination (sonic-boom), so the
 * hash is over exactly the bytes on disk. Opening resumes the chain from the last line of the
 * existing file (read backwards from the end, bounded). `reopen()` (on SIGHUP, after logrotate
 * renamed the file) starts a new file whose first line links to the old file's last.
 *
 * Pass-through traffic goes to a plain pino logger on stderr at debug level, never into the chain.
 */
export class AuditLog {
  private readonly destination: Destination;
  private readonly debugLogger: Logger;
  private readonly toStdout: boolean;
  private prev: string;
  private written = 0;
  private closed = false;
  private readonly resumed: ChainTail | undefined;
  private readonly listeners = new Set<(r: AuditRecord) => void>();

  constructor(target: string | '-', opts: AuditLogOptions = {}) {
    this.toStdout = target === '-';
    this.resumed = this.toStdout ? undefined : resumePoint(target);
    this.prev = this.resumed?.hash ?? GENESIS;
    // Synchronous writes: a record is in the file (the OS's cache) when record() returns, lines can
    // never be reordered by a flush racing an asynchronous write, and a crash loses no buffered line.
    this.destination = pino.destination({ dest: this.toStdout ? 1 : target, sync: true, mkdir: true, append: true });
    this.destination.on('error', (e: Error) => this.writeError(e));
    // A last line cut short (a crash mid-write): the next record starts on a line of its own and
    // links to the torn line's bytes; `audit verify` reports the torn line.
    if (this.resumed?.torn && this.resumed.file === target) this.destination.write('\n');
    const level = opts.level ?? (process.env.PATCHGATE_DEBUG ? 'debug' : 'info');
    this.debugLogger = pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.epochTime, messageKey: 'msg' }, pino.destination({ dest: 2, sync: true }));
  }

  /** Appends one record to the chain. Records after close() are dropped (nothing is written). */
  record(r: AuditRecord): void {
    if (this.closed) return;
    const line = serializeAuditLine(r, this.prev, Date.now());
    try {
      this.destination.write(line + '\n');
    } catch (e) {
      // The line is lost (disk full, I/O error): the chain carries on from it all the same, so the
      // next line that is written does not link, and `audit verify` shows the gap.
      this.writeError(e as Error);
    }
    this.prev = lineHash(line);
    this.written++;
    for (const l of this.listeners) {
      try { l(r); } catch { /* a listener never stops the audit trail */ }
    }
  }

  private writeError(e: Error): void {
    if (e === this.reopenError) return;
    process.stderr.write(`patchgate: audit log: write failed: ${e.message}\n`);
  }

  /** Calls `fn` with every record written (metrics). Returns the unsubscribe function. */
  subscribe(fn: (r: AuditRecord) => void): () => void {
    this.listeners.add(fn);
    return () => void this.listeners.delete(fn);
  }

  get head(): AuditHead {
    return { hash: this.prev, written: this.written, ...(this.resumed ? { resumedFrom: this.resumed.file } : {}) };
  }

  /** Pass-through traffic: debug level only, on stderr (not written at the default level). */
  debug(obj: Record<string, unknown>, msg: string): void {
    this.debugLogger.debug(obj, msg);
  }

  /**
   * Reopens the file by its name (after logrotate moved it away): lines already written stay in
   * the old file, the next ones go to a new file, and the chain carries on from the last hash.
   */
  reopen(): void {
    if (this.closed || this.toStdout) return;
    const d = this.destination;
    const ready = d.listeners('ready');
    try {
      d.reopen();
    } catch (e) {
      // The open failed (EISDIR, EACCES...): the old descriptor stays, and records go on to the
      // old file. sonic-boom left a listener that would close that descriptor at the next
      // successful reopen a second time (by then perhaps another file's): drop it. The error it
      // also emits is the caller's to report, not a write failure.
      for (const l of d.listeners('ready')) if (!ready.includes(l)) d.off('ready', l as () => void);
      this.reopenError = e;
      throw e;
    }
  }

  private reopenError: unknown;

  /** Lines are written as they are recorded; this also asks the OS to put them on disk (fsync). */
  flush(): void {
    try { this.destination.flushSync(); } catch { /* closed */ }
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      this.flush();
      if (this.toStdout) return resolve();
      const d = this.destination;
      d.once('close', () => resolve());
      d.end();
      setTimeout(resolve, 1000).unref();
    });
  }
}
