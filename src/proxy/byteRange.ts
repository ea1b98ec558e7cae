/** A single satisfiable byte range of an entity of known size, inclusive bounds as in Content-Range. */
export interface ByteRangeRequest {
  start: number;
  end: number;
}

export type RangeResult = { kind: 'full' } | { kind: 'range'; range: ByteRangeRequest } | { kind: 'unsatisfiable' };

/** More ranges than this in one header are not worth honouring: the entity is sent whole. */
const MAX_RANGES = 16;

/**
 * Interprets a client's Range header against the verified entity (RFC 9110 14.2). One range is
 * served as 206; several, malformed or absurd ones fall back to the whole entity (allowed by the
 * RFC); a syntactically valid set that is entirely past the end is 416.
 */
export function interpretRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) return { kind: 'full' };
  const specs = m[1]!.split(',').map((s) => s.trim()).filter(Boolean);
  if (specs.length === 0 || specs.length > MAX_RANGES) return { kind: 'full' };
  const ranges: ByteRangeRequest[] = [];
  for (const spec of specs) {
    const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
    if (!r || (r[1] === '' && r[2] === '')) return { kind: 'full' };
    if (r[1] === '') {
      const suffix = Number(r[2]);
      if (!Number.isSafeInteger(suffix)) return { kind: 'full' };
      if (suffix === 0) continue;
      ranges.push({ start: Math.max(0, size - suffix), end: size - 1 });
    } else {
      const start = Number(r[1]);
      const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) return { kind: 'full' };
      if (r[2] !== '' && Number(r[2]) < start) return { kind: 'full' };
      if (start >= size) continue;
      ranges.push({ start, end });
    }
  }
  if (ranges.length === 0) return size === 0 ? { kind: 'full' } : { kind: 'unsatisfiable' };
  if (ranges.length > 1) return { kind: 'full' };
  return { kind: 'range', range: ranges[0]! };
}
