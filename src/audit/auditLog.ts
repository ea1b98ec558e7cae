import pino, { type Logger } from 'pino';
import type { AuditRecord } from './auditRecord.js';

/**
 * The audit trail: pino writing JSON lines to a file (appended) or stdout. The record is the line;
 * pino adds `level`, `time` (epoch ms) and `msg`.
 */
export class AuditLog {
  private readonly logger: Logger;
  private readonly destination: pino.DestinationStream & { flushSync?: () => void; end?: () => void };

  constructor(target: string | '-', opts: { level?: string } = {}) {
    this.destination = pino.destination({ dest: target === '-' ? 1 : target, sync: false, mkdir: true, append: true });
    this.logger = pino({ level: opts.level ?? 'info', base: undefined, timestamp: pino.stdTimeFunctions.epochTime, messageKey: 'msg' }, this.destination);
  }

  record(r: AuditRecord): void {
    this.logger.info(r, r.kind);
  }

  /** Pass-through traffic: debug level only (not written at the default level). */
  debug(obj: Record<string, unknown>, msg: string): void {
    this.logger.debug(obj, msg);
  }

  flush(): void {
    try { this.destination.flushSync?.(); } catch { /* not ready yet */ }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.flush();
      const d = this.destination as unknown as NodeJS.WritableStream & { fd?: number };
      if (d.fd === 1) return resolve();
      d.end();
      d.on('close', () => resolve());
      setTimeout(resolve, 1000).unref();
    });
  }
}
