import { pipeline, Readable, Transform } from 'node:stream';
import { chunkSizeFor, MAX_CHUNK_SIZE, MAX_OBJECT_BYTES, MIN_CHUNK_SIZE } from '../cache/chunking.ts';
import { IncompleteBodyError, ObjectNotFoundError, StoreError } from '../cache/errors.ts';
import { isMediaType, type Manifest, parseManifest } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { Counters } from '../telemetry/counters.ts';
import { isKey } from '../keys.ts';
import type { Logger } from '../telemetry/logger.ts';
import {
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_SERVER_ADDRESS,
  ATTR_URL_FULL,
} from '@opentelemetry/semantic-conventions';
import { SpanKind, SpanStatusCode, tracer } from '../telemetry/tracing.ts';
import { PeerBusyError, type PeerTransport } from '../transport/peer-transport.ts';
import type { Located } from './download.ts';
import type { ObjectHead } from '../domain.ts';
import { headOf, type Progress, Seeder, type Swarm } from './swarm.ts';
import { readOriginHeaders } from './origin-headers.ts';
import { MAX_ORIGIN_FETCHES, TooManyFetchesError } from './fetch-limits.ts';

export interface OriginRule {
  prefix: string;
  url: string;
  /** A directory of request headers for this origin, one file each (origin-headers.ts). */
  headersDir?: string | undefined;
}

/** The origin answered with an error, or could not be reached. Retryable. */
export class OriginError extends Error {
  override name = 'OriginError';
}

/**
 * Gets objects from their origin (HTTP GET of the rule's URL + the rest of the key) into the store,
 * once per key however many ask at the same time. The body streams into the verified store chunk by
 * chunk; a 404 from the origin is ObjectNotFoundError.
 */
export class OriginFetcher {
  readonly #rules: readonly OriginRule[];
  readonly #store: ObjectStore;
  readonly #counters: Counters;
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  readonly #swarm: Swarm | undefined;
  readonly #onFetch: ((outcome: 'ok' | 'not_found' | 'error', seconds: number) => void) | undefined;
  readonly #inflight = new Map<string, { done: Promise<Manifest>; started: Promise<Progress | undefined> }>();
  readonly #maxFetches: number;

  constructor(opts: {
    rules: readonly OriginRule[];
    store: ObjectStore;
    counters: Counters;
    logger: Logger;
    timeoutMs: number;
    /** Where a fetch under way is published, so peers can follow it chunk by chunk. */
    swarm?: Swarm;
    /** Called after each origin fetch: how it ended and how long it took, to the last byte stored. */
    onFetch?: (outcome: 'ok' | 'not_found' | 'error', seconds: number) => void;
    /** Origin fetches under way at once, at most (default MAX_ORIGIN_FETCHES); past it a new one is refused. */
    maxFetches?: number;
  }) {
    this.#maxFetches = opts.maxFetches ?? MAX_ORIGIN_FETCHES;
    this.#swarm = opts.swarm;
    this.#onFetch = opts.onFetch;
    this.#rules = [...opts.rules].sort((a, b) => b.prefix.length - a.prefix.length); // longest prefix wins
    this.#store = opts.store;
    this.#counters = opts.counters;
    this.#logger = opts.logger;
    this.#timeoutMs = opts.timeoutMs;
  }

  /** The origin URL for `key`, or undefined when no rule matches. */
  urlFor(key: string): string | undefined {
    const rule = this.#ruleFor(key);
    return rule && rule.url + key.slice(rule.prefix.length);
  }

