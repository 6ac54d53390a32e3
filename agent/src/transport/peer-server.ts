import { CallerBusyError, CallerSlots } from './caller-slots.ts';
import {
  formatRange,
  negotiate,
  parseRange,
  PROTOCOL,
  PROTOCOL_METADATA,
  type ProtocolRange,
  UNVERSIONED,
} from '@edgemesh/contracts';
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { isDigest } from '../cache/chunking.ts';
import { IntegrityError, ObjectNotFoundError } from '../cache/errors.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import { type Manifest, type NodeSignature, parseManifest } from '../cache/manifest.ts';
import { isKey, keyProblem } from '../keys.ts';
import { type Coordinate, type Holder, MAX_EXCHANGE_BYTES, type ObjectHead, TOPIC } from '../domain.ts';
import {
  CHUNK_MESSAGE_BYTES,
  fromWire,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_DIGESTS_PER_FETCH,
  MAX_RELEASED_KEYS,
  PIECE_SIZE,
  peerService,
  pingToWire,
  toWire,
  signatureFromWire,
  signatureToWire,
  type WireManifest,
  type WireSignature,
  type WireWatchEvent,
} from './peer-service.ts';
import type { UploadLimiter } from './upload-limiter.ts';
import { HEARTBEAT_MS, type PingResult } from './peer-transport.ts';
import type { ChunkPiece } from './piece-codec.ts';
import {
  context,
  extractFrom,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  trace,
  tracer,
} from '../telemetry/tracing.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import { listenPeer, type PeerListener } from './bulk-server.ts';
import type { BulkRequest } from './bulk-wire.ts';
import { rpcSpan, TRACED_RPCS } from './rpc-spans.ts';
import { peerHost, versionGuarded } from './version-guard.ts';
import type { PeerCertificate } from 'node:tls';
import { every } from '../time/every.ts';

/** The authenticated node of each call in progress (set before any handler runs). */
const callers = new WeakMap<object, string>();

/**
 * Refuses a request whose claimed node id is not its caller's; undefined when the claim holds (or
 * when there is no authenticated caller: mTLS off).
 */
function claimProblem(
  opts: PeerServerOptions,
  call: object,
  claimed: string | undefined,
  what: string,
): Error | undefined {
  const caller = callers.get(call);
  if (caller === undefined || claimed === caller) return undefined;
  Counters.bump(opts.counters.peersRefused, 'claim');
  return grpcError(
    status.PERMISSION_DENIED,
    `${what} ${JSON.stringify(claimed ?? '')} is not the caller (${caller})`,
  );
}

