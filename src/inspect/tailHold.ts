import { parsePeLayout } from '../verify/pe/peLayout.js';
import { u16, u32 } from '../verify/format/littleEndian.js';
import type { SniffedFormat } from '../verify/format/sniffFormat.js';
import { SLAB_BYTES, giveSlab, takeSlab } from './spool.js';

/**
 * Tail hold (rules `hold: tail`): a payload streams to its client while it arrives and is verified,
 * but its end is withheld until the verdict, so that the client never holds a complete payload
 * that was not allowed. This module decides, from the payload's own first bytes, how much may go
 * out early; the holder (HeldDownload, the ICAP transaction) does the writing.
 *
 * What is withheld, and why (docs/gate.md "Hold modes"):
 * - Always the last TAIL_HOLD_BYTES of whatever has arrived (a lag behind the arrival front): the
 *   length is not trusted (a lying header, a chunked or decoded body), and whatever the body turns
 *   out to be, its final MiB never leaves before the verdict.
 * - PE: everything from min(start of the certificate table, end of the last section's raw data)
 *   minus TAIL_HOLD_BYTES. The certificate table is the signature span (its position is in the
 *   headers, so it is known before the first byte goes out). Withholding the signature alone would
 *   leave a runnable unsigned executable; the Windows loader refuses an image whose section raw data
 *   runs past the end of the file (STATUS_INVALID_IMAGE_FORMAT), so the final MiB of section data is
 *   withheld as well. Data appended after the sections (an installer's overlay) is withheld whole,
 *   since a self-extractor may run with a truncated overlay: such files stream only their sections.
 *   An unsigned PE (no certificate table) is held whole: it can only be blocked.
 * - Every other format is held whole, because withholding a tail does not make it unusable or the
 *   signature's position is not known early: a cabinet (CAB, MSU, trust-list cabinet) extracts
 *   every file whose data arrived, with or without its reserve-area signature at the end; an MSI is
 *   a compound file whose FAT, directory and signature stream may sit anywhere, and whose streams
 *   can be recovered from a truncated file; an MSIX/APPX is a ZIP whose central directory is at the
 *   end but whose entries are recoverable from their local headers; catalogs, trust lists and
 *   detached CMS are small and are all signature.
 */
export const TAIL_HOLD_BYTES = 1 << 20;

/** How a payload of this format is held in tail mode: how far it may stream, or why it is held whole. */
export type TailPlan = { kind: 'stream'; limit: number } | { kind: 'whole'; why: string } | { kind: 'need'; bytes: number };

/** Reads the plan from the payload's first bytes (`head`: the bytes so far, from offset 0). */
export function tailPlan(format: SniffedFormat, head: Uint8Array, maxHeaderBytes: number, tail = TAIL_HOLD_BYTES): TailPlan {
  if (format !== 'pe') return { kind: 'whole', why: `a ${format} payload is held whole: withholding its tail would not make it unusable, or its signature's position is not known early` };
  let layout;
  try {
    const r = parsePeLayout(head, maxHeaderBytes);
    if (r.kind === 'need') return { kind: 'need', bytes: r.bytes };
    layout = r.layout;
  } catch (e) {
    return { kind: 'whole', why: `PE headers do not parse (${(e as Error).message})` };
  }
  if (!layout.certTableSize) return { kind: 'whole', why: 'an unsigned PE is held whole' };
  // Section table: after the optional header (parsePeLayout checked the offsets up to it).
  const coff = u32(head, 0x3c) + 4;
  const sections = coff + 20 + u16(head, coff + 16);
  const count = u16(head, coff + 2);
  const end = sections + 40 * count;
  if (end > maxHeaderBytes) return { kind: 'whole', why: 'PE section table extends past the header limit' };
  if (head.byteLength < end) return { kind: 'need', bytes: end };
  let rawEnd = 0;
  for (let i = 0; i < count; i++) {
    const s = sections + 40 * i;
    const size = u32(head, s + 16);
    if (size) rawEnd = Math.max(rawEnd, u32(head, s + 20) + size);
  }
  if (!rawEnd) return { kind: 'whole', why: 'a PE without section data is held whole' };
  const limit = Math.min(rawEnd, layout.certTableOffset) - tail;
  if (limit <= 0) return { kind: 'whole', why: `a PE whose sections end within the withheld ${tail} bytes is held whole` };
  return { kind: 'stream', limit };
}

/**
 * Bytes released at once (unless the limit is reached): the client gets fewer, bigger writes, and
 * the withheld part only grows by this much while it waits (more is withheld, never less).
 */
export const RELEASE_STEP_BYTES = 256 << 10;

/**
 * The release side of a tail hold: fed the decoded body in order, it hands back what may go to the
 * client now. The bytes below the limit are copied into pooled spool buffers (the socket's own
 * chunks die young instead of being kept for the lag, which made them outlive the young
 * generation: docs/performance.md) and released as views of them, RELEASE_STEP_BYTES or more at a
 * time. Memory: the bytes not yet released below the limit (at most `tail` plus a step and one
 * buffer); bytes past the limit are not kept here (the holder serves them from its spool after an
 * allow). A buffer whose last byte was released is handed out with the batch (`takeFinished`): the
 * consumer gives it back to the pool once every write of it completed, or leaves it to the garbage
 * collector.
 */
