import { IcapProtocolError } from './icapMessage.js';

/** Longest chunk-size line (size, extensions) and trailer section accepted. */
const MAX_SIZE_LINE = 1024;
const MAX_TRAILER_BYTES = 16 * 1024;

export type ChunkEvent = { kind: 'data'; data: Buffer } | { kind: 'end'; ieof: boolean };

/**
 * Incremental decoder of an ICAP chunked body (RFC 3507 4.4.1 and 4.5: HTTP/1.1 chunking, with
 * the `ieof` extension on the last-chunk of a preview). Fed whatever bytes arrive; returns what it
 * could decode and how many bytes it used, so that the bytes after the last-chunk (the next
 * request on a persistent connection) stay with the caller. Sizes are bounded: a chunk-size of
 * 2^64, an endless size line or trailer is a protocol error, never a huge allocation.
 */
export class ChunkedBodyReader {
  private state: 'size' | 'data' | 'data-crlf' | 'trailer' | 'done' = 'size';
  private remaining = 0;
  private trailerBytes = 0;
  private ieof = false;

  get finished(): boolean { return this.state === 'done'; }

  /** After a preview's last-chunk (no ieof) and our 100 Continue: the rest of the body follows. */
  continueAfterPreview(): void {
    if (this.state !== 'done' || this.ieof) throw new Error('no preview to continue');
    this.state = 'size';
    this.trailerBytes = 0;
  }

  /** Decodes from `buf`; stops after the last-chunk's trailer. Throws IcapProtocolError. */
  feed(buf: Buffer): { used: number; events: ChunkEvent[] } {
    const events: ChunkEvent[] = [];
    let at = 0;
    while (at < buf.length && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - at);
        events.push({ kind: 'data', data: buf.subarray(at, at + n) });
        at += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'data-crlf';
        continue;
      }
      if (this.state === 'data-crlf') {
        if (buf.length - at < 2) break;
        if (buf[at] !== 0x0d || buf[at + 1] !== 0x0a) throw new IcapProtocolError(400, 'chunk data not followed by CRLF');
        at += 2;
        this.state = 'size';
        continue;
      }
      const lf = buf.indexOf(0x0a, at);
      const limit = this.state === 'size' ? MAX_SIZE_LINE : MAX_TRAILER_BYTES - this.trailerBytes;
      if (lf < 0) {
        if (buf.length - at > limit) throw new IcapProtocolError(400, this.state === 'size' ? 'chunk-size line too long' : 'chunk trailer too long');
        break;
      }
      if (lf + 1 - at > limit) throw new IcapProtocolError(400, this.state === 'size' ? 'chunk-size line too long' : 'chunk trailer too long');
      if (lf === at || buf[lf - 1] !== 0x0d) throw new IcapProtocolError(400, 'bare LF in a chunked body');
      const line = buf.toString('latin1', at, lf - 1);
      at = lf + 1;
      if (this.state === 'trailer') {
        this.trailerBytes += line.length + 2;
        if (line === '') {
          this.state = 'done';
          events.push({ kind: 'end', ieof: this.ieof });
        }
        continue;
      }
      const m = /^([0-9a-fA-F]{1,16})[ \t]*(;.*)?$/.exec(line);
      if (!m) throw new IcapProtocolError(400, `bad chunk-size line ${JSON.stringify(line.slice(0, 40))}`);
      const size = parseInt(m[1]!, 16);
      if (!Number.isSafeInteger(size)) throw new IcapProtocolError(400, 'chunk size out of range');
      const ext = m[2] ?? '';
      if (size === 0) {
        this.ieof = /^;[ \t]*ieof[ \t]*$/i.test(ext);
        this.state = 'trailer';
        continue;
      }
      this.remaining = size;
      this.state = 'data';
    }
    return { used: at, events };
  }
}