export interface PeerServerOptions {
  store: ObjectStore;
  counters: Counters;
  node: { id: string; zone: string; region: string };
  logger: Logger;
  flowControlWindow: number;
  /**
   * The protocol versions this node speaks (default: this build's, PROTOCOL): a call whose range
   * (metadata `edgemesh-protocol`; none: 1.0) has none of them in common fails FAILED_PRECONDITION,
   * counted as a refused peer (`protocol`). Ping answers carry it.
   */
  protocol?: ProtocolRange;
  /**
   * The node id a call comes from, from its TLS client certificate; throws when the certificate
   * does not make the caller a node of this mesh (the call fails UNAUTHENTICATED). Every node id a
   * request claims (sender, holder, requester) must be this one. Without it (mTLS off) callers are
   * anonymous and their claims are taken as made.
   */
  authenticate?: (call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }) => string;
  /** The reply to a caller that fails `authenticate`. */
  refuse?: (error: unknown) => Error;
  /** This node's current network coordinate, sent with every ping answer. */
  coordinate?: () => Coordinate | undefined;
  /** This node's incarnation, sent with every ping answer (so a restart shows without an announcement). */
  incarnation?: () => number | undefined;
  /**
   * The incarnation this node knows of member `nodeId`, sent to it in the answer to its ping (so a
   * member that forgot its last life, a new disk with the clock behind, learns it).
   */
  incarnationOf?: (nodeId: string) => number | undefined;
  /**
   * Pings `target` for a caller (indirect probe). Resolves to undefined when `target` is not a known
   * member (the call fails FAILED_PRECONDITION); rejects when it does not answer (UNAVAILABLE).
   * Without it, Probe is UNIMPLEMENTED.
   */
  probe?: (target: string) => Promise<PingResult | undefined>;
  /**
   * The holder index of the keys this node owns: answers GetManifest for objects it does not hold
   * itself, and takes Hold reports (`record` decides whom to believe).
   */
  /**
   * Copies `key` (version `root`) from `source` into this node's store. Resolves 'stored' once it is
   * there, 'unknown-source' when `source` is not a confirmed member; rejects when the copy fails.
   * A call its caller cancels does not stop the copy: this node owns (or stands in for) the key and
   * should hold it, and the caller's next ask joins the download under way. `caller`: the node its
   * certificate names (else its host, without the port), who asked.
   */
  replicate?: (
    key: string,
    root: string,
    source: Holder,
    caller: string,
  ) => Promise<'stored' | 'unknown-source' | { purgedAtMs: number; signature?: NodeSignature | undefined }>;
  /** When `key` was purged, if it was. */
  purgedAt?: (key: string) => number | undefined;
  /** The signature of `key`'s purge, shown with "purged" answers. */
  purgeSignature?: (key: string) => NodeSignature | undefined;
  /** Takes a direct-exchange message for local consumers. */
  deliver?: (message: { topic: string; from: string; body: Buffer; contentType: string }) => void;
  /**
   * Applies a purge announced by another node; whether this node had a copy. `caller`: the calling
   * node's id (with mTLS; undefined without).
   */
  purge?: (
    key: string,
    purgedAtMs: number,
    signature: NodeSignature | undefined,
    caller: string | undefined,
  ) => Promise<boolean>;
  /**
   * Starts getting `key` from its origin into this node's store (once for all askers): its manifest
   * when stored, or its shape once the fetch is under way (callers then Watch); undefined when no
   * origin has it.
   */
  fetchOrigin?: (key: string) => Promise<{ manifest: Manifest } | { head: ObjectHead } | undefined>;
  /**
   * Answers a Watch of `key` by `from` (the caller, when it names itself; its claim is checked here)
   * on `stream`; false when this node neither holds nor is getting the key (the call fails
   * NOT_FOUND). What to tell whom is the swarm's business (fetch/watch.ts); without it, every Watch
   * is NOT_FOUND.
   */
  watch?: (key: string, from: Holder | undefined, stream: WatchStream) => boolean;
  /** A verified chunk of an object this node is still getting, not yet in the store (served early). */
  earlyChunk?: (digest: string) => Buffer | undefined;
  /** Checks that a node of the mesh vouches for a manifest a peer sends (Hold); throws when none does. */
  verifyManifest?: (manifest: Manifest) => void;
  /** Caps and shares this node's upload; `groupOf` puts a requesting node id in its zone. */
  upload?: { limiter: UploadLimiter; groupOf: (nodeId: string) => string };
  index?: {
    lookup(key: string): { manifest: Manifest; holders: Holder[] } | undefined;
    record(manifest: Manifest, holder: Holder): void;
    release(key: string, nodeId: string): void;
  };
  /** Default: MAX_CONNECTION_IDLE_MS (tests shorten it). */
  connectionIdleMs?: number;
}

/** One Watch event, before it goes on the wire (see WatchEvent in peer.proto). */
export interface WatchEvent {
  /** First event only: the object's shape. */
  head?: ObjectHead;
  /** Digests (hex) of chunks firstDigest, firstDigest + 1, ... that became known. */
  firstDigest?: number;
  digests?: readonly string[];
  /** Chunks (by index) this node now holds, verified. */
  have?: readonly number[];
  /** Other members getting or holding the object. */
  peers?: readonly Holder[];
  /** The complete manifest: the last event. */
  manifest?: Manifest;
}

/** A Watch call as its handler (PeerServerOptions.watch) sees it. */
export interface WatchStream {
  write(event: WatchEvent): void;
  /** Ends the stream (after the complete manifest). */
  end(): void;
  /** Ends the call UNAVAILABLE: getting the key failed here. */
  fail(error: Error): void;
  /**
   * Ends the call NOT_FOUND: getting the key ended finding that no one has it (every holder had let
   * it go, or the origin answered 404), so the watcher takes it as a miss, not a fault.
   */
  gone(error: Error): void;
  /** Calls `listener` when the caller goes (cancelled or closed); it may be called more than once. */
  onClose(listener: () => void): void;
}

