import { MalformedError } from '../malformed.js';
import type { DigestName } from '../algorithms.js';

/** AppxBlockMap.xml: per file, its size, its local header size and the hash of every 64 KiB block. */
export interface BlockMap {
  hash: DigestName;
  files: Map<string, { size: number; lfhSize: number; blocks: Buffer[] }>;
}

export const BLOCK_BYTES = 64 * 1024;

const HASH_METHODS: Record<string, DigestName> = {
  'http://www.w3.org/2001/04/xmlenc#sha256': 'sha256',
  'http://www.w3.org/2001/04/xmldsig-more#sha384': 'sha384',
  'http://www.w3.org/2001/04/xmlenc#sha512': 'sha512',
};

const decodeXml = (s: string) => s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!);

/** Attributes of one tag, scanned in one pass (no backtracking: a hostile document costs linear time). */
function attributes(text: string, what: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const ws = () => { while (i < text.length && /\s/.test(text[i]!)) i++; };
  for (;;) {
    ws();
    if (i >= text.length) return out;
    const nameStart = i;
    while (i < text.length && /[\w:.-]/.test(text[i]!)) i++;
    const name = text.slice(nameStart, i);
    ws();
    if (!name || text[i] !== '=') throw new MalformedError(`AppxBlockMap.xml: unexpected text in ${what}`);
    i++;
    ws();
    if (text[i] !== '"') throw new MalformedError(`AppxBlockMap.xml: an unquoted attribute in ${what}`);
    const end = text.indexOf('"', i + 1);
    if (end < 0) throw new MalformedError(`AppxBlockMap.xml: an unterminated attribute in ${what}`);
    if (out.has(name)) throw new MalformedError(`AppxBlockMap.xml: ${what} repeats attribute ${name}`);
    out.set(name, decodeXml(text.slice(i + 1, end)));
    i = end + 1;
  }
}

const integer = (v: string | undefined, what: string) => {
  if (v === undefined || !/^\d{1,15}$/.test(v)) throw new MalformedError(`AppxBlockMap.xml: ${what} is not a number`);
  return Number(v);
};

/** The document's tags in order, with nothing but whitespace between them (one linear pass). */
function* tags(text: string): Generator<{ name: string; attrs: string; close: boolean; selfClose: boolean }> {
  let i = 0;
  for (;;) {
    const lt = text.indexOf('<', i);
    const between = lt < 0 ? text.slice(i) : text.slice(i, lt);
    if (between.trim() !== '') throw new MalformedError('AppxBlockMap.xml: text outside the elements');
    if (lt < 0) return;
    const gt = text.indexOf('>', lt);
    const nextLt = text.indexOf('<', lt + 1);
    if (gt < 0 || (nextLt >= 0 && nextLt < gt)) throw new MalformedError('AppxBlockMap.xml: an unterminated tag');
    const body = text.slice(lt + 1, gt);
    i = gt + 1;
    if (body.startsWith('?xml') && body.endsWith('?')) continue;
    const close = body.startsWith('/');
    const selfClose = body.endsWith('/');
    const inner = body.slice(close ? 1 : 0, selfClose ? -1 : undefined);
    const m = /^[A-Za-z]+/.exec(inner);
    if (!m) throw new MalformedError(`AppxBlockMap.xml: an unexpected tag <${body.slice(0, 20)}>`);
    yield { name: m[0], attrs: inner.slice(m[0].length), close, selfClose };
  }
}

/**
 * Parses the block map strictly: a machine-written document of one BlockMap element holding File
 * elements holding Block elements, nothing else (no DTD, no comments, no other elements, no text).
 */
export function parseBlockMap(xml: Buffer): BlockMap {
  let text = xml.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let hash: DigestName | undefined;
  let state: 'start' | 'map' | 'file' | 'end' = 'start';
  let current: { name: string; size: number; lfhSize: number; blocks: Buffer[] } | undefined;
  const files = new Map<string, { size: number; lfhSize: number; blocks: Buffer[] }>();
  const unexpected = (t: { name: string }) => new MalformedError(`AppxBlockMap.xml: unexpected <${t.name}>`);
  for (const t of tags(text)) {
    if (state === 'start') {
      if (t.name !== 'BlockMap' || t.close || t.selfClose) throw unexpected(t);
      const method = attributes(t.attrs, 'BlockMap').get('HashMethod') ?? '';
      hash = HASH_METHODS[method];
      if (!hash) throw new MalformedError(`AppxBlockMap.xml: unsupported HashMethod ${method}`);
      state = 'map';
    } else if (state === 'map') {
      if (t.name === 'BlockMap' && t.close) { state = 'end'; continue; }
      if (t.name !== 'File' || t.close) throw unexpected(t);
      const a = attributes(t.attrs, 'File');
      const name = a.get('Name');
      if (!name) throw new MalformedError('AppxBlockMap.xml: a File without a Name');
      current = { name, size: integer(a.get('Size'), `Size of ${name}`), lfhSize: integer(a.get('LfhSize'), `LfhSize of ${name}`), blocks: [] };
      const key = name.replace(/\\/g, '/').toUpperCase();
      if (files.has(key)) throw new MalformedError(`AppxBlockMap.xml: ${name} is listed twice`);
      files.set(key, current);
      if (!t.selfClose) state = 'file';
    } else if (state === 'file') {
      if (t.name === 'File' && t.close) { state = 'map'; continue; }
      if (t.name !== 'Block' || !t.selfClose) throw unexpected(t);
      const b = attributes(t.attrs, `Block of ${current!.name}`);
      const h = b.get('Hash');
      if (!h || !/^[A-Za-z0-9+/]+={0,2}$/.test(h)) throw new MalformedError(`AppxBlockMap.xml: a Block of ${current!.name} without a base64 Hash`);
      if (b.has('Size')) integer(b.get('Size'), `a Block Size of ${current!.name}`);
      current!.blocks.push(Buffer.from(h, 'base64'));
    } else {
      throw unexpected(t);
    }
  }
  if (state !== 'end' || !hash) throw new MalformedError('AppxBlockMap.xml: not one complete BlockMap element');
  return { hash, files };
}
