/** A byte range, both ends inclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

export type RangeResult =
  { kind: 'full' } | { kind: 'partial'; range: ByteRange } | { kind: 'unsatisfiable' };

/**
 * Interprets a Range header against an object of `size` bytes (RFC 9110 §14). One range is served;
 * a header with several ranges, or another unit, is ignored (the whole object is sent), as the RFC
 * allows, and so is a syntactically invalid one (`bytes=abc`, `bytes=9-3`: §14.2 lets a server
 * ignore or reject it; RFC 2616 required ignoring it).
 * A valid range no byte of the object satisfies is `unsatisfiable` (416): one starting at or past
 * the end, or the suffix `-0`. An empty object has no byte to send: a suffix range of it gets it
 * whole (§14.1.2 calls that range satisfiable), any other is unsatisfiable.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const match = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!match) return { kind: 'full' };
  const spec = match[1]!.trim();
  if (spec.includes(',')) return { kind: 'full' };
  const parts = /^(\d*)-(\d*)$/.exec(spec);
  if (!parts || (parts[1] === '' && parts[2] === '')) return { kind: 'full' }; // invalid: ignored
  const [, first, last] = parts as unknown as [string, string, string];
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    if (size === 0) return { kind: 'full' };
    return { kind: 'partial', range: { start: Math.max(0, size - suffix), end: size - 1 } };
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) return { kind: 'full' }; // invalid: ignored
  if (!Number.isSafeInteger(start) || start >= size) return { kind: 'unsatisfiable' };
  return {
    kind: 'partial',
    range: { start, end: last === '' ? size - 1 : Math.min(Number(last), size - 1) },
  };
}

/** A request, as far as its range goes. */
export interface RangeRequest {
  method: string | undefined;
  range: string | undefined;
}

/**
 * The bytes a request asks of an object of `size` bytes: its Range for a GET only. RFC 9110 §14.2
 * defines ranges for GET alone; a HEAD answers as the GET without its Range would (200, the whole
 * Content-Length).
 */
export function requestedRange(req: RangeRequest, size: number): RangeResult {
  if (req.method !== 'GET') return { kind: 'full' };
  return parseRange(req.range, size);
}
