/**
 * Is a body recognisably metadata (XML, JSON, plain text), from its bytes alone? Only such content
 * may pass an inspected host unverified (`nonPayload: pass`): anything else the verifier does not
 * check (random bytes, ZIP, gzip, ELF, a script with a shebang) is blocked, whatever its name or
 * Content-Type says.
 *
 * Text here: valid UTF-8 (or UTF-16 with a byte-order mark) without control characters other than
 * tab, line feed, form feed and carriage return, and not starting with `#!` (an interpreter line
 * makes it a program). The check runs over the whole body (TextCheck), not only its first bytes:
 * binary data after a text prefix (a ZIP's directory sits at its end) stops the pass.
 */
export type MetadataKind = 'xml' | 'json' | 'text' | 'empty';

type TextEncoding = 'utf-8' | 'utf-16le' | 'utf-16be';

const CONTROL = /[\u0000-\u0008\u000B\u000E-\u001F\u007F]/;

function encodingOf(head: Uint8Array): { encoding: TextEncoding; bom: number } {
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) return { encoding: 'utf-8', bom: 3 };
  if (head[0] === 0xff && head[1] === 0xfe) return { encoding: 'utf-16le', bom: 2 };
  if (head[0] === 0xfe && head[1] === 0xff) return { encoding: 'utf-16be', bom: 2 };
  return { encoding: 'utf-8', bom: 0 };
}

/** Follows a body chunk by chunk; `update` is false from the first byte that is not text. */
export class TextCheck {
  private readonly decoder: TextDecoder;
  private failed = false;

  constructor(readonly encoding: TextEncoding) {
    this.decoder = new TextDecoder(encoding, { fatal: true, ignoreBOM: false });
  }

  update(chunk: Uint8Array): boolean {
    if (this.failed) return false;
    try {
      if (CONTROL.test(this.decoder.decode(chunk, { stream: true }))) this.failed = true;
    } catch {
      this.failed = true; // not valid in its encoding
    }
    return !this.failed;
  }

  /** The body ended: a sequence cut short at the end is not text either. */
  end(): boolean {
    if (this.failed) return false;
    try { this.decoder.decode(); } catch { this.failed = true; }
    return !this.failed;
  }
}

/**
 * The kind of metadata `head` (a body's first bytes, or all of a short body) starts, and the
 * TextCheck to run over the rest of it (already fed `head`); undefined when it is not metadata.
 */
export function sniffMetadata(head: Uint8Array): { kind: MetadataKind; check: TextCheck } | undefined {
  const { encoding, bom } = encodingOf(head);
  const check = new TextCheck(encoding);
  if (head.byteLength === 0) return { kind: 'empty', check };
  if (!check.update(head)) return undefined;
  // The first characters, decoded on their own (the head may end inside a character: not fatal here).
  const text = new TextDecoder(encoding).decode(head.subarray(bom));
  if (text.startsWith('#!')) return undefined;
  const first = text.trimStart()[0];
  return { kind: first === '<' ? 'xml' : first === '{' || first === '[' ? 'json' : 'text', check };
}
