import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
} from '@opentelemetry/semantic-conventions';
import { context, extractFromHeaders, SpanKind, trace, tracer } from '../telemetry/tracing.ts';
import { ObjectTooLargeError } from '../cache/errors.ts';
import { isMediaType, type Manifest, objectDigest } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import { type ChunkSource, localSource } from '../fetch/chunk-source.ts';
import type { OriginOutcome } from '../fetch/origin.ts';
import type { Located } from '../fetch/download.ts';
import type { PeerFetcher } from '../fetch/peer-fetcher.ts';
import { keyProblem } from '../keys.ts';
import type { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Principal } from './access.ts';
import { answerFailure, HttpError, toHttpError } from './errors.ts';
import { sendJson } from './json.ts';
import { clientLeft, type Outcome, responseOutcome } from './outcome.ts';
import { type ByteRange, requestedRange } from './range.ts';
import { writeChunks } from './write-chunks.ts';

export const OBJECTS_PREFIX = '/v1/objects/';
/** The objects route as request metrics label it (the template express gave it, kept for the series). */
export const OBJECTS_ROUTE = '/v1/objects/{*key}';
/** Header a PUT may carry: the object's time to live in seconds. */
export const TTL_HEADER = 'x-edgemesh-ttl';
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

export interface ObjectRoutesDeps {
  store: ObjectStore;
  /** Replicates a stored object to its owners; resolves with the copies that exist (this one included). */
  replicate?: (manifest: Manifest) => Promise<number>;
  /** Copies required before a PUT answers 201. */
  writeCopies?: number;
  /** Purges `key` mesh-wide, as client `by` asked; whether any node had it. Without it, DELETE is local. */
  purge?: (key: string, by?: string) => Promise<boolean>;
  /** Gets an object no node holds by the origin rules (one origin fetch for the mesh). */
  origin?: (key: string) => Promise<OriginOutcome | undefined>;
  fetcher: PeerFetcher | undefined;
  counters: Counters;
  logger: Logger;
}

/** The key a request names (see targetKey). */
export function requestKey(req: IncomingMessage): string {
  return targetKey(req.url ?? '');
}

/**
 * The key exactly as the client sent it in the request target: the raw path after /v1/objects/, not
 * percent-decoded, the query left out. Key characters never need encoding, so any `%` (an encoded
 * `..` or `/` among them) is rejected: 400 InvalidKey, as for any target that names no valid key.
 */
export function targetKey(target: string): string {
  const path = target.split('?', 1)[0]!;
  // The route matched the path in any case and in absolute form too (routes.ts); the key is taken
  // only from a path-form target spelled /v1/objects/ exactly: anything else is 400 InvalidKey.
  if (!path.startsWith(OBJECTS_PREFIX))
    throw new HttpError(400, 'InvalidKey', `the request target must be a path: ${OBJECTS_PREFIX}KEY`);
  const key = path.slice(OBJECTS_PREFIX.length);
  const problem = keyProblem(key);
  if (problem) throw new HttpError(400, 'InvalidKey', problem);
  return key;
}

/** Handles every method on /v1/objects/{key}, for `principal` (the client, when access control is on). */
export function objectsHandler(deps: ObjectRoutesDeps) {
  return async (req: IncomingMessage, res: ServerResponse, principal?: Principal): Promise<void> => {
    try {
      const key = requestKey(req);
      switch (req.method) {
        case 'PUT':
          return await traced(deps, key, req, res, () => put(deps, key, req, res));
        case 'GET':
        case 'HEAD':
          return await traced(deps, key, req, res, () => getObject(deps, key, req, res));
        case 'DELETE':
          return await traced(deps, key, req, res, () => remove(deps, key, res, principal?.name));
        default:
          throw new HttpError(405, 'MethodNotAllowed', `${req.method} is not allowed here`, {
            Allow: 'GET, HEAD, PUT, DELETE',
          });
      }
    } catch (error) {
      answerFailure(deps.logger, req, res, error);
    }
  };
}

function parseTtlMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (!/^\d+$/.test(value.trim()) || seconds < 1 || seconds > MAX_TTL_SECONDS) {
    throw new HttpError(
      400,
      'InvalidTtl',
      `${TTL_HEADER} must be whole seconds from 1 to ${MAX_TTL_SECONDS}`,
    );
  }
  return seconds * 1000;
}

