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
 *
 * One binary kind is metadata too: a body that is exactly one DER X.509 certificate (`.crt` files
 * from ctldl.windowsupdate.com: roots Windows installs only when their hash is in the signed
 * authroot.stl it already verified). The whole body must parse as that one certificate, nothing after it.
 */
import { X509Certificate } from 'node:crypto';
import { readDerHeader } from '../derHeader.js';

export type MetadataKind = 'xml' | 'json' | 'text' | 'empty' | 'certificate';

/** Follows a body chunk by chunk: `update` is false from the first byte that breaks the kind, `end` judges the whole. */
export interface MetadataCheck {
  update(chunk: Uint8Array): boolean;
  end(): boolean;
}

/** Certificates are small: a larger DER body is not taken for one. */
const MAX_CERTIFICATE_BYTES = 64 * 1024;

/** The DER length of a SEQUENCE at the start of `head` (header + content), if it starts one of a certificate's size. */
function derSequence(head: Uint8Array): { header: number; total: number } | undefined {
  if (head[0] !== 0x30 || head.byteLength < 5) return undefined;
  const h = readDerHeader(head, 0);
  // Indefinite, non-minimal or larger than a certificate (a length of more than two octets): not one.
  if (!h.ok || !h.minimal || h.lengthOctets > 3) return undefined;
  return { header: h.valueStart, total: h.end };
}

/** Exactly one DER certificate: the bytes up to its declared length, none after, parsed at the end. */
class CertificateCheck implements MetadataCheck {
  private readonly bytes: Buffer;
  private filled = 0;
  private failed = false;
  constructor(private readonly length: number) {
    this.bytes = Buffer.alloc(length);
  }
  update(chunk: Uint8Array): boolean {
    if (this.failed) return false;
    if (this.filled + chunk.byteLength > this.length) return !(this.failed = true);
    this.bytes.set(chunk, this.filled);
    this.filled += chunk.byteLength;
    return true;
  }
  end(): boolean {
    if (this.failed || this.filled !== this.length) return false;
    try {
      return new X509Certificate(this.bytes).raw.equals(this.bytes);
    } catch {
      return false;
    }
  }
}

type TextEncoding = 'utf-8' | 'utf-16le' | 'utf-16be';

const CONTROL = /[\u0000-\u0008\u000B\u000E-\u001F\u007F]/;

function encodingOf(head: Uint8Array): { encoding: TextEncoding; bom: number } {
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) return { encoding: 'utf-8', bom: 3 };
  if (head[0] === 0xff && head[1] === 0xfe) return { encoding: 'utf-16le', bom: 2 };
  if (head[0] === 0xfe && head[1] === 0xff) return { encoding: 'utf-16be', bom: 2 };
  return { encoding: 'utf-8', bom: 0 };
}

/** Follows a body chunk by chunk; `update` is false from the first byte that is not text. */
export class TextCheck implements MetadataCheck {
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
export function sniffMetadata(head: Uint8Array): { kind: MetadataKind; check: MetadataCheck } | undefined {
  const der = derSequence(head);
  // A certificate: a SEQUENCE whose first element is a SEQUENCE (tbsCertificate); X509Certificate judges the rest.
  if (der !== undefined && der.total <= MAX_CERTIFICATE_BYTES && head[der.header] === 0x30) {
    const check = new CertificateCheck(der.total);
    return check.update(head) ? { kind: 'certificate', check } : undefined;
  }
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