export class TailRelease {
  private head: Buffer[] = [];
  private headBytes = 0;
  private arrived = 0;
  private released = 0;
  private limit = 0;
  /** Buffers holding [slabsStart, arrived) below the limit, in order; the last one partly filled. */
  private slabs: Buffer[] = [];
  private slabsStart = 0;
  private lastFill = 0;
  /** Buffers fully released by the last offer() (for takeFinished). */
  private finished: Buffer[] = [];
  /** Head bytes the plan asked for at its last try. */
  private needBytes = 0;
  /** Why the payload is held whole (nothing is released), once known. */
  whole: string | undefined;

  constructor(private readonly format: SniffedFormat, private readonly maxHeaderBytes: number, private readonly tail = TAIL_HOLD_BYTES, private readonly step = RELEASE_STEP_BYTES) {}

  /** Bytes handed out so far (the client's copy is this prefix of the payload). */
  get releasedBytes(): number { return this.released; }
  /** Has the plan been made (stream or whole)? */
  get planned(): boolean { return this.whole !== undefined || this.limit > 0; }
  /** The plan is to stream (the response head may go out, before any body byte). */
  get streaming(): boolean { return this.whole === undefined && this.limit > 0; }
  /** Bytes kept here, not yet released (tests: the bound). */
  get keptBytes(): number { return this.limit > 0 ? Math.max(0, Math.min(this.arrived, this.limit) - this.released) : this.headBytes; }

  /** The next decoded bytes; returns those that may leave now (possibly none): views valid until their buffer is given back. */
  offer(chunk: Buffer): Buffer[] {
    if (this.whole !== undefined) return [];
    if (this.limit === 0) {
      this.arrived += chunk.byteLength;
      this.head.push(chunk);
      this.headBytes += chunk.byteLength;
      // Joined and parsed again only once the bytes the last try asked for are in (a trickle of tiny
      // chunks must not cost a copy of the whole head each).
      if (this.headBytes < this.needBytes) return [];
      const head = this.head.length === 1 ? this.head[0]! : Buffer.concat(this.head);
      this.head = [head];
      const plan = tailPlan(this.format, head, this.maxHeaderBytes, this.tail);
      if (plan.kind === 'need') {
        if (plan.bytes > this.maxHeaderBytes || this.headBytes >= this.maxHeaderBytes) this.holdWhole('PE headers exceed the header limit');
        this.needBytes = plan.bytes;
        return [];
      }
      if (plan.kind === 'whole') {
        this.holdWhole(plan.why);
        return [];
      }
      this.limit = plan.limit;
      this.head = [];
      this.headBytes = 0;
      this.keep(head, 0);
    } else {
      if (this.released >= this.limit) return [];
      this.keep(chunk, this.arrived);
      this.arrived += chunk.byteLength;
    }
    return this.take();
  }

  /** Copies the part of `chunk` (its first byte at payload offset `at`) below the limit into the buffers. */
  private keep(chunk: Buffer, at: number): void {
    let off = 0;
    const n = Math.min(chunk.byteLength, this.limit - at);
    while (off < n) {
      if (!this.slabs.length || this.lastFill === SLAB_BYTES) {
        this.slabs.push(takeSlab());
        this.lastFill = 0;
      }
      const k = Math.min(n - off, SLAB_BYTES - this.lastFill);
      chunk.copy(this.slabs[this.slabs.length - 1]!, this.lastFill, off, off + k);
      this.lastFill += k;
      off += k;
    }
  }

  private holdWhole(why: string): void {
    this.whole = why;
    this.head = [];
    this.headBytes = 0;
  }

  private take(): Buffer[] {
    const upTo = Math.min(this.limit, this.arrived - this.tail);
    if (upTo <= this.released || (upTo - this.released < this.step && upTo < this.limit)) return [];
    const out: Buffer[] = [];
    while (this.released < upTo) {
      const slab = this.slabs[0]!;
      const from = this.released - this.slabsStart;
      const filled = this.slabs.length === 1 ? this.lastFill : SLAB_BYTES;
      const to = Math.min(filled, upTo - this.slabsStart);
      out.push(slab.subarray(from, to));
      this.released += to - from;
      if (to === SLAB_BYTES || this.released >= this.limit) {
        this.finished.push(slab);
        this.slabs.shift();
        this.slabsStart += SLAB_BYTES;
        if (!this.slabs.length) this.lastFill = 0;
      }
    }
    return out;
  }

  /**
   * The buffers whose last byte the last offer() released: give them back (giveSlabs) once every
   * write of that batch (and of the batches before it) completed. Dropped unasked, they are garbage.
   */
  takeFinished(): Buffer[] {
    const f = this.finished;
    this.finished = [];
    return f;
  }

  /** The hold is over: buffers never lent go back to the pool; those partly lent are left to the collector. */
  dispose(): void {
    this.slabs.forEach((s, i) => { if (this.slabsStart + i * SLAB_BYTES >= this.released) giveSlab(s); });
    this.slabs = [];
    this.finished = [];
    this.head = [];
  }
}

/** Gives released buffers back to the pool (their writes completed). */
export function giveSlabs(slabs: Buffer[]): void {
  for (const s of slabs) giveSlab(s);
}