async function put(
  deps: ObjectRoutesDeps,
  key: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const lengthHeader = req.headers['content-length'];
  const size = lengthHeader === undefined ? undefined : Number(lengthHeader);
  if (size !== undefined && !Number.isSafeInteger(size))
    throw new HttpError(400, 'BadRequest', 'invalid Content-Length');
  const ttl = req.headers[TTL_HEADER];
  const ttlMs = parseTtlMs(typeof ttl === 'string' ? ttl : undefined);
  const contentType = req.headers['content-type'];
  if (contentType !== undefined && !isMediaType(contentType)) {
    throw new HttpError(400, 'InvalidContentType', 'Content-Type must be a media type such as text/plain');
  }
  const manifest = await deps.store.put(key, req, {
    ...(size === undefined ? {} : { size }),
    ttlMs,
    contentType,
  });
  deps.counters.bytesStored += manifest.size;
  const digest = objectDigest(manifest);
  // Pinned while its copies are made: the owners pull it from here, and a full store must not evict
  // it meanwhile (SIEVE may take the newest object; a store whose every object is owned then had
  // nothing else, and the write answered 503 with one copy).
  const pin = deps.replicate ? deps.store.openRead(key) : undefined;
  let copies: number;
  try {
    copies = deps.replicate ? await deps.replicate(manifest) : 1;
  } finally {
    pin?.release();
  }
  res.setHeader('X-Edgemesh-Copies', String(copies));
  const required = deps.writeCopies ?? 1;
  if (copies < required) {
    throw new HttpError(
      503,
      'ReplicationIncomplete',
      `stored on ${copies} node(s) but ${required} copies were required; replication goes on in the background`,
    );
  }
  sendJson(
    res,
    201,
    { key, digest, size: manifest.size, chunks: manifest.chunks.length },
    { ETag: `"${digest}"`, Location: OBJECTS_PREFIX + key },
  );
}

async function remove(
  deps: ObjectRoutesDeps,
  key: string,
  res: ServerResponse,
  by: string | undefined,
): Promise<void> {
  const wasFetching = deps.fetcher?.discard(key) ?? false;
  const existed = deps.purge ? await deps.purge(key, by) : await deps.store.delete(key);
  if (!existed && !wasFetching) throw new HttpError(404, 'NotFound', `no object ${key}`);
  res.writeHead(204).end();
}

/** Whether an If-None-Match header names `etag` (weakly or not), or is `*`. */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || t === `W/${etag}`;
  });
}

/**
 * A request on an object, in a server span continuing the client's trace (traceparent). For GET and
 * HEAD it names the source that served it (local, peer or origin): the root of the trace of a fetch
 * across the mesh. A PUT's replication and a DELETE's purge (over gRPC and over NATS) join it too.
 * `source`: the source when it is known before the answer is (the fast path's raw headers, which
 * `res.getHeader` does not see); else the X-Edgemesh-Source header the answer carries.
 */
export function traced(
  deps: Pick<ObjectRoutesDeps, 'logger'>,
  key: string,
  req: IncomingMessage,
  res: ServerResponse,
  handle: () => Promise<void>,
  source?: string,
): Promise<void> {
  const parent = extractFromHeaders(req.headers);
  const span = tracer().startSpan(
    `${req.method} /v1/objects/{key}`,
    {
      kind: SpanKind.SERVER,
      attributes: {
        [ATTR_HTTP_REQUEST_METHOD]: req.method,
        [ATTR_HTTP_ROUTE]: '/v1/objects/{key}',
        'edgemesh.key': key,
      },
    },
    parent,
  );
  return context.with(trace.setSpan(parent, span), async () => {
    // What the answer is: the error's status when it failed (sent after this), else the response's
    // outcome so far (responseOutcome: a status only if one went out; `aborted` if the client left).
    let outcome: Outcome | undefined;
    try {
      await handle();
    } catch (error) {
      if (!clientLeft(req, res, error)) {
        const { status } = toHttpError(error);
        outcome = { status };
        // As OpenTelemetry's HTTP conventions say: a server span is an error for 5xx only.
        if (status >= 500) span.setStatus({ code: 2, message: (error as Error).message });
      }
      throw error;
    } finally {
      outcome ??= responseOutcome(res);
      const served = source ?? res.getHeader('x-edgemesh-source');
      if (typeof served === 'string') span.setAttribute('edgemesh.source', served);
      if (outcome.status !== undefined) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, outcome.status);
      if (outcome.errorType !== undefined) span.setAttribute(ATTR_ERROR_TYPE, outcome.errorType);
      deps.logger.debug({ key, method: req.method, source: served, ...outcome }, 'request'); // carries the trace id
      span.end();
    }
  });
}

