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
  ifRange: string | undefined;
}

/** The version being answered: its size, and its validators as its ETag and Last-Modified give them. */
export interface RangeTarget {
  size: number;
  /** Undefined when the answer has none (an object an owner is still getting from its origin). */
  etag: string | undefined;
  lastModified: string | undefined;
}

/**
 * The bytes a request asks of the version being answered: its Range, for a GET only, and only when
 * an If-Range it carries names this version. RFC 9110 §14.2 defines ranges for GET alone; a HEAD
 * answers as the GET without its Range would (200, the whole Content-Length). §13.1.5: a client
 * resuming a download sends If-Range with the version it has; when that is not the current one
 * (the key was replaced), the Range is ignored and the whole current version sent (200), never a
 * piece of it to splice onto the bytes of another.
 */
export function requestedRange(req: RangeRequest, target: RangeTarget): RangeResult {
  if (req.method !== 'GET' || req.range === undefined) return { kind: 'full' };
  if (req.ifRange !== undefined && !ifRangeHolds(req.ifRange, target)) return { kind: 'full' };
  return parseRange(req.range, target.size);
}

/**
 * Whether an If-Range names the version `target` (RFC 9110 §13.1.5): an entity tag by strong
 * comparison (a weak one, W/"...", never does), a date only when it is exactly the version's
 * Last-Modified. (Two versions of a key made within one second share a Last-Modified; a client that
 * has the ETag, which every answer with a Last-Modified carries, sends that instead, as §13.1.5 asks.)
 */
export function ifRangeHolds(header: string, target: Pick<RangeTarget, 'etag' | 'lastModified'>): boolean {
  const value = header.trim();
  if (value.startsWith('"') || value.startsWith('W/'))
    return target.etag !== undefined && value === target.etag;
  return target.lastModified !== undefined && value === target.lastModified;
}