/**
 * gRPC channel options shared by both ends of the data plane. Messages are control messages
 * (MAX_CONTROL_MESSAGE_BYTES) both ways, but for chunk pieces: the server sends them, and the client
 * connection that takes FetchChunks answers (peer-client.ts) receives them. grpc-js has one limit per
 * server or channel, not per method: the server receives no piece, so its limit is the control one.
 */
export function channelOptions(flowControlWindow: number) {
  return {
    'grpc-node.flow_control_window': flowControlWindow,
    'grpc.max_receive_message_length': MAX_CONTROL_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_CONTROL_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': 30_000,
  };
}

/**
 * A connection's life on the serving side: then the server asks the client to go (GOAWAY), the next
 * calls open a new connection, with a new handshake (the certificates of now, checked against the
 * trust bundle of now), and the calls in flight finish within the grace (a large transfer is not cut).
 */
export const MAX_CONNECTION_AGE_MS = 30 * 60_000;
const MAX_CONNECTION_AGE_GRACE_MS = 6 * 3600_000;
/**
 * A gRPC connection without a call for this long is closed (GOAWAY; the client's next call opens a
 * new one), so one nobody uses holds no descriptor and no TLS state until it ages out. A member with
 * something to say (pings, Holds, Watches) says it more often than this in all but the largest meshes.
 */
export const MAX_CONNECTION_IDLE_MS = 10 * 60_000;

/**
 * Chunk requests of one zone that may wait for this node's upload; more are refused as busy, so the
 * swarm spreads them over other holders (and one zone's crowd never fills the line for others).
 */
const MAX_WAITING_PER_ZONE = 2;

const grpcError = (code: status, details: string) => Object.assign(new Error(details), { code, details });

/** Replicate calls (copies, each a download) one caller may have under way here, and waiting. */
export const REPLICATE_PER_CALLER = 16;
export const REPLICATE_QUEUE_PER_CALLER = 256;

