/**
 * ICAP (RFC 3507) message heads and the HTTP heads they encapsulate: parsed strictly, with limits,
 * because the peer is a proxy that relays bytes from the Internet. Anything that does not parse
 * is an IcapProtocolError carrying the ICAP status to answer with (400 unless said otherwise).
 */

export class IcapProtocolError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Most bytes an ICAP head may take, and the encapsulated HTTP heads together. */
export const MAX_ICAP_HEAD_BYTES = 64 * 1024;
export const MAX_ENCAPSULATED_HEAD_BYTES = 256 * 1024;
const MAX_HEADER_LINES = 500;

export interface IcapRequestHead {
  method: string;
  uri: string;
  /** Header values by lower-case name; repeated headers joined with ", ". */
  headers: Map<string, string>;
}

export type EncapsulatedBody = 'req-body' | 'res-body' | 'opt-body' | 'null-body';

export interface Encapsulated {
  /** Offsets of the HTTP heads inside the encapsulated part. */
  reqHdr?: number;
  resHdr?: number;
  /** The body entity (always last) and where it starts, i.e. the total size of the heads. */
  body: EncapsulatedBody;
  bodyOffset: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Header lines after a start line: `name: value`, no folding, no bare LF. */
function parseHeaderLines(lines: string[], what: string): [string, string][] {
  if (lines.length > MAX_HEADER_LINES) throw new IcapProtocolError(400, `${what}: more than ${MAX_HEADER_LINES} header lines`);
  const out: [string, string][] = [];
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) throw new IcapProtocolError(400, `${what}: bad header line ${JSON.stringify(line.slice(0, 80))}`);
    out.push([name, line.slice(colon + 1).trim()]);
  }
  return out;
}

/** Splits a head (without its final empty line) into CRLF-terminated lines; a bare CR or LF is refused. */
function headLines(text: string, what: string): string[] {
  const lines = text.split('\r\n');
  for (const l of lines) if (/[\r\n\0]/.test(l)) throw new IcapProtocolError(400, `${what}: bare CR, LF or NUL in a header line`);
  return lines;
}

/** The ICAP request line and headers (`text` ends before the blank line). */
export function parseIcapHead(text: string): IcapRequestHead {
  const lines = headLines(text, 'ICAP head');
  const m = /^([A-Z]+) (\S+) ICAP\/1\.0$/.exec(lines[0] ?? '');
  if (!m) throw new IcapProtocolError(400, `bad ICAP request line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers = new Map<string, string>();
  for (const [name, value] of parseHeaderLines(lines.slice(1), 'ICAP head')) {
    const k = name.toLowerCase();
    const prev = headers.get(k);
    headers.set(k, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { method: m[1]!, uri: m[2]!, headers };
}

/** `Encapsulated: req-hdr=0, res-hdr=137, res-body=296`: heads in order, one body entity last. */
export function parseEncapsulated(value: string | undefined): Encapsulated {
  if (value === undefined) throw new IcapProtocolError(400, 'missing Encapsulated header');
  const parts = value.split(',').map((p) => p.trim());
  const out: Partial<Encapsulated> = {};
  let last = -1;
  parts.forEach((p, i) => {
    const m = /^(req-hdr|res-hdr|req-body|res-body|opt-body|null-body)=(\d{1,9})$/.exec(p);
    if (!m) throw new IcapProtocolError(400, `bad Encapsulated entry ${JSON.stringify(p.slice(0, 40))}`);
    const name = m[1]!;
    const offset = Number(m[2]);
    if (offset < last || (i === 0 && offset !== 0)) throw new IcapProtocolError(400, 'Encapsulated offsets out of order');
    last = offset;
    const isBody = name.endsWith('-body');
    if (isBody !== (i === parts.length - 1)) throw new IcapProtocolError(400, 'Encapsulated must end with exactly one body entity');
    if (name === 'req-hdr') {
      if (out.reqHdr !== undefined || out.resHdr !== undefined) throw new IcapProtocolError(400, 'Encapsulated heads repeated or out of order');
      out.reqHdr = offset;
    } else if (name === 'res-hdr') {
      if (out.resHdr !== undefined) throw new IcapProtocolError(400, 'Encapsulated res-hdr repeated');
      out.resHdr = offset;
    } else {
      out.body = name as EncapsulatedBody;
      out.bodyOffset = offset;
    }
  });
  if (!out.body) throw new IcapProtocolError(400, 'Encapsulated names no body entity');
  if (out.bodyOffset! > MAX_ENCAPSULATED_HEAD_BYTES) throw new IcapProtocolError(400, `encapsulated HTTP heads larger than ${MAX_ENCAPSULATED_HEAD_BYTES} bytes`);
  return out as Encapsulated;
}

/** An encapsulated HTTP request or response head, header order and case kept as received. */
export class HttpHead {
  constructor(readonly startLine: string, readonly headers: [string, string][]) {}

  get(name: string): string | undefined {
    const k = name.toLowerCase();
    const vals = this.headers.filter(([n]) => n.toLowerCase() === k).map(([, v]) => v);
    return vals.length ? vals.join(', ') : undefined;
  }

  /** A copy without the named headers (lower-case names) and with `add` appended. */
  edit(drop: (lowerName: string) => boolean, add: [string, string][] = [], startLine = this.startLine): HttpHead {
    return new HttpHead(startLine, [...this.headers.filter(([n]) => !drop(n.toLowerCase())), ...add]);
  }

  serialize(): Buffer {
    return Buffer.from(`${this.startLine}\r\n${this.headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, 'latin1');
  }
}

