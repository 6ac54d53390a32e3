import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { type Manifest, objectDigest } from '../cache/manifest.ts';
import type { ObjectHandle, ObjectStore } from '../cache/object-store.ts';
import type { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import type { AccessControl, Principal } from './access.ts';
import { etagMatches, OBJECTS_PREFIX, OBJECTS_ROUTE, targetKey, traced } from './objects.ts';
import { responseOutcome } from './outcome.ts';
import { type ByteRange, requestedRange } from './range.ts';
import { writeChunks } from './write-chunks.ts';

export interface LocalHitsDeps {
  store: ObjectStore;
  counters: Counters;
  metrics: Pick<AgentMetrics, 'recordRequest'>;
  logger: Logger;
  access?: AccessControl | undefined;
}

/** The headers of a local answer for one version of an object, computed on its first hit. */
interface Prepared {
  etag: string;
  lastModified: string;
  /** ETag, source, Accept-Ranges, Content-Type and Last-Modified, as raw name-value pairs. */
  common: string[];
  /** `common` with the whole object's Content-Length. */
  full: string[];
}

/** A local object being answered: pinned, the bytes asked for, and the first chunk of them in hand. */
interface Hit {
  handle: ObjectHandle;
  bytes: ByteRange;
  partial: boolean;
  first: Buffer;
}

const EMPTY = Buffer.alloc(0);

function prepare(manifest: Manifest): Prepared {
  const etag = `"${objectDigest(manifest)}"`;
  const lastModified = new Date(manifest.createdAtMs).toUTCString();
  // In the order, and with the names, objects.ts getObject sets them.
  const common = [
    'ETag',
    etag,
    'X-Edgemesh-Source',
    'local',
    'Accept-Ranges',
    'bytes',
    'Content-Type',
    manifest.contentType ?? 'application/octet-stream', // as stored, as objects.ts sends it
    'Last-Modified',
    lastModified,
  ];
  return { etag, lastModified, common, full: [...common, 'Content-Length', String(manifest.size)] };
}

/**
 * A node:http request listener that answers GET and HEAD of objects this node holds, whose first
 * chunk is in the hot tier, before the API's routes; `fallback` (the API, app.ts) gets every other
 * request, unchanged: other methods and paths, requests with a Transfer-Encoding (the API refuses
 * one it cannot decode, 501, before authentication), invalid keys, clients refused (401, 403, 429:
 * the API refuses them, with its counters), misses (peers, origin, 404), objects only on disk (the
 * API reads them into the hot tier), unsatisfiable ranges of a GET (416). What it answers, it answers as the
 * API would: the same headers and bodies, the same authentication and limits, request metric (route
 * OBJECTS_ROUTE), server span and counters (hits, bytes served). Its headers are computed once per
 * object version.
 */
export function withLocalHits(deps: LocalHitsDeps, fallback: RequestListener): RequestListener {
  const { store, counters, metrics, logger, access } = deps;
  const prepared = new WeakMap<Manifest, Prepared>(); // a new version is a new manifest

  function headersOf(manifest: Manifest): Prepared {
    let p = prepared.get(manifest);
    if (!p) prepared.set(manifest, (p = prepare(manifest)));
    return p;
  }

  /** Streams the chunks covering `bytes` (the first already in hand), as objects.ts does. */
  function sendChunks(manifest: Manifest, data: Buffer, bytes: ByteRange, res: ServerResponse) {
    const first = Math.floor(bytes.start / manifest.chunkSize);
    const pass = store.passReader(manifest, first, Math.floor(bytes.end / manifest.chunkSize));
    return writeChunks(
      res,
      manifest,
      bytes,
      pass,
      data,
      (part) => (counters.bytesServed.local += part.length),
    );
  }

  /** The answer (objects.ts getObject's, for a local source), in the object's server span. */
  async function answer(req: IncomingMessage, res: ServerResponse, hit: Hit): Promise<void> {
    const { handle, bytes } = hit;
    try {
      const manifest = handle.manifest;
      counters.hits++;
      const p = headersOf(manifest);
      if (etagMatches(req.headers['if-none-match'], p.etag)) {
        res.writeHead(304, p.common).end();
        return;
      }
      if (hit.partial) {
        res.writeHead(206, [
          ...p.common,
          'Content-Length',
          String(bytes.end - bytes.start + 1),
          'Content-Range',
          `bytes ${bytes.start}-${bytes.end}/${manifest.size}`,
        ]);
      } else res.writeHead(200, p.full);
      if (req.method === 'HEAD' || manifest.size === 0) {
        res.end();
        return;
      }
      await sendChunks(manifest, hit.first, bytes, res);
    } catch (error) {
      if (!res.headersSent) throw error;
      // As objects.ts send: a later chunk could not be read (damaged on disk): cut the answer short.
      logger.error(
        { err: error, key: handle.manifest.key },
        'response aborted: could not deliver verified bytes',
      );
      res.destroy();
    } finally {
      handle.release();
    }
  }

  /**
   * The local object `key` pinned, with the bytes to send and the first chunk of them, when that
   * chunk is in the hot tier and the range (if any) satisfiable; else undefined, nothing pinned.
   */
  function localHit(key: string, req: IncomingMessage): Hit | undefined {
    const handle = store.openRead(key);
    if (!handle) return undefined;
    const { size, chunkSize, chunks } = handle.manifest;
    const { etag, lastModified } = headersOf(handle.manifest);
    const ifRange = req.headers['if-range']; // node joins a repeated one into one string
    const range = requestedRange(
      {
        method: req.method,
        range: req.headers.range,
        ifRange: typeof ifRange === 'string' ? ifRange : undefined,
      },
      { size, etag, lastModified },
    );
    const bytes = range.kind === 'partial' ? range.range : { start: 0, end: size - 1 };
    const digest = chunks[Math.floor(bytes.start / chunkSize)];
    const first = digest === undefined ? EMPTY : store.hotChunk(digest);
    if (range.kind !== 'unsatisfiable' && first)
      return { handle, bytes, partial: range.kind === 'partial', first };
    handle.release();
    return undefined;
  }

  /** Serves `req` when it is a local hit this path takes; false (having done nothing visible) when not. */
  async function serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    const started = performance.now();
    let key: string;
    try {
      key = targetKey(path);
    } catch {
      return false; // the API answers it (400)
    }
    let principal: Principal | undefined;
    if (access) {
      principal = await access.authenticateRequest(req);
      if (!principal || !access.allows(principal, 'read', key)) return false;
      // Hung up while its token was checked: the API takes it (and answers nobody, as for any).
      if (res.closed) return false;
    }
    const hit = localHit(key, req);
    if (!hit) return false;
    const release = access ? access.admit(principal!, req.socket.remoteAddress) : noop;
    if (!release) {
      hit.handle.release();
      return false;
    }
    res.once('close', () => {
      release();
      metrics.recordRequest({
        method: req.method!,
        path,
        route: OBJECTS_ROUTE,
        ...responseOutcome(res),
        seconds: (performance.now() - started) / 1000,
      });
    });
    await traced(deps, key, req, res, () => answer(req, res, hit), 'local');
    return true;
  }

  return (req, res) => {
    const method = req.method;
    const url = req.url ?? '';
    // A request with a body (a Transfer-Encoding) is the API's: it refuses a coding it cannot read.
    if (
      (method !== 'GET' && method !== 'HEAD') ||
      !url.startsWith(OBJECTS_PREFIX) ||
      req.headers['transfer-encoding'] !== undefined
    ) {
      fallback(req, res);
      return;
    }
    const query = url.indexOf('?');
    serve(req, res, query < 0 ? url : url.slice(0, query)).then(
      (served) => {
        if (!served) fallback(req, res);
      },
      (error: unknown) => {
        logger.error({ err: error, url }, 'request failed');
        if (res.headersSent) res.destroy();
        else internalError(res);
      },
    );
  };
}

const noop = () => {};

/** objects.ts's answer to an unexpected error (sendError of a 500), for a bare response. */
function internalError(res: ServerResponse): void {
  const body = JSON.stringify({ error: { code: 'Internal', message: 'internal error' } });
  res.writeHead(500, [
    'Content-Type',
    'application/json; charset=utf-8',
    'Content-Length',
    String(Buffer.byteLength(body)),
  ]);
  res.end(body);
}