/** Serves this agent's store to peers: manifests, chunk streams with backpressure, pings. */
export function createPeerServer(opts: PeerServerOptions): Server {
  const { store, node, logger } = opts;
  const copies = new CallerSlots(REPLICATE_PER_CALLER, REPLICATE_QUEUE_PER_CALLER);
  const server = new Server({
    ...channelOptions(opts.flowControlWindow),
    'grpc.max_send_message_length': CHUNK_MESSAGE_BYTES,
    'grpc.max_connection_age_ms': MAX_CONNECTION_AGE_MS,
    'grpc.max_connection_age_grace_ms': MAX_CONNECTION_AGE_GRACE_MS,
    'grpc.max_connection_idle_ms': opts.connectionIdleMs ?? MAX_CONNECTION_IDLE_MS,
  });
  server.addService(
    peerService,
    guarded(opts, {
      getManifest(call: ServerUnaryCall<{ key: string }, unknown>, callback: sendUnaryData<unknown>) {
        const problem = keyProblem(call.request.key);
        if (problem) return callback(grpcError(status.INVALID_ARGUMENT, problem));
        const local = store.lookup(call.request.key);
        const known = opts.index?.lookup(call.request.key);
        const manifest = local ?? known?.manifest;
        const purgedAtMs = opts.purgedAt?.(call.request.key);
        if (purgedAtMs !== undefined && (!manifest || manifest.createdAtMs <= purgedAtMs)) {
          const signature = opts.purgeSignature?.(call.request.key);
          return callback(null, {
            holds: false,
            holders: [],
            purgedAtMs,
            ...(signature ? { purgeSignature: signatureToWire(signature) } : {}),
          });
        }
        if (!manifest) return callback(grpcError(status.NOT_FOUND, `no object ${call.request.key}`));
        const holders = known && known.manifest.root === manifest.root ? known.holders : [];
        callback(null, { manifest: toWire(manifest), holds: local !== undefined, holders });
      },
      deliver(
        call: ServerUnaryCall<
          { topic: string; fromNode: string; body: Buffer; contentType: string },
          unknown
        >,
        callback: sendUnaryData<unknown>,
      ) {
        const { topic, fromNode, body, contentType } = call.request;
        if (!opts.deliver) return callback(grpcError(status.UNIMPLEMENTED, 'no exchange here'));
        if (!TOPIC.test(topic))
          return callback(grpcError(status.INVALID_ARGUMENT, 'topics are 1-128 of [A-Za-z0-9._-]'));
        if (body.length > MAX_EXCHANGE_BYTES)
          return callback(grpcError(status.RESOURCE_EXHAUSTED, 'message too large'));
        const forged = claimProblem(opts, call, fromNode, 'sender');
        if (forged) return callback(forged);
        opts.deliver({
          topic,
          from: fromNode,
          body: Buffer.from(body),
          contentType: contentType || 'application/octet-stream',
        });
        callback(null, {});
      },
      purge(
        call: ServerUnaryCall<{ key: string; purgedAtMs: number; signature?: WireSignature | null }, unknown>,
        callback: sendUnaryData<unknown>,
      ) {
        const { key } = call.request;
        const purgedAtMs = Number(call.request.purgedAtMs);
        const problem = keyProblem(key);
        if (problem || !(purgedAtMs > 0)) {
          return callback(grpcError(status.INVALID_ARGUMENT, problem ?? 'purged_at_ms is required'));
        }
        if (!opts.purge) return callback(grpcError(status.UNIMPLEMENTED, 'this node does not take purges'));
        opts.purge(key, purgedAtMs, signatureFromWire(call.request.signature), callers.get(call)).then(
          (existed) => callback(null, { existed }),
          (error: Error) =>
            callback(
              grpcError(
                error.name === 'FuturePurgeError'
                  ? status.INVALID_ARGUMENT
                  : error.name === 'UnsignedPurgeError'
                    ? status.PERMISSION_DENIED
                    : status.INTERNAL,
                error.message,
              ),
            ),
        );
      },
      fetchOrigin(call: ServerUnaryCall<{ key: string }, unknown>, callback: sendUnaryData<unknown>) {
        const problem = keyProblem(call.request.key);
        if (problem) return callback(grpcError(status.INVALID_ARGUMENT, problem));
        if (!opts.fetchOrigin) return callback(grpcError(status.NOT_FOUND, 'no origin rules here'));
        opts.fetchOrigin(call.request.key).then(
          (answer) => {
            if (!answer) return callback(grpcError(status.NOT_FOUND, `no origin has ${call.request.key}`));
            if ('manifest' in answer)
              return callback(null, { manifest: toWire(answer.manifest), holds: true, holders: [] });
            callback(null, {
              manifest: headToWire(answer.head),
              holds: false,
              holders: [],
              inProgress: true,
            });
          },
          (error: Error) =>
            callback(
              grpcError(
                error.name === 'TooManyFetchesError' ? status.RESOURCE_EXHAUSTED : status.UNAVAILABLE,
                `origin fetch failed: ${error.message}`,
              ),
            ),
        );
      },
      replicate(
        call: ServerUnaryCall<{ key: string; source?: Holder; root: Buffer }, unknown>,
        callback: sendUnaryData<unknown>,
      ) {
        const { key, source } = call.request;
        const root = Buffer.from(call.request.root ?? []).toString('hex');
        const problem = keyProblem(key);
        if (problem || !source || !isDigest(root)) {
          return callback(
            grpcError(status.INVALID_ARGUMENT, problem ?? 'source and a 32-byte root are required'),
          );
        }
        const replicate = opts.replicate;
        if (!replicate) return callback(grpcError(status.UNIMPLEMENTED, 'this node keeps no replicas'));
        // Each copy is a download: a caller (by its certificate's node, else its host: mTLS off, a
        // lab's setting) has at most REPLICATE_PER_CALLER under way and REPLICATE_QUEUE_PER_CALLER
        // waiting, and its stand-ins share the store as one member's.
        const cancelled = new AbortController();
        call.once('cancelled', () => cancelled.abort());
        const caller = callers.get(call) ?? peerHost(call);
        copies
          .run(
            caller,
            () => replicate(key, root, { nodeId: source.nodeId, grpc: source.grpc }, caller),
            cancelled.signal,
          )
          .then(
            (outcome) =>
              outcome === undefined
                ? callback(grpcError(status.CANCELLED, 'cancelled while it waited'))
                : outcome === 'unknown-source'
                  ? callback(
                      grpcError(
                        status.FAILED_PRECONDITION,
                        `${source.nodeId} is not a confirmed member here`,
                      ),
                    )
                  : callback(
                      null,
                      outcome === 'stored'
                        ? {}
                        : {
                            purgedAtMs: outcome.purgedAtMs,
                            ...(outcome.signature
                              ? { purgeSignature: signatureToWire(outcome.signature) }
                              : {}),
                          },
                    ),
            (error: Error) =>
              callback(
                error instanceof CallerBusyError
                  ? grpcError(status.RESOURCE_EXHAUSTED, error.message)
                  : grpcError(status.UNAVAILABLE, `could not copy ${key}: ${error.message}`),
              ),
          );
      },
      hold(
        call: ServerUnaryCall<{ manifest?: WireManifest; holder?: Holder }, unknown>,
        callback: sendUnaryData<unknown>,
      ) {
        const { manifest, holder } = call.request;
        if (!manifest || !holder)
          return callback(grpcError(status.INVALID_ARGUMENT, 'manifest and holder are required'));
        const forged = claimProblem(opts, call, holder.nodeId, 'holder');
        if (forged) return callback(forged);
        try {
          const parsed = parseManifest(fromWire(manifest), isKey);
          opts.verifyManifest?.(parsed);
          opts.index?.record(parsed, {
            nodeId: holder.nodeId,
            grpc: holder.grpc,
          });
        } catch (error) {
          return callback(grpcError(status.INVALID_ARGUMENT, (error as Error).message));
        }
        callback(null, {});
      },
      release(
        call: ServerUnaryCall<{ holder?: Holder | null; keys: string[] }, unknown>,
        callback: sendUnaryData<unknown>,
      ) {
        const { holder, keys } = call.request;
        if (!holder) return callback(grpcError(status.INVALID_ARGUMENT, 'holder is required'));
        const forged = claimProblem(opts, call, holder.nodeId, 'holder');
        if (forged) return callback(forged);
        if (keys.length > MAX_RELEASED_KEYS)
          return callback(
            grpcError(status.INVALID_ARGUMENT, `${keys.length} keys: at most ${MAX_RELEASED_KEYS} per call`),
          );
        const problem = keys.map(keyProblem).find((p) => p !== undefined);
        if (problem !== undefined) return callback(grpcError(status.INVALID_ARGUMENT, problem));
        for (const key of keys) opts.index?.release(key, holder.nodeId);
        callback(null, {});
      },
      watch(call: ServerWritableStream<{ key: string; from?: Holder | null }, WireWatchEvent>) {
        try {
          watchObject(opts, call);
        } catch (error) {
          call.emit('error', error);
        }
      },
      fetchChunks(call: ServerWritableStream<{ digests: Buffer[]; fromNode: string }, ChunkPiece>) {
        streamChunks(opts, call).catch((error) => {
          logger.debug({ err: error }, 'FetchChunks ended with an error');
          // grpc-js sends a server stream's error status on an 'error' event (destroy() sends none).
          call.emit('error', 'code' in error ? error : grpcError(status.INTERNAL, 'internal error'));
        });
      },
      ping(
        call: ServerUnaryCall<{ sentAtMs: number; fromNode?: string }, unknown>,
        callback: sendUnaryData<unknown>,
      ) {
        const caller = callers.get(call) ?? call.request.fromNode;
        callback(null, {
          ...pingToWire(node, call.request.sentAtMs, opts.coordinate?.(), opts.incarnation?.()),
          protocol: formatRange(opts.protocol ?? PROTOCOL),
          yourIncarnation: (caller && opts.incarnationOf?.(caller)) || 0,
        });
      },
      probe(call: ServerUnaryCall<{ target: string }, unknown>, callback: sendUnaryData<unknown>) {
        if (!opts.probe)
          return callback(grpcError(status.UNIMPLEMENTED, 'this node does not probe for others'));
        opts.probe(call.request.target).then(
          (result) => {
            if (!result)
              return callback(
                grpcError(status.FAILED_PRECONDITION, `${call.request.target} is not a member here`),
              );
            callback(null, {
              ...pingToWire(
                { id: result.nodeId, zone: result.zone, region: result.region },
                0,
                result.coordinate,
                result.incarnation,
              ),
              protocol: result.protocol ? formatRange(result.protocol) : '',
            });
          },
          (error: Error) =>
            callback(
              grpcError(status.UNAVAILABLE, `${call.request.target} did not answer: ${error.message}`),
            ),
        );
      },
    }),
  );
  return server;
}