async function getObject(
  deps: ObjectRoutesDeps,
  key: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const handle = deps.store.openRead(key);
  let source: ChunkSource | undefined = handle && localSource(deps.store, handle);
  let located: Located | undefined;
  if (source) deps.counters.hits++;
  else {
    deps.counters.misses++;
    located = await deps.fetcher?.locate(key);
    const viaOrigin = located ? undefined : await deps.origin?.(key).catch(asOriginFailure);
    if (viaOrigin?.source === 'peer') located = viaOrigin.located;
    const fetched = viaOrigin?.source === 'origin' ? deps.store.openRead(key) : undefined;
    if (fetched) source = localSource(deps.store, fetched, 'origin');
    if (!source && !located) throw new HttpError(404, 'NotFound', `no object ${key}`);
  }
  try {
    const manifest = source ? source.manifest : located!.manifest;
    const head = source?.head ?? located!.head;
    // No ETag while an owner is still getting the object from its origin: the root is not known yet.
    const etag = manifest && `"${objectDigest(manifest)}"`;
    const lastModified = manifest && new Date(manifest.createdAtMs).toUTCString();
    // The Content-Type exactly as stored (none: application/octet-stream), no charset added.
    if (etag) res.setHeader('ETag', etag);
    res.setHeader('X-Edgemesh-Source', source?.source ?? 'peer');
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Content-Type', head.contentType ?? 'application/octet-stream');
    if (lastModified) res.setHeader('Last-Modified', lastModified);
    if (etag && etagMatches(req.headers['if-none-match'], etag)) {
      res.writeHead(304).end();
      return;
    }
    const ifRange = req.headers['if-range']; // node joins a repeated one into one string
    const range = requestedRange(
      {
        method: req.method,
        range: req.headers.range,
        ifRange: typeof ifRange === 'string' ? ifRange : undefined,
      },
      { size: head.size, etag, lastModified },
    );
    if (range.kind === 'unsatisfiable') {
      throw new HttpError(
        416,
        'RangeNotSatisfiable',
        `range ${req.headers.range} is not satisfiable for ${head.size} bytes`,
        {
          'Content-Range': `bytes */${head.size}`,
        },
      );
    }
    const bytes: ByteRange = range.kind === 'partial' ? range.range : { start: 0, end: head.size - 1 };
    const body = req.method !== 'HEAD' && head.size > 0;
    // Before the status: a download this node cannot start now (TooManyFetchesError) is a 503.
    if (body) source ??= deps.fetcher!.open(located!);
    res.statusCode = range.kind === 'partial' ? 206 : 200;
    res.setHeader('Content-Length', String(bytes.end - bytes.start + 1));
    if (range.kind === 'partial')
      res.setHeader('Content-Range', `bytes ${bytes.start}-${bytes.end}/${head.size}`);
    if (!body || !source) {
      res.end();
      return;
    }
    await send(deps, source, bytes, res);
  } finally {
    source?.close();
  }
}

/**
 * An origin fetch's failure as a GET answers it. An origin object over the store's limits is this
 * node's limit, not something the client sent: 507 ObjectTooLarge, not a PUT's 413.
 */
function asOriginFailure(error: unknown): never {
  if (error instanceof ObjectTooLargeError)
    throw new HttpError(507, 'ObjectTooLarge', `the origin's object cannot be kept here: ${error.message}`);
  throw error;
}

/**
 * Streams the chunks covering `bytes` (writeChunks). The first chunk is read before the status line
 * goes out, so a failure there is a clean error response; a failure later aborts the response.
 */
async function send(
  deps: ObjectRoutesDeps,
  source: ChunkSource,
  bytes: ByteRange,
  res: ServerResponse,
): Promise<void> {
  const { head } = source;
  const first = Math.floor(bytes.start / head.chunkSize);
  const last = Math.floor(bytes.end / head.chunkSize);
  const pass = source.pass?.(first, last) ?? { read: (index) => source.read(index), done: () => {} };
  const firstData = await pass.read(first);
  const served = deps.counters.bytesServed;
  try {
    await writeChunks(res, head, bytes, pass, firstData, (part) => (served[source.source] += part.length));
  } catch (error) {
    deps.logger.error({ err: error, key: head.key }, 'response aborted: could not deliver verified bytes');
    res.destroy();
  }
}