/** One encapsulated head: the bytes from its offset to the next section's, ending in a blank line. */
export function parseHttpHead(bytes: Buffer, what: 'request' | 'response'): HttpHead {
  const text = bytes.toString('latin1');
  if (!text.endsWith('\r\n\r\n')) throw new IcapProtocolError(400, `encapsulated HTTP ${what} head does not end with a blank line`);
  const lines = headLines(text.slice(0, -4), `HTTP ${what} head`);
  const start = lines[0] ?? '';
  const ok = what === 'request' ? /^[A-Z]+ \S+ HTTP\/1\.[01]$/.test(start) : /^HTTP\/1\.[01] \d{3}( .*)?$/.test(start);
  if (!ok) throw new IcapProtocolError(400, `bad encapsulated HTTP ${what} line ${JSON.stringify(start.slice(0, 80))}`);
  return new HttpHead(start, parseHeaderLines(lines.slice(1), `HTTP ${what} head`));
}

/** Status code of an HTTP response head. */
export const responseStatus = (h: HttpHead): number => Number(h.startLine.split(' ')[1]);

/** Method and target of an HTTP request head. */
export function requestLine(h: HttpHead): { method: string; target: string } {
  const [method, target] = h.startLine.split(' ');
  return { method: method!, target: target! };
}

const STATUS_TEXT: Record<number, string> = {
  100: 'Continue', 200: 'OK', 204: 'No Content', 400: 'Bad Request', 404: 'ICAP Service Not Found',
  405: 'Method Not Allowed', 408: 'Request Timeout', 500: 'Server Error', 501: 'Method Not Implemented',
  503: 'Service Overloaded', 505: 'ICAP Version Not Supported',
};

/** An ICAP response head: status line, headers, blank line. */
export function icapResponseHead(status: number, headers: [string, string][]): Buffer {
  return Buffer.from(`ICAP/1.0 ${status} ${STATUS_TEXT[status] ?? 'Unknown'}\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, 'latin1');
}

/** One chunk of an ICAP chunked body (never of size 0: that is the last-chunk). */
export function chunk(data: Buffer): Buffer[] {
  return [Buffer.from(`${data.byteLength.toString(16)}\r\n`, 'latin1'), data, CRLF];
}

const CRLF = Buffer.from('\r\n', 'latin1');
export const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