/**
 * Wraps handlers so that every call is authenticated first (`opts.authenticate`: its caller's node
 * id is then `callers.get(call)`), and the traced ones run in a server span whose parent is the
 * caller's trace context (from the gRPC metadata): a fetch is one trace across every node it touches.
 */
function guarded<T extends Record<string, (...args: never[]) => void>>(
  opts: PeerServerOptions,
  handlers: T,
): T {
  const authenticated: Record<string, unknown> = {};
  const checked = versionGuarded(
    {
      ours: opts.protocol ?? PROTOCOL,
      logger: opts.logger,
      refused: () => Counters.bump(opts.counters.peersRefused, 'protocol'),
      callerOf: (call) => callers.get(call),
    },
    traced(handlers),
  );
  for (const [name, handler] of Object.entries(checked)) {
    const run = handler as (call: never, callback?: sendUnaryData<unknown>) => void;
    authenticated[name] = !opts.authenticate
      ? handler
      : (
          call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
          callback?: sendUnaryData<unknown>,
        ) => {
          let caller: string;
          try {
            caller = opts.authenticate!(call);
          } catch (error) {
            const refusal = opts.refuse?.(error) ?? grpcError(status.UNAUTHENTICATED, 'not authenticated');
            opts.logger.debug(
              { method: name, peer: call.getPeer(), err: refusal.message },
              'peer call refused',
            );
            if (callback) return callback(refusal);
            call.emit('error', refusal);
            return;
          }
          callers.set(call, caller);
          run(call as never, callback);
        };
  }
  return authenticated as T;
}

