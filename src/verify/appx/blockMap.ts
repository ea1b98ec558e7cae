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

function attributes(text: string, what: string): Map<string, string> {
  const out = new Map<string, string>();
  const rest = text.replace(/\s*([A-Za-z_:][\w:.-]*)\s*=\s*"([^"<]*)"\s*/g, (_, k: string, v: string) => {
    if (out.has(k)) throw new MalformedError(`AppxBlockMap.xml: ${what} repeats attribute ${k}`);
    out.set(k, decodeXml(v));
    return '';
  });
  if (rest.trim() !== '') throw new MalformedError(`AppxBlockMap.xml: unexpected text in ${what}`);
  return out;
}

const integer = (v: string | undefined, what: string) => {
  if (v === undefined || !/^\d{1,15}$/.test(v)) throw new MalformedError(`AppxBlockMap.xml: ${what} is not a number`);
  return Number(v);
};

/**
 * Parses the block map strictly: a machine-written document of one BlockMap element holding File
 * elements holding Block elements, nothing else (no DTD, no other elements, no text).
 */
export function parseBlockMap(xml: Buffer): BlockMap {
  let text = xml.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const root = /^\s*(?:<\?xml[^>]*\?>)?\s*<BlockMap\b([^>]*)>([\s\S]*)<\/BlockMap>\s*$/.exec(text);
  if (!root) throw new MalformedError('AppxBlockMap.xml: not one BlockMap element');
  const rootAttrs = attributes(root[1]!, 'BlockMap');
  const hash = HASH_METHODS[rootAttrs.get('HashMethod') ?? ''];
  if (!hash) throw new MalformedError(`AppxBlockMap.xml: unsupported HashMethod ${rootAttrs.get('HashMethod')}`);
  const files = new Map<string, { size: number; lfhSize: number; blocks: Buffer[] }>();
  const rest = root[2]!.replace(/<File\b([^>]*?)(?:\/>|>([\s\S]*?)<\/File>)/g, (_, attrText: string, body: string | undefined) => {
    const a = attributes(attrText, 'File');
    const name = a.get('Name');
    if (!name) throw new MalformedError('AppxBlockMap.xml: a File without a Name');
    const size = integer(a.get('Size'), `Size of ${name}`);
    const lfhSize = integer(a.get('LfhSize'), `LfhSize of ${name}`);
    const blocks: Buffer[] = [];
    const left = (body ?? '').replace(/<Block\b([^>]*?)\/>/g, (__, blockAttrs: string) => {
      const b = attributes(blockAttrs, `Block of ${name}`);
      const h = b.get('Hash');
      if (!h || !/^[A-Za-z0-9+/]+={0,2}$/.test(h)) throw new MalformedError(`AppxBlockMap.xml: a Block of ${name} without a base64 Hash`);
      if (b.has('Size')) integer(b.get('Size'), `a Block Size of ${name}`);
      blocks.push(Buffer.from(h, 'base64'));
      return '';
    });
    if (left.trim() !== '') throw new MalformedError(`AppxBlockMap.xml: unexpected content in File ${name}`);
    const key = name.replace(/\\/g, '/').toUpperCase();
    if (files.has(key)) throw new MalformedError(`AppxBlockMap.xml: ${name} is listed twice`);
    files.set(key, { size, lfhSize, blocks });
    return '';
  });
  if (rest.trim() !== '') throw new MalformedError('AppxBlockMap.xml: unexpected content in BlockMap');
  return { hash, files };
}
