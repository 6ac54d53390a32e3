import {
  compareVersions,
  formatRange,
  negotiate,
  parseRange,
  PROTOCOL,
  PROTOCOL_METADATA,
  type ProtocolRange,
  type ProtocolVersion,
  UNVERSIONED,
} from '@edgemesh/contracts';
import {
  type ChannelCredentials,
  type Client,
  connectivityState,
  credentials,
  type Metadata,
  makeGenericClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import type { ConnectionOptions } from 'node:tls';
import { BulkChannel, BulkUnsupportedError } from './bulk-client.ts';
import { channelOptions } from './peer-server.ts';
import { clientCall } from './rpc-spans.ts';
import type { Manifest, NodeSignature } from '../cache/manifest.ts';
import type { Holder } from '../domain.ts';
import {
  CHUNK_MESSAGE_BYTES,
  fromWire,
  peerService,
  pingCoordinate,
  toWire,
  type WireManifestAnswer,
  type WirePing,
  signatureFromWire,
  signatureToWire,
  type WireSignature,
  type WireWatchEvent,
} from './peer-service.ts';
import {
  IncompatiblePeerError,
  type ManifestAnswer,
  PeerBusyError,
  PeerError,
  PeerRefusedError,
  type PeerTransport,
  cancelWatch,
  heartbeatCheck,
  type PingResult,
  quietWatch,
  REFUSALS,
  type ReceivedChunk,
  type ReceiveBuffers,
  type WatchUpdate,
} from './peer-transport.ts';
import type { ChunkPiece } from './piece-codec.ts';

const PeerClientConstructor = makeGenericClientConstructor(peerService, 'Peer');

export interface PeerClientOptions {
  id: string;
  address: string;
  flowControlWindow: number;
  /** Deadline for unary calls and for the first piece of a stream. */
  timeoutMs: number;
  /** This node's id, sent with chunk requests (peers share their upload fairly among zones). */
  from?: string;
  /**
   * The connection's credentials (security/grpc-credentials.ts: mutual TLS, checking the node the
   * peer's certificate names); `seen` hears that node at each handshake. Default: plaintext.
   */
  credentials?: (seen: (nodeId: string) => void) => ChannelCredentials;
  /**
   * The protocol versions this node speaks (default: this build's, PROTOCOL), sent with every call.
   * A peer whose range has none in common fails its pings with IncompatiblePeerError, so it never
   * becomes a member or a static peer that is up.
   */
  protocol?: ProtocolRange;
  /** Told each time the peer turns out to speak no version in common (its range as it sent it). */
  onIncompatible?: (error: IncompatiblePeerError) => void;
  /**
   * TLS options for the bulk stream's connections (security/grpc-credentials.ts: mutual TLS, the
   * peer's node checked). With them, chunk bodies travel on the bulk stream (bulk-client.ts), or on
   * FetchChunks with a peer that lacks it; without them (mTLS off), on FetchChunks.
   */
  bulkTls?: () => ConnectionOptions;
}

type Unary = (
  req: unknown,
  md: Metadata,
  opts: { deadline: number },
  cb: (e: ServiceError | null, r: unknown) => void,
) => unknown;

/** The protocol version that added Release (contracts/src/protocol.ts). */
const RELEASE_SINCE: ProtocolVersion = { major: 1, minor: 1 };

/** A peer over gRPC, over mutual TLS when given credentials. */
export class GrpcPeer implements PeerTransport {
  readonly id: string;
  readonly address: string;
  /** The node the peer's certificate named at the last handshake (mTLS only). */
  #authenticatedAs: string | undefined;
  readonly #client: Client & Record<string, unknown>;
  /** Chunk bodies' own connection, opened at the first fetch (see #bulkClient). */
  #bulk: (Client & Record<string, unknown>) | undefined;
  /** The bulk stream to this peer, when mTLS is on. */
  readonly #stream: BulkChannel | undefined;
  #chunkPath: 'bulk' | 'grpc' | undefined;
  #closed = false;
  readonly #connect: (extra: Record<string, unknown>) => Client & Record<string, unknown>;
  readonly #timeoutMs: number;
  readonly #from: string;
  readonly #protocol: ProtocolRange;
  readonly #onIncompatible: ((error: IncompatiblePeerError) => void) | undefined;
  /** What the last answered ping agreed, or why the peer was refused. */
  #agreed: { version?: ProtocolVersion; refused?: string } = {};

  constructor(opts: PeerClientOptions) {
    this.id = opts.id;
    this.#protocol = opts.protocol ?? PROTOCOL;
    this.#onIncompatible = opts.onIncompatible;
    this.#from = opts.from ?? '';
    this.address = opts.address;
    this.#timeoutMs = opts.timeoutMs;
    this.#connect = (extra) =>
      new PeerClientConstructor(
        opts.address,
        opts.credentials?.((nodeId) => {
          this.#authenticatedAs = nodeId;
        }) ?? credentials.createInsecure(),
        {
          ...channelOptions(opts.flowControlWindow),
          // TLS names the server by SNI only with a host name (never an address); who the peer is
          // comes from its certificate's node identity, not from this name.
          ...(opts.credentials ? { 'grpc.ssl_target_name_override': 'node.edgemesh.p2p.dev' } : {}),
          // No service config from a host name's DNS TXT records: a peer needs none, and one that
          // picks weighted_round_robin with load reports makes grpc-js load ORCA's protocol through
          // @grpc/proto-loader, which the bundle replaces with a stand-in that throws (an uncaught
          // exception: scripts/build.ts). Nor a TXT lookup at each resolution.
          'grpc.service_config_disable_resolution': 1,
          ...extra,
        },
      );
    this.#client = this.#connect({});
    this.#stream =
      opts.bulkTls &&
      new BulkChannel({ id: opts.id, address: opts.address, timeoutMs: opts.timeoutMs, tls: opts.bulkTls });
  }

  /**
   * The connection chunk bodies travel on: a TCP connection of their own (a subchannel pool of its
   * own), not the one control calls use. On a link the bulk saturates, a ping, a Replicate or a
   * message otherwise waits behind every chunk byte already in that socket's send buffer (seconds at
   * a slow peer's rate, so the peer looked dead); on its own connection it waits only in the link's
   * queue. HTTP/2's per-stream flow control cannot help there: the queue is TCP's, below it.
   */
  #bulkClient(): Client & Record<string, unknown> {
    // A transport closed (a member's replaced connection) opens nothing more: the caller moves on.
    if (this.#closed) throw new PeerError(this.id, 'FetchChunks: the connection was closed');
    // The one connection that takes chunk pieces, so the one that accepts messages of a chunk's size.
    this.#bulk ??= this.#connect({
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': CHUNK_MESSAGE_BYTES,
    });
    return this.#bulk;
  }

  /**
   * A unary call with a deadline of the client's timeout, or `timeoutMs`; `signal` cancels it. In a
   * client span (rpc-spans.ts) that the peer's server span joins.
   */
  #unary<T>(method: string, request: unknown, signal?: AbortSignal, timeoutMs = this.#timeoutMs): Promise<T> {
    const traced = this.#call(method);
    return new Promise((resolve, reject) => {
      const onAbort = () => call.cancel();
      const call = (this.#client[method] as Unary).call(
        this.#client,
        request,
        traced.metadata,
        { deadline: Date.now() + timeoutMs },
        (error, response) => {
          // Off the signal once done: a timeout's or a combined signal with a listener is kept alive
          // until it fires, and with it the finished call (a minute of Replicate calls under load).
          signal?.removeEventListener('abort', onAbort);
          traced.end(error);
          if (error) reject(this.#refusedBy(error) ?? error);
          else resolve(response as T);
        },
      ) as { cancel(): void };
      if (signal?.aborted) call.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A call's metadata (trace context, this node's protocol range) and client span (rpc-spans.ts). */
  #call(method: string): ReturnType<typeof clientCall> {
    const traced = clientCall(method, this.address);
    traced.metadata.set(PROTOCOL_METADATA, formatRange(this.#protocol));
    return traced;
  }

  /**
   * An IncompatiblePeerError when `error` is the peer refusing this node's protocol range (its own
   * range in the trailers); else undefined.
   */
  #refusedBy(error: ServiceError): IncompatiblePeerError | undefined {
    if (error.code !== status.FAILED_PRECONDITION) return undefined;
    const theirs = error.metadata?.get(PROTOCOL_METADATA)[0];
    return theirs === undefined ? undefined : this.#incompatible(String(theirs), error);
  }

  /** Records and reports that the peer speaks `theirs`, with no version in common. */
  #incompatible(theirs: string, cause?: Error): IncompatiblePeerError {
    // What the peer said, cut as the server cuts a caller's (it goes into errors, status and logs).
    const said = theirs.slice(0, 64);
    const error = new IncompatiblePeerError(this.id, said, formatRange(this.#protocol), { cause });
    this.#agreed = { refused: error.message };
    this.#onIncompatible?.(error);
    return error;
  }

  protocol(): { version?: ProtocolVersion; refused?: string } {
    return this.#agreed;
  }

  getManifest(key: string, signal?: AbortSignal): Promise<ManifestAnswer | undefined> {
    return this.#answer('GetManifest', key, signal);
  }

  /** Waits as long as `signal` allows (an origin download can take minutes), else an hour. */
  fetchOrigin(key: string, signal?: AbortSignal): Promise<ManifestAnswer | undefined> {
    return this.#answer('FetchOrigin', key, signal, 3_600_000);
  }

  async #answer(
    method: string,
    key: string,
    signal?: AbortSignal,
    timeoutMs?: number,
  ): Promise<ManifestAnswer | undefined> {
    try {
      const r = await this.#unary<WireManifestAnswer>(method, { key }, signal, timeoutMs);
      const holders = (r.holders ?? []).map((h) => ({ nodeId: h.nodeId, grpc: h.grpc }));
      const purgeSignature = signatureFromWire(r.purgeSignature);
      const purged =
        Number(r.purgedAtMs) > 0
          ? { purgedAtMs: Number(r.purgedAtMs), ...(purgeSignature ? { purgeSignature } : {}) }
          : {};
      return {
        manifest: r.manifest ? fromWire(r.manifest) : undefined,
        holds: Boolean(r.holds),
        holders,
        ...purged,
        ...(r.inProgress ? { inProgress: true } : {}),
      };
    } catch (error) {
      if ((error as ServiceError).code === status.NOT_FOUND) return undefined;
      if (error instanceof IncompatiblePeerError) throw error;
      // FetchOrigin from an owner already running as many origin fetches as it takes.
      if ((error as ServiceError).code === status.RESOURCE_EXHAUSTED)
        throw new PeerBusyError(this.id, `${method}: ${(error as ServiceError).details}`, { cause: error });
      throw new PeerError(this.id, `${method} failed: ${(error as Error).message}`, { cause: error });
    }
  }

  async hold(manifest: Manifest, holder: Holder, signal?: AbortSignal): Promise<void> {
    await this.#unary('Hold', { manifest: toWire(manifest), holder }, signal).catch((error: Error) => {
      throw new PeerError(this.id, `Hold failed: ${error.message}`, { cause: error });
    });
  }

  async release(keys: readonly string[], holder: Holder, signal?: AbortSignal): Promise<void> {
    // A peer that agreed on 1.0 at its last ping has no Release: not asked (nor is it an error).
    const agreed = this.#agreed.version;
    if (agreed && compareVersions(agreed, RELEASE_SINCE) < 0) return;
    await this.#unary('Release', { keys, holder }, signal).catch((error: Error) => {
      // A 1.0 build has no Release: its records of this holder expire instead.
      if ((error as ServiceError).code === status.UNIMPLEMENTED) return;
      throw new PeerError(this.id, `Release failed: ${error.message}`, { cause: error });
    });
  }

  async replicate(
    manifest: Manifest,
    source: Holder,
    signal?: AbortSignal,
  ): Promise<{ purgedAtMs?: number; purgeSignature?: NodeSignature }> {
    const request = { key: manifest.key, source, root: Buffer.from(manifest.root, 'hex') };
    // The owner answers once it has the whole object: a large one over a slow link takes as long as
    // it takes. A caller's signal (the replication timeout) bounds it, not the control-call timeout.
    const r = await this.#unary<{ purgedAtMs?: number; purgeSignature?: WireSignature }>(
      'Replicate',
      request,
      signal,
      signal ? 3_600_000 : this.#timeoutMs,
    ).catch((error: Error) => {
      // The owner has as many copies of this node's under way and waiting as it takes (CallerSlots).
      if ((error as ServiceError).code === status.RESOURCE_EXHAUSTED)
        throw new PeerBusyError(this.id, `Replicate of ${manifest.key}: ${(error as ServiceError).details}`, {
          cause: error,
        });
      throw new PeerError(this.id, `Replicate of ${manifest.key} failed: ${error.message}`, {
        cause: error,
      });
    });
    const purgeSignature = signatureFromWire(r.purgeSignature);
    return Number(r.purgedAtMs) > 0
      ? { purgedAtMs: Number(r.purgedAtMs), ...(purgeSignature ? { purgeSignature } : {}) }
      : {};
  }

  async deliver(
    message: { topic: string; from: string; body: Buffer; contentType: string },
    signal?: AbortSignal,
  ): Promise<void> {
    const request = {
      topic: message.topic,
      fromNode: message.from,
      body: message.body,
      contentType: message.contentType,
    };
    await this.#unary('Deliver', request, signal).catch((error: Error) => {
      throw new PeerError(this.id, `Deliver failed: ${error.message}`, { cause: error });
    });
  }

  async purge(
    key: string,
    purgedAtMs: number,
    signature: NodeSignature | undefined,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const request = { key, purgedAtMs, ...(signature ? { signature: signatureToWire(signature) } : {}) };
    const r = await this.#unary<{ existed?: boolean }>('Purge', request, signal).catch((error: Error) => {
      throw new PeerError(this.id, `Purge of ${key} failed: ${error.message}`, { cause: error });
    });
    return Boolean(r.existed);
  }

  async ping(signal?: AbortSignal, timeoutMs = this.#timeoutMs): Promise<PingResult> {
    // Not yet connected: this round trip takes the TCP and TLS handshakes too.
    const connecting = this.#client.getChannel().getConnectivityState(false) !== connectivityState.READY;
    const started = performance.now();
    const request = { sentAtMs: Date.now(), fromNode: this.#from };
    const r = await this.#unary<WirePing>('Ping', request, signal, timeoutMs).catch((error: Error) => {
      if (error instanceof IncompatiblePeerError) throw error;
      throw new PeerError(this.id, `Ping failed: ${error.message}`, { cause: error });
    });
    if (this.#authenticatedAs !== undefined && r.nodeId !== this.#authenticatedAs)
      throw new PeerError(
        this.id,
        `answered as ${r.nodeId}, but its certificate names ${this.#authenticatedAs}`,
      );
    // The answer says what the peer speaks (nothing: a build from before versions, 1.0).
    const theirs = r.protocol ? parseRange(r.protocol) : UNVERSIONED;
    const version = theirs && negotiate(this.#protocol, theirs);
    if (!version) throw this.#incompatible(r.protocol ?? '');
    this.#agreed = { version };
    const yours = Number(r.yourIncarnation ?? 0);
    return {
      ...this.#pingResult(r, performance.now() - started),
      ...(connecting ? { connecting } : {}),
      ...(yours > 0 ? { yourIncarnation: yours } : {}),
    };
  }

  async probe(target: string, signal?: AbortSignal): Promise<PingResult> {
    const started = performance.now();
    const r = await this.#unary<WirePing>('Probe', { target }, signal).catch((error: Error) => {
      throw new PeerError(this.id, `Probe of ${target} failed: ${error.message}`, { cause: error });
    });
    return this.#pingResult(r, performance.now() - started);
  }

  #pingResult(r: WirePing, rttMs: number): PingResult {
    const coordinate = pingCoordinate(r);
    const incarnation = Number(r.incarnation ?? 0);
    const protocol = r.protocol ? parseRange(r.protocol) : undefined;
    return {
      ...(protocol ? { protocol } : {}),
      nodeId: r.nodeId,
      zone: r.zone,
      region: r.region,
      rttMs,
      ...(coordinate ? { coordinate } : {}),
      ...(incarnation > 0 ? { incarnation } : {}),
    };
  }

  async *fetchChunks(
    digests: readonly string[],
    lengths: readonly number[],
    signal?: AbortSignal,
    into?: ReceiveBuffers,
  ): AsyncGenerator<ReceivedChunk> {
    if (this.#closed) throw new PeerError(this.id, 'FetchChunks: the connection was closed');
    if (this.#stream && !this.#stream.unsupported) {
      const traced = this.#call('FetchChunks');
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(traced.metadata.getMap())) meta[k] = String(v);
      try {
        this.#chunkPath = 'bulk';
        yield* this.#stream.fetch(digests, lengths, this.#from, meta, signal, into);
        return;
      } catch (error) {
        traced.end(error as Error);
        if (!(error instanceof BulkUnsupportedError)) throw error;
      } finally {
        traced.end(); // also when the consumer stops early (end is once: an error above stays)
      }
    }
    this.#chunkPath = 'grpc';
    yield* this.#fetchOnGrpc(digests, lengths, signal);
  }

  /** What the last chunk request went on: the bulk stream or FetchChunks (undefined: none yet). */
  get chunkPath(): 'bulk' | 'grpc' | undefined {
    return this.#chunkPath;
  }

  async *#fetchOnGrpc(
    digests: readonly string[],
    lengths: readonly number[],
    signal?: AbortSignal,
  ): AsyncGenerator<ReceivedChunk> {
    if (signal?.aborted) throw new PeerError(this.id, 'FetchChunks cancelled');
    const bulk = this.#bulkClient();
    const traced = this.#call('FetchChunks');
    const call = (
      bulk.FetchChunks as (req: unknown, md: Metadata) => AsyncIterable<ChunkPiece> & { cancel(): void }
    ).call(
      bulk,
      { digests: digests.map((d) => Buffer.from(d, 'hex')), fromNode: this.#from },
      traced.metadata,
    );
    // Until every chunk is in (as on the bulk stream).
    const cancel = cancelWatch(signal, () => call.cancel());
    // A peer that goes quiet mid-stream is abandoned, so the caller can move on to another holder.
    const quiet = quietWatch(this.#timeoutMs, () => call.cancel());
    const beats = heartbeatCheck(this.id, lengths.length);
    quiet.arm();
    let index = 0;
    let chunk: Buffer | undefined;
    let filled = 0;
    try {
      for await (const piece of call) {
        // Only heartbeats and whole chunks re-arm the watch (as on the bulk stream): a peer
        // trickling a byte at a time would otherwise hold the fetch open for ever.
        if (piece.data.length === 0) {
          // A heartbeat: the peer is queueing us for upload.
          const error = beats.beat(piece.index, index);
          if (error) throw error;
          quiet.arm();
          continue;
        }
        const expected = lengths[index];
        if (piece.index !== index || expected === undefined || filled + piece.data.length > expected) {
          throw new PeerError(
            this.id,
            `FetchChunks: unexpected piece for chunk ${piece.index} (expected ${index})`,
          );
        }
        let whole: Buffer;
        if (filled === 0 && piece.data.length === expected) {
          whole = piece.data; // the whole chunk in one piece: no copy
        } else {
          chunk ??= Buffer.allocUnsafe(expected);
          piece.data.copy(chunk, filled);
          filled += piece.data.length;
          if (filled < expected) continue;
          whole = chunk;
          chunk = undefined;
          filled = 0;
        }
        quiet.pause(); // the consumer's time is not the peer's
        index++;
        beats.progress();
        // Every chunk is in: a cancel now (a download that has all it needs) cuts nothing; the call
        // reads on to its status, so a batch that completed a download, its status OK, is recorded
        // and its holder credited rather than failed as cancelled.
        if (index === digests.length) cancel.stop();
        yield { data: whole };
        quiet.arm();
      }
      if (index !== digests.length)
        throw new PeerError(this.id, `FetchChunks: stream ended after ${index} of ${digests.length} chunks`);
    } catch (error) {
      traced.end(error as Error);
      if (error instanceof PeerError) throw error;
      if ((error as ServiceError).code === status.RESOURCE_EXHAUSTED)
        throw new PeerBusyError(this.id, `FetchChunks: ${(error as ServiceError).details}`, { cause: error });
      if (!quiet.stalled && REFUSALS.has((error as ServiceError).code))
        throw new PeerRefusedError(
          this.id,
          (error as ServiceError).code,
          `FetchChunks refused: ${status[(error as ServiceError).code]}: ${(error as ServiceError).details}`,
          {
            cause: error,
          },
        );
      if (quiet.stalled)
        throw new PeerError(this.id, `FetchChunks stalled: nothing for ${this.#timeoutMs} ms`, {
          cause: error,
        });
      // As on the bulk stream: the peer's own answer (busy, a refusal) and a stall come first.
      if (cancel.cut) throw new PeerError(this.id, 'FetchChunks cancelled', { cause: error });
      throw new PeerError(this.id, `FetchChunks failed: ${(error as Error).message}`, { cause: error });
    } finally {
      traced.end();
      quiet.pause();
      cancel.stop();
      call.cancel();
    }
  }

  async *watch(key: string, from: Holder | undefined, signal?: AbortSignal): AsyncGenerator<WatchUpdate> {
    const traced = this.#call('Watch');
    const call = (
      this.#client.Watch as (req: unknown, md: Metadata) => AsyncIterable<WireWatchEvent> & { cancel(): void }
    ).call(this.#client, { key, ...(from ? { from } : {}) }, traced.metadata);
    const onAbort = () => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    let events = 0;
    try {
      for await (const e of call) {
        events++;
        yield {
          ...(e.head ? { head: fromWire(e.head) } : {}),
          firstDigest: Number(e.firstDigest ?? 0),
          digests: (e.digests ?? []).map((d) => Buffer.from(d).toString('hex')),
          have: (e.have ?? []).map(Number),
          peers: (e.peers ?? []).map((p) => ({ nodeId: p.nodeId, grpc: p.grpc })),
          ...(e.manifest ? { manifest: fromWire(e.manifest) } : {}),
        };
      }
    } catch (error) {
      if (signal?.aborted) return;
      if ((error as ServiceError).code === status.NOT_FOUND) {
        // Before any event: it neither holds nor is getting the key (its download may have failed,
        // or not begun): nothing to follow, and no verdict on the object.
        if (events === 0) return;
        // After its first event: its download ended finding that no one has the object: a miss.
        throw new PeerRefusedError(this.id, status.NOT_FOUND, `Watch: ${(error as ServiceError).details}`, {
          cause: error,
        });
      }
      traced.end(error as Error);
      throw new PeerError(this.id, `Watch failed: ${(error as Error).message}`, { cause: error });
    } finally {
      traced.end();
      signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  close(): void {
    this.#closed = true;
    this.#client.close();
    this.#bulk?.close();
    this.#stream?.close();
  }
}