/** Wraps the handlers of TRACED_RPCS in server spans (children of the callers' client spans). */
function traced<T extends Record<string, (...args: never[]) => void>>(handlers: T): T {
  const wrapped: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const method = name[0]!.toUpperCase() + name.slice(1);
    if (!TRACED_RPCS.has(method)) {
      wrapped[name] = handler;
      continue;
    }
    const { name: spanName, attributes } = rpcSpan(method);
    wrapped[name] = (
      call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
      callback?: sendUnaryData<unknown>,
    ) => {
      const parent = extractFrom(call.metadata);
      const span = tracer().startSpan(spanName, { kind: SpanKind.SERVER, attributes }, parent);
      const run = handler as (call: unknown, callback?: sendUnaryData<unknown>) => void;
      context.with(trace.setSpan(parent, span), () => {
        if (callback) {
          run(call, (error, value) => {
            if (error) span.setStatus({ code: 2, message: error.details ?? 'error' });
            span.end();
            callback(error, value);
          });
        } else {
          let ended = false;
          const end = (error?: Error) => {
            if (ended) return;
            ended = true;
            if (error) span.setStatus({ code: 2, message: error.message });
            span.end();
          };
          call.on('finish', () => end());
          call.on('close', () => end());
          call.on('error', (error: Error) => end(error));
          run(call);
        }
      });
    };
  }
  return wrapped as T;
}

function headToWire(head: ObjectHead): WireManifest {
  return {
    key: head.key,
    size: head.size,
    chunkSize: head.chunkSize,
    chunks: [],
    root: Buffer.alloc(0),
    createdAtMs: 0,
    expiresAtMs: 0,
    contentType: head.contentType ?? '',
  };
}

/**
 * Watch: checks the request and the caller's claim, then hands the call to `opts.watch` as a
 * WatchStream. Throws a gRPC error for a bad request or a key this node neither holds nor is getting.
 */
function watchObject(
  opts: PeerServerOptions,
  call: ServerWritableStream<{ key: string; from?: Holder | null }, WireWatchEvent>,
): void {
  const { key } = call.request;
  const from = call.request.from?.nodeId ? call.request.from : undefined;
  const problem = keyProblem(key);
  if (problem) throw grpcError(status.INVALID_ARGUMENT, problem);
  const forged = from && claimProblem(opts, call, from.nodeId, 'watcher');
  if (forged) throw forged;
  const stream: WatchStream = {
    write: (event) => call.write(watchEventToWire(event)),
    end: () => call.end(),
    fail: (error) =>
      call.emit('error', grpcError(status.UNAVAILABLE, `getting ${key} failed here: ${error.message}`)),
    gone: (error) => call.emit('error', grpcError(status.NOT_FOUND, `no one has ${key}: ${error.message}`)),
    onClose: (listener) => {
      call.on('cancelled', listener);
      call.on('close', listener);
    },
  };
  const watching = opts.watch?.(key, from && { nodeId: from.nodeId, grpc: from.grpc }, stream) ?? false;
  if (!watching) throw grpcError(status.NOT_FOUND, `not getting ${key}`);
}