  #ruleFor(key: string): OriginRule | undefined {
    return this.#rules.find((r) => key.startsWith(r.prefix));
  }

  /** Gets `key` from its origin into the store (joining a fetch already under way); its manifest. */
  async fetch(key: string): Promise<Manifest> {
    const local = this.#store.lookup(key);
    if (local) return local;
    return this.#join(key).done;
  }

  /**
   * Starts (or joins) the fetch of `key`: its manifest once stored, or, sooner, its progress once the
   * origin has answered with a length (peers can then follow it chunk by chunk). Rejects like fetch.
   */
  async begin(key: string): Promise<{ manifest: Manifest } | { progress: Progress }> {
    const local = this.#store.lookup(key);
    if (local) return { manifest: local };
    const { done, started } = this.#join(key);
    const progress = await Promise.race([started, done.then(() => undefined)]);
    return progress ? { progress } : { manifest: await done };
  }

  #join(key: string) {
    let entry = this.#inflight.get(key);
    if (!entry) {
      // A fetch goes on when the reader that started it leaves (the object is kept): bounded here.
      if (this.#inflight.size >= this.#maxFetches)
        throw new TooManyFetchesError(
          `${this.#maxFetches} origin fetches are under way here; ${key} is not fetched now`,
        );
      let onStart!: (progress: Progress | undefined) => void;
      const started = new Promise<Progress | undefined>((resolve) => (onStart = resolve));
      const done = this.#fetch(key, onStart).finally(() => {
        onStart(undefined);
        this.#inflight.delete(key);
      });
      entry = { done, started };
      this.#inflight.set(key, entry);
    }
    return entry;
  }

  /**
   * One origin fetch, as a span `edgemesh.fetch_origin` in the trace of the read that started it
   * (on an owner: in the reader's trace, through FetchOrigin's metadata). Its URL is recorded without
   * credentials or query string, which may carry tokens.
   */
  #fetch(key: string, onStart: (progress: Progress | undefined) => void): Promise<Manifest> {
    const url = this.urlFor(key);
    const safe = url ? redactUrl(url) : undefined;
    return tracer().startActiveSpan(
      'edgemesh.fetch_origin',
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'edgemesh.key': key,
          ...(safe ? { [ATTR_URL_FULL]: safe.href, [ATTR_SERVER_ADDRESS]: safe.hostname } : {}),
        },
      },
      async (span) => {
        const started = performance.now();
        let outcome: 'ok' | 'not_found' | 'error' = 'error';
        try {
          const manifest = await this.#fetchFrom(url, safe?.href, key, onStart, (status) =>
            span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status),
          );
          span.setAttribute('edgemesh.bytes', manifest.size);
          outcome = 'ok';
          return manifest;
        } catch (error) {
          if (error instanceof ObjectNotFoundError) outcome = 'not_found';
          else {
            span.recordException(error as Error);
            span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
          }
          throw error;
        } finally {
          span.end();
          if (url) this.#onFetch?.(outcome, (performance.now() - started) / 1000);
        }
      },
    );
  }

  /** `shown`: the URL as errors and logs may give it (redactUrl: no credentials, no tokens). */
  async #fetchFrom(
    url: string | undefined,
    shown: string | undefined,
    key: string,
    onStart: (progress: Progress | undefined) => void,
    onStatus: (status: number) => void,
  ): Promise<Manifest> {
    if (!url || !shown) throw new ObjectNotFoundError(key);
    this.#counters.originFetches++;
    // timeoutMs bounds the wait for an answer, then each wait for the body's next bytes: a large
    // object that keeps coming is never cut off, a stalled one is.
    const abort = new AbortController();
    const stalled = setTimeout(
      () => abort.abort(new Error(`no bytes from the origin in ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
    try {
      const headersDir = this.#ruleFor(key)?.headersDir;
      const headers = headersDir
        ? await readOriginHeaders(headersDir).catch((error: unknown) => {
            throw new OriginError(`origin ${shown}: ${(error as Error).message}`, { cause: error });
          })
        : undefined;
      return await this.#download(
        { url, shown, headers },
        key,
        abort.signal,
        () => stalled.refresh(),
        onStart,
        onStatus,
      );
    } catch (error) {
      if (!abort.signal.aborted) throw error;
      const reason = (abort.signal.reason as Error).message;
      throw new OriginError(`origin ${shown}: ${reason}`, { cause: error });
    } finally {
      clearTimeout(stalled);
      // Whatever happened (the store refused the object before reading it, say), the request and
      // its connection end here; after a complete body this changes nothing.
      abort.abort();
    }
  }

  /** `headers`: the rule's own (secrets: never logged, never in a span). */
  async #download(
    { url, shown, headers }: { url: string; shown: string; headers: Record<string, string> | undefined },
    key: string,
    signal: AbortSignal,
    alive: () => void,
    onStart: (progress: Progress | undefined) => void,
    onStatus: (status: number) => void,
  ): Promise<Manifest> {
    let res: Response;
    try {
      res = headers
        ? await fetchKeepingHeadersHome(url, headers, signal)
        : await fetch(url, { signal, redirect: 'follow', headers: AS_STORED });
    } catch (error) {
      throw new OriginError(`origin ${shown} unreachable: ${(error as Error).message}`, { cause: error });
    }
    onStatus(res.status);
    if (res.status === 404 || !res.ok || !res.body) {
      // An unread body holds its connection: let it go, so the pool can reuse or close it.
      await res.body?.cancel().catch(() => undefined);
      if (res.status === 404) throw new ObjectNotFoundError(key);
      throw new OriginError(`origin ${shown} answered ${res.status}`);
    }
    // Identity was asked for; an origin may encode anyway (an S3 object stored with a
    // Content-Encoding). fetch decodes gzip, deflate and br, and the decoded bytes are what is kept:
    // they are the object a client of the origin ends with, and this cache serves no
    // Content-Encoding. A body in a coding fetch passes on undecoded is refused, never kept encoded.
    const codings = contentCodings(res.headers.get('content-encoding'));
    if (codings.some((coding) => !DECODED_CODINGS.has(coding))) {
      await res.body.cancel().catch(() => undefined);
      throw new OriginError(
        `origin ${shown} answered in Content-Encoding ${codings.join(', ')}, which is not decoded here`,
      );
    }
    alive();
    // Content-Length counts the encoded bytes: an encoded body's size is known only at its end.
    const length = codings.length === 0 ? res.headers.get('content-length') : null;
    const size = length === null ? undefined : Number(length);
    const type = res.headers.get('content-type') ?? undefined;
    const known = size !== undefined && Number.isSafeInteger(size) && size > 0 ? size : undefined;
    const contentType = type && isMediaType(type) ? type : undefined;
    const progress =
      known === undefined
        ? undefined
        : this.#swarm?.begin({
            key,
            size: known,
            chunkSize: chunkSizeFor(known),
            ...(contentType ? { contentType } : {}),
          });
    if (progress) progress.seeder = new Seeder(progress);
    onStart(progress);
    let manifest: Manifest;
    try {
      const watchdog = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          alive();
          done(null, chunk);
        },
      });
      // pipeline, not pipe: an error of the source (the abort above) must reach the store's reader.
      pipeline(Readable.fromWeb(res.body), watchdog, () => undefined);
      manifest = await this.#store.put(key, watchdog, {
        ...(known === undefined ? {} : { size: known }),
        ...(contentType ? { contentType } : {}),
        ...(progress
          ? {
              onChunk: (index: number, digest: string) => {
                progress.addDigests(index, [digest]);
                progress.hold(index);
              },
            }
          : {}),
      });
    } catch (error) {
      const failure = bodyFailure(error, shown);
      progress?.fail(failure);
      throw failure;
    }
    progress?.complete(manifest);
    this.#counters.bytesFromOrigin += manifest.size;
    this.#logger.info({ key, url: shown, bytes: manifest.size }, 'fetched from origin');
    return manifest;
  }
}

/**
 * A failure while the origin's body was stored, as the origin's (OriginError, 502) unless the store
 * itself refused it: a body cut off midway (fetch's `TypeError: terminated`), a coding that does not
 * decode, a body at odds with its Content-Length (IncompleteBodyError: the origin's fault here, not
 * a client's). A store error (no room, too large, a newer version held) stays what it is.
 */
function bodyFailure(error: unknown, shown: string): Error {
  if (error instanceof StoreError && !(error instanceof IncompleteBodyError)) return error;
  const { message, cause } = error instanceof Error ? error : new Error(String(error));
  // fetch's own says only `terminated`; its cause says why (`other side closed`).
  const detail = cause instanceof Error ? `${message} (${cause.message})` : message;
  return new OriginError(`origin ${shown}: the body failed: ${detail}`, { cause: error });
}

/**
 * What every origin request asks for: the object's bytes as stored, not compressed for the wire.
 * (Node's fetch asks for gzip and deflate by default and decodes them; the Content-Length of such an
 * answer is the encoded length.)
 */
const AS_STORED = { 'accept-encoding': 'identity' } as const;

/** The content codings Node's fetch decodes; it passes a body in any other on as it came. */
const DECODED_CODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br']);

/** The codings a Content-Encoding header names, lower case, `identity` left out. */
function contentCodings(header: string | null): string[] {
  return (header ?? '')
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== '' && coding !== 'identity');
}

/** `url` without user info, query or fragment: what may go into a span, a log line or an error. */
function redactUrl(url: string): URL {
  const safe = new URL(url);
  safe.username = '';
  safe.password = '';
  safe.search = '';
  safe.hash = '';
  return safe;
}

/**
 * An object's shape from a peer (untrusted): checked like a manifest's fields, within the same
 * bounds (MAX_OBJECT_BYTES: a download sizes its tables by the chunk count).
 */
export function parseHead(value: unknown, key: string): ObjectHead {
  const v = (value ?? {}) as Record<string, unknown>;
  const { size, chunkSize, contentType } = v;
  if (v.key !== key) throw new Error('the shape is of another key');
  if (!Number.isSafeInteger(size) || (size as number) <= 0 || (size as number) > MAX_OBJECT_BYTES)
    throw new Error('bad size in the shape');
  if (chunkSize !== chunkSizeFor(size as number) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE)
    throw new Error('bad chunk size in the shape');
  return {
    key,
    size: size as number,
    chunkSize: chunkSize,
    ...(typeof contentType === 'string' && isMediaType(contentType) ? { contentType } : {}),
  };
}

export type OriginOutcome = { source: 'origin'; manifest: Manifest } | { source: 'peer'; located: Located };

export interface OriginRouteDeps {
  origin: OriginFetcher;
  /** `key`'s owners in placement order, this node marked 'self'. */
  ownerOrder: (key: string) => ('self' | PeerTransport)[];
  logger: Logger;
  timeoutMs: number;
  /** Checks that a node of the mesh vouches for an owner's manifest (PeerFetcherOptions.verify). */
  verify?: (manifest: Manifest) => void;
}

/**
 * Gets `key`, which no node holds, by its origin rule, with one origin fetch for the whole mesh: the
 * first owner that answers fetches it (this node, when it comes first) and everyone else then gets it
 * from that owner. Only when no owner can be reached does this node go to the origin itself.
 * Undefined when no rule matches or the origin has no such object.
 */
export async function getViaOrigin(key: string, deps: OriginRouteDeps): Promise<OriginOutcome | undefined> {
  if (!deps.origin.urlFor(key)) return undefined;
  let busy: string | undefined;
  for (const owner of deps.ownerOrder(key)) {
    if (owner === 'self') return { source: 'origin', manifest: await deps.origin.fetch(key) };
    try {
      const answer = await owner.fetchOrigin(key, AbortSignal.timeout(deps.timeoutMs));
      if (!answer) return undefined;
      if (answer.inProgress) {
        const head = parseHead(answer.manifest, key);
        return { source: 'peer', located: { head, holders: [], authority: owner } };
      }
      const manifest = parseManifest(answer.manifest, isKey);
      if (manifest.key !== key) throw new Error(`answered for another key ${manifest.key}`);
      deps.verify?.(manifest);
      return { source: 'peer', located: { head: headOf(manifest), manifest, holders: [owner] } };
    } catch (error) {
      if (error instanceof PeerBusyError) {
        busy ??= owner.id; // load, not a fault: no warning per request
        continue;
      }
      deps.logger.warn(
        { owner: owner.id, key, err: (error as Error).message },
        'owner could not fetch from origin; trying the next',
      );
    }
  }
  // An owner that is there but busy with origin fetches is no reason to fetch here too: the mesh's
  // fetches would multiply exactly when the owners are loaded. The reader is told to come back.
  if (busy !== undefined)
    throw new TooManyFetchesError(
      `owner ${busy} runs as many origin fetches as it takes; ${key} is not fetched now`,
    );
  return { source: 'origin', manifest: await deps.origin.fetch(key) };
}

/** Redirects an origin fetch follows, as fetch's own 'follow' does. */
const MAX_REDIRECTS = 20;

/**
 * A fetch with an origin rule's headers (secrets): redirects are followed by hand, and the headers go
 * only to the origin they were given for (same scheme, host and port). A redirect elsewhere (a
 * storage CDN, an open redirect, a downgrade to http) is followed without them, as browsers drop
 * Authorization; fetch's own 'follow' drops Authorization alone and sends every other header on.
 */
async function fetchKeepingHeadersHome(
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<Response> {
  const home = new URL(url).origin;
  // The rule's headers, but Accept-Encoding is always AS_STORED's.
  const withSecrets = new Headers(headers);
  for (const [name, value] of Object.entries(AS_STORED)) withSecrets.set(name, value);
  let at = url;
  for (let hop = 0; ; hop++) {
    const res = await fetch(at, {
      signal,
      redirect: 'manual',
      headers: new URL(at).origin === home ? withSecrets : AS_STORED,
    });
    const location = res.headers.get('location');
    if (![301, 302, 303, 307, 308].includes(res.status) || location === null) return res;
    await res.body?.cancel().catch(() => undefined);
    if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
    at = new URL(location, at).href;
  }
}
