import { closeSync, fdatasyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import type { AuditLine } from './auditRecord.js';
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

/** Whether records are reaching the file (for /healthz and metrics). */
export interface AuditState {
  /** false from a failed write until a write succeeds again. */
  writable: boolean;
  /** Records that could not be written since this AuditLog opened. */
  writeFailures: number;
  /** The last write error (errno code and message), while not writable. */
  lastError?: string;
  /** When the current failure started (epoch ms). */
  failingSince?: number;
}

/**
 * Appends lines to a file with write(2) on a descriptor of our own: a line is in the kernel
 * (survives a crash of the gate) when write() returns, and a failed write is known at once, for
 * that very record (a buffering writer keeps failed lines in memory and reports later).
 */
class AppendFile {
  private fd: number;
  /** A write stopped part-way (disk full): the next line starts on a line of its own. */
  private torn = false;

  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a', 0o640);
  }

  /** Writes all of `text` or throws (what was written of it stays; the next line starts afresh). */
  write(text: string | Buffer): void {
    const buf = this.torn ? Buffer.concat([Buffer.from('\n'), Buffer.from(text)]) : typeof text === 'string' ? Buffer.from(text) : text;
    let off = 0;
    while (off < buf.byteLength) {
      try {
        off += writeSync(this.fd, buf, off);
      } catch (e) {
        if (off > 0) this.torn = true;
        throw e;
      }
    }
    this.torn = false;
  }

  sync(): void { fdatasyncSync(this.fd); }

  /** Opens the path again (logrotate moved the file); on failure the old descriptor stays in use. */
  reopen(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const fd = openSync(this.path, 'a', 0o640);
    const old = this.fd;
    this.fd = fd;
    try { closeSync(old); } catch { /* already closed */ }
  }

  close(): void { try { closeSync(this.fd); } catch { /* already closed */ } }
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
  /** stdout (`-`): pino's destination; a file: AppendFile. */
  private readonly destination: Destination | undefined;
  private readonly file: AppendFile | undefined;
  private readonly status: AuditState = { writable: true, writeFailures: 0 };
  private readonly debugLogger: Logger;
  private readonly toStdout: boolean;
  private prev: string;
  private written = 0;
  private closed = false;
  private readonly resumed: ChainTail | undefined;
  private readonly listeners = new Set<(r: AuditLine) => void>();

  constructor(target: string | '-', opts: AuditLogOptions = {}) {
    this.toStdout = target === '-';
    this.resumed = this.toStdout ? undefined : resumePoint(target);
    this.prev = this.resumed?.hash ?? GENESIS;
    // Synchronous writes: a record is in the file (the OS's cache) when record() returns, lines can
    // never be reordered by a flush racing an asynchronous write, and a crash loses no buffered line.
    if (this.toStdout) {
      this.destination = pino.destination({ dest: 1, sync: true });
      this.destination.on('error', (e: Error) => this.writeError(e));
    } else {
      this.file = new AppendFile(target);
      // A last line cut short (a crash mid-write): the next record starts on a line of its own and
      // links to the torn line's bytes; `audit verify` reports the torn line.
      if (this.resumed?.torn && this.resumed.file === target) this.file.write('\n');
    }
    const level = opts.level ?? (process.env.PATCHGATE_DEBUG ? 'debug' : 'info');
    this.debugLogger = pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.epochTime, messageKey: 'msg' }, pino.destination({ dest: 2, sync: true }));
  }

  /**
   * Appends one record to the chain. True when the line was written (in the file, not in a
   * buffer); false when it could not be (the caller decides: `audit.onError`). Records after
   * close() are dropped (nothing is written, false).
   */
  record(r: AuditLine): boolean {
    if (this.closed) return false;
    const line = serializeAuditLine(r, this.prev, Date.now());
    // Encoded once: the bytes hashed for the chain are the bytes written (the line, then "\n").
    const bytes = Buffer.from(line + '\n');
    let ok = true;
    try {
      if (this.file) this.file.write(bytes);
      else this.destination!.write(line + '\n');
    } catch (e) {
      // The line is lost (disk full, I/O error): the chain carries on from it all the same, so the
      // next line that is written does not link, and `audit verify` shows the gap.
      this.writeError(e as Error);
      ok = false;
    }
    if (ok && !this.status.writable) {
      process.stderr.write(`patchgate: audit log: writing again after ${Date.now() - (this.status.failingSince ?? Date.now())} ms of failures\n`);
      this.status.writable = true;
      delete this.status.lastError;
      delete this.status.failingSince;
    }
    this.prev = lineHash(bytes.subarray(0, bytes.byteLength - 1));
    this.written++;
    for (const l of this.listeners) {
      try { l(r); } catch { /* a listener never stops the audit trail */ }
    }
    return ok;
  }

  private writeError(e: Error): void {
    this.status.writeFailures++;
    this.status.lastError = `${(e as NodeJS.ErrnoException).code ?? 'error'}: ${e.message}`;
    if (this.status.writable) this.status.failingSince = Date.now();
    this.status.writable = false;
    process.stderr.write(`patchgate: audit log: write failed: ${e.message}\n`);
  }

  /** Whether records are reaching the file (reported by /healthz and the metrics). */
  get state(): AuditState {
    return { ...this.status };
  }

  /** Calls `fn` with every record written (metrics). Returns the unsubscribe function. */
  subscribe(fn: (r: AuditLine) => void): () => void {
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
  reopen(): boolean {
    if (this.closed || this.toStdout) return true;
    try {
      this.file!.reopen();
      this.reopenError = undefined;
      return true;
    } catch (e) {
      // Keep writing to the old descriptor (the renamed file) rather than lose records or stop.
      this.reopenError = e as Error;
      return false;
    }
  }

  /** Why the last reopen failed (the caller reports it: stderr, /healthz); undefined after a good one. */
  reopenError: Error | undefined;

  /** Lines are written as they are recorded; this also asks the OS to put them on disk (fsync). */
  flush(): void {
    try {
      if (this.file) this.file.sync();
      else this.destination!.flushSync();
    } catch { /* closed */ }
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      this.flush();
      if (this.toStdout) return resolve();
      this.file!.close();
      resolve();
    });
  }
}