function watchEventToWire(event: WatchEvent): WireWatchEvent {
  return {
    ...(event.head ? { head: headToWire(event.head) } : {}),
    ...(event.firstDigest !== undefined ? { firstDigest: event.firstDigest } : {}),
    ...(event.digests ? { digests: event.digests.map((d) => Buffer.from(d, 'hex')) } : {}),
    ...(event.have ? { have: [...event.have] } : {}),
    ...(event.peers ? { peers: [...event.peers] } : {}),
    ...(event.manifest ? { manifest: toWire(event.manifest) } : {}),
  };
}

/** Where a chunk request's answer goes: a gRPC FetchChunks call or a bulk-stream connection. */
export interface ChunkSink {
  /** Whether the caller went away (nothing more is sent). */
  readonly cancelled: boolean;
  /** Tells the caller this node is alive while chunk `index` waits for the upload budget. */
  heartbeat(index: number): void;
  /** Sends chunk `index` whole; resolves when the sink takes more (backpressure). */
  send(index: number, data: Buffer): Promise<void>;
  end(): void;
  /**
   * A buffer of at least `size` bytes the next chunk may be read into, or undefined: one of the
   * sink's own, which it takes back once the chunk sent in it is written (send must then be given
   * the bytes read into it, and nothing else may keep them).
   */
  spare?(size: number): Buffer | undefined;
}

/**
 * Answers one chunk request (FetchChunks, or a bulk-stream request) from `caller` (its certificate's
 * node; undefined with mTLS off), claiming to be `fromNode`. Throws a gRPC error for a bad request,
 * a chunk this node lacks or one damaged here.
 */
export async function sendChunks(
  opts: PeerServerOptions,
  caller: string | undefined,
  fromNode: string,
  digests: readonly string[],
  sink: ChunkSink,
): Promise<void> {
  const { store, counters, upload } = opts;
  if (caller !== undefined && fromNode && fromNode !== caller) {
    Counters.bump(counters.peersRefused, 'claim');
    throw grpcError(
      status.PERMISSION_DENIED,
      `requester ${JSON.stringify(fromNode)} is not the caller (${caller})`,
    );
  }
  const group = upload?.groupOf(caller ?? fromNode) ?? '';
  if (digests.length > MAX_DIGESTS_PER_FETCH) {
    throw grpcError(status.INVALID_ARGUMENT, `at most ${MAX_DIGESTS_PER_FETCH} digests per call`);
  }
  if (!digests.every(isDigest)) throw grpcError(status.INVALID_ARGUMENT, 'digests must be 32 bytes');
  for (const [index, digest] of digests.entries()) {
    let data: Buffer;
    try {
      data = opts.earlyChunk?.(digest) ?? (await store.chunkToSend(digest, sink.spare?.bind(sink)));
    } catch (error) {
      if (error instanceof ObjectNotFoundError) throw grpcError(status.NOT_FOUND, `no chunk ${digest}`);
      if (error instanceof IntegrityError)
        throw grpcError(status.DATA_LOSS, `chunk ${digest} is damaged here`);
      throw error;
    }
    if (upload?.limiter.limited) {
      // Heartbeats while this request waits its turn tell the caller the peer is alive, not stalled.
      const heartbeat = every(
        HEARTBEAT_MS,
        () => sink.cancelled || sink.heartbeat(index),
        (error) => opts.logger.debug({ err: error.message }, 'heartbeat not sent'),
      );
      try {
        const turn = upload.limiter.acquire(data.length, group, MAX_WAITING_PER_ZONE);
        if (!turn) throw grpcError(status.RESOURCE_EXHAUSTED, 'upload busy: ask another holder or retry');
        await turn;
      } finally {
        clearInterval(heartbeat);
      }
    }
    if (sink.cancelled) return;
    await sink.send(index, data);
    counters.bytesToPeers += data.length;
  }
  if (!sink.cancelled) sink.end();
}

async function streamChunks(
  opts: PeerServerOptions,
  call: ServerWritableStream<{ digests: Buffer[]; fromNode: string }, ChunkPiece>,
) {
  let cancelled = false;
  call.on('cancelled', () => {
    cancelled = true;
  });
  const sink: ChunkSink = {
    get cancelled() {
      return cancelled;
    },
    heartbeat: (index) => call.write({ index, data: Buffer.alloc(0) }),
    async send(index, data) {
      for (let offset = 0; offset < data.length; offset += PIECE_SIZE) {
        if (cancelled) return;
        if (!call.write({ index, data: data.subarray(offset, offset + PIECE_SIZE) })) await drained(call);
      }
    },
    end: () => call.end(),
  };
  const digests = call.request.digests.map((d) => Buffer.from(d).toString('hex'));
  await sendChunks(opts, callers.get(call), call.request.fromNode ?? '', digests, sink);
}

/** Resolves when `call` can take more writes, or will never need to (cancelled, closed). */
function drained(call: ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      for (const event of ['drain', 'cancelled', 'close', 'error']) call.off(event, done);
      resolve();
    };
    for (const event of ['drain', 'cancelled', 'close', 'error']) call.once(event, done);
  });
}

/**
 * Serves `server` on host:port (0 picks a free port): with mutual TLS as `node`, gRPC and the bulk
 * stream of chunk bodies share the port (bulk-server.ts); without (mTLS off), gRPC alone in the
 * clear, FetchChunks carrying the chunks.
 */
export async function listenPeerServer(
  server: Server,
  opts: PeerServerOptions,
  host: string,
  port: number,
  node: NodeCredentials | undefined,
): Promise<PeerListener> {
  if (!node) {
    const bound = await bindPeerServer(server, host, port, ServerCredentials.createInsecure());
    return { port: bound, close: () => server.forceShutdown() };
  }
  const listener = await listenPeer({
    grpc: server,
    host,
    port,
    node,
    logger: opts.logger,
    maxConnectionAgeMs: MAX_CONNECTION_AGE_MS,
    handshook: () => void opts.counters.peerHandshakes++,
    authenticate: (socket) => {
      const cert = socket.getPeerCertificate();
      const call = { getAuthContext: () => ({ ...(cert.raw ? { sslPeerCertificate: cert } : {}) }) };
      if (!opts.authenticate) throw new Error('no way to authenticate peers');
      try {
        return opts.authenticate(call);
      } catch (error) {
        if (opts.refuse) opts.refuse(error);
        throw error;
      }
    },
    answer: bulkAnswerer(opts),
  });
  return {
    port: listener.port,
    close() {
      listener.close();
      server.forceShutdown();
    },
  };
}

/** Answers a bulk-stream request as FetchChunks would, in the same server span. */
function bulkAnswerer(opts: PeerServerOptions) {
  const { name, attributes } = rpcSpan('FetchChunks');
  const ours = opts.protocol ?? PROTOCOL;
  return async (caller: string, request: BulkRequest, sink: ChunkSink): Promise<void> => {
    // The caller's protocol range, as gRPC calls carry it (none: 1.0; the version guard's rule).
    const advertised = request.meta[PROTOCOL_METADATA];
    const theirs = advertised === undefined ? UNVERSIONED : parseRange(advertised);
    if (!theirs || !negotiate(ours, theirs)) {
      Counters.bump(opts.counters.peersRefused, 'protocol');
      throw grpcError(
        status.FAILED_PRECONDITION,
        `protocol: ${JSON.stringify((advertised ?? '').slice(0, 64))} has no version in common with ${formatRange(ours)}`,
      );
    }
    const parent = propagation.extract(ROOT_CONTEXT, request.meta);
    const span = tracer().startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
    try {
      await context.with(trace.setSpan(parent, span), () =>
        sendChunks(opts, caller, request.from, request.digests, sink),
      );
    } catch (error) {
      span.setStatus({ code: 2, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
    }
  };
}

/** Binds `server` to host:port (0 picks a free port) with `credentials` and returns the port. */
export function bindPeerServer(
  server: Server,
  host: string,
  port: number,
  credentials: ServerCredentials,
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
}
