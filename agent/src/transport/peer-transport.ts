import type { ProtocolRange, ProtocolVersion } from '@edgemesh/contracts';
import type { Manifest, NodeSignature } from '../cache/manifest.ts';
import type { Coordinate, Holder } from '../domain.ts';

/**
 * How the agent talks to one peer. The real one is gRPC (peer-client.ts); the seam lets fetch logic
 * be tested against misbehaving peers and lets membership (next) hand out peers as it learns them.
 */
export interface PeerTransport {
  /** Stable peer identity, used in logs, metrics and blame. */
  readonly id: string;
  readonly address: string;
  /** What the peer knows of `key` (the manifest is untrusted: check it with parseManifest); undefined: nothing. */
  getManifest(key: string, signal?: AbortSignal): Promise<ManifestAnswer | undefined>;
  /**
   * Asks this peer, one of `key`'s owners, to get it from its origin (once for all askers); what it
   * then knows of `key`, or undefined when the origin has no such object.
   */
  fetchOrigin(key: string, signal?: AbortSignal): Promise<ManifestAnswer | undefined>;
  /** Tells this peer, one of `manifest.key`'s owners, that `holder` holds it. */
  hold(manifest: Manifest, holder: Holder, signal?: AbortSignal): Promise<void>;
  /**
   * Tells this peer, an owner of each of `keys` (at most MAX_RELEASED_KEYS), that `holder` holds them
   * no more. Resolves too when the peer does not know the call (a 1.0 build).
   */
  release(keys: readonly string[], holder: Holder, signal?: AbortSignal): Promise<void>;
  /**
   * Asks this peer, one of `manifest.key`'s owners, to copy it from `source`; resolves once it is
   * stored there, or with the purge time when the owner refuses it as purged.
   */
  replicate(
    manifest: Manifest,
    source: Holder,
    signal?: AbortSignal,
  ): Promise<{ purgedAtMs?: number; purgeSignature?: NodeSignature }>;
  /** Hands a direct-exchange message to this peer's local consumers of `topic`. */
  deliver(
    message: { topic: string; from: string; body: Buffer; contentType: string },
    signal?: AbortSignal,
  ): Promise<void>;
  /**
   * Tells this peer, one of `key`'s owners, that it was purged at `purgedAtMs` (with the signature of
   * the node that accepted the purge); whether it had a copy.
   */
  purge(
    key: string,
    purgedAtMs: number,
    signature: NodeSignature | undefined,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /**
   * The chunks `digests` as whole chunks in order, their lengths given by `lengths`. Bytes are NOT
   * verified here: the caller compares each one's digest with the one it asked for (a transport
   * that hashed the bytes as they arrived says what they hash to). Throws PeerError on a protocol
   * or transport failure. A transport that can receive bytes where they are wanted puts a chunk
   * into a buffer `into` gives, when it gives one; others ignore it. `signal` cuts the call until
   * its last chunk is handed over, not after: the call then reads on to the answer's end (within its
   * quiet deadline), so a caller that cancels then should read on or call `return()`.
   */
  fetchChunks(
    digests: readonly string[],
    lengths: readonly number[],
    signal?: AbortSignal,
    into?: ReceiveBuffers,
  ): AsyncIterable<ReceivedChunk>;
  /**
   * What this peer has of `key` and, while it is still getting it, each chunk as it arrives (see
   * Watch in peer.proto). Ends after the complete manifest; ends at once, empty, when the peer
   * neither holds nor is getting the key; throws PeerRefusedError (NOT_FOUND) when, after its first
   * event, its own download of the key found that no one has it. Everything in it is untrusted.
   */
  watch(key: string, from: Holder | undefined, signal?: AbortSignal): AsyncIterable<WatchUpdate>;
  /** `timeoutMs`: the call's deadline (the transport's control-call timeout when unset). */
  ping(signal?: AbortSignal, timeoutMs?: number): Promise<PingResult>;
  /** Asks this peer to ping `target` (host:port) for us: SWIM's indirect probe. */
  probe(target: string, signal?: AbortSignal): Promise<PingResult>;
  /**
   * The protocol version agreed with this peer at its last answered ping, or why it was refused
   * (no version in common); neither before a ping was answered. Transports without versions omit it.
   */
  protocol?(): { version?: ProtocolVersion; refused?: string };
  close(): void;
}

/**
 * A caller's buffers for the chunks a transport receives: `take(size)`, a buffer of exactly `size`
 * bytes, or undefined (the transport makes its own); `giveBack`, for a buffer taken for a chunk
 * that is never handed over (the call failed or was cancelled), once the transport is done with it.
 */
export interface ReceiveBuffers {
  take(size: number): Buffer | undefined;
  giveBack(bytes: Buffer): void;
}

/** One chunk as a peer sent it, with its SHA-256 (hex) when the transport hashed it on arrival. */
export interface ReceivedChunk {
  data: Buffer;
  digest?: string;
}

/** A peer's answer about a key: the manifest, whether it holds the bytes, and others it knows hold them. */
export interface ManifestAnswer {
  manifest: unknown;
  holds: boolean;
  holders: Holder[];
  /** Set when the key was purged and the peer knows no later version. */
  purgedAtMs?: number;
  /** The purge's signature, when the peer has one (unverified: a "purged" without one is not believed). */
  purgeSignature?: NodeSignature;
  /** FetchOrigin: the fetch is under way and `manifest` is only the object's shape (no chunks, no root). */
  inProgress?: boolean;
}

/** One Watch event, unchecked: digests as hex, `head` and `manifest` for parseManifest/parseHead. */
export interface WatchUpdate {
  head?: Record<string, unknown>;
  firstDigest: number;
  digests: string[];
  have: number[];
  peers: Holder[];
  manifest?: Record<string, unknown>;
}

/** What a ping tells: who answered, where it is, and the round trip. */
export interface PingResult {
  nodeId: string;
  zone: string;
  region: string;
  rttMs: number;
  coordinate?: Coordinate;
  /** The member's incarnation as it answers for itself (Membership: its life and refutations). */
  incarnation?: number;
  /** A direct ping only: the incarnation the member knows of this node, when it knows one. */
  yourIncarnation?: number;
  /**
   * The connection was not up when the ping left: its round trip includes the handshakes, so it is
   * no sample of the member's round trips (nor of its distance).
   */
  connecting?: boolean;
  /** The protocol range it advertised (absent when it advertised none: a 1.0 build). */
  protocol?: ProtocolRange;
}

/** A peer failed: unreachable, timed out, broke the protocol or sent bad bytes. */
export class PeerError extends Error {
  override name = 'PeerError';
  readonly peer: string;
  constructor(peer: string, message: string, options?: ErrorOptions) {
    super(`peer ${peer}: ${message}`, options);
    this.peer = peer;
  }
}

/**
 * The peer speaks no protocol version this node speaks (docs/upgrades.md): it is refused, never a
 * member, until one of the two is upgraded.
 */
export class IncompatiblePeerError extends PeerError {
  override name = 'IncompatiblePeerError';
  /** The range the peer advertised, as it sent it. */
  readonly theirs: string;
  constructor(peer: string, theirs: string, ours: string, options?: ErrorOptions) {
    super(
      peer,
      `protocol: it speaks ${theirs || '(nothing readable)'}, this node ${ours}: no version in common`,
      options,
    );
    this.theirs = theirs;
  }
}

/** The peer is up but its upload is busy: ask another holder, or this one again shortly. */
export class PeerBusyError extends PeerError {
  override name = 'PeerBusyError';
}

/**
 * The peer answered, and refused: it lacks the chunk, has it damaged, or refuses the caller or the
 * request. Asking it the same again would get the same answer.
 */
export class PeerRefusedError extends PeerError {
  override name = 'PeerRefusedError';
  /** The refusal's gRPC status (NOT_FOUND: it holds the chunk no more). */
  readonly code: number;
  constructor(peer: string, code: number, message: string, options?: ErrorOptions) {
    super(peer, message, options);
    this.code = code;
  }
}

/** The gRPC status of a chunk the peer does not hold (any more). */
export const NOT_FOUND = 5;

/** The gRPC statuses that are such a refusal (the bulk stream's error frames carry the same). */
export const REFUSALS: ReadonlySet<number> = new Set([3, 5, 7, 9, 15, 16]); // INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, DATA_LOSS, UNAUTHENTICATED

/** How often a chunk request waiting for the holder's upload budget hears from it (a heartbeat). */
export const HEARTBEAT_MS = 1000;

/**
 * How long a holder may keep one chunk of a request queued for its upload budget before the caller
 * counts it busy and asks elsewhere: heartbeats show the holder alive, not that it will ever send.
 */
export const MAX_QUEUED_MS = 60_000;

/**
 * Checks a chunk stream's heartbeats (WAIT frames, empty pieces), which re-arm its quietWatch: each
 * must name the chunk expected next, and none comes once all `chunks` are in (an honest holder
 * heartbeats only for a chunk it has still to send; past the last, each would hold the call, even
 * one its caller cancelled once it had every chunk: cancelWatch); one chunk's wait ends within
 * MAX_QUEUED_MS of its first heartbeat (PeerBusyError); and the request's heartbeats come no faster
 * than four times an honest holder's pace since the request was made (when the check is), with a
 * slack of 16, else a lying peer spends the caller's CPU on them. Counted over the whole request,
 * not per chunk: an honest holder's heartbeats queue behind a chunk on a slow link and arrive
 * together after it.
 * `beat` returns the error to throw, `progress` marks a chunk received.
 */
export function heartbeatCheck(peer: string, chunks: number, now: () => number = () => performance.now()) {
  const start = now();
  let since: number | undefined;
  let beats = 0;
  return {
    beat(index: number, expected: number): PeerError | undefined {
      if (expected >= chunks) return new PeerError(peer, 'FetchChunks: a heartbeat after the last chunk');
      if (index !== expected)
        return new PeerError(peer, `FetchChunks: a heartbeat for chunk ${index} (expected ${expected})`);
      const t = now();
      since ??= t;
      beats++;
      if (t - since > MAX_QUEUED_MS)
        return new PeerBusyError(peer, `FetchChunks: chunk ${index} queued for over ${MAX_QUEUED_MS} ms`);
      if (beats > 16 + (4 * (t - start)) / HEARTBEAT_MS)
        return new PeerError(peer, `FetchChunks: ${beats} heartbeats in ${Math.round(t - start)} ms`);
      return undefined;
    },
    progress(): void {
      since = undefined;
    },
  };
}

/**
 * The caller's cancel of a chunk stream: `signal` cuts it (`onCut`, at once when already aborted)
 * until `stop`, which the stream calls once every chunk is handed over and when it ends. After the
 * last chunk a cancel cuts nothing: the call reads on to its answer's end within its quiet deadline
 * (a download that has every chunk cancels what it asked; cut then, the batch that completed it
 * failed, and the bulk stream lost its connection). `cut` says the cancel cut the call, so that what
 * then fails it is reported as cancelled.
 */
export function cancelWatch(signal: AbortSignal | undefined, onCut: () => void) {
  const watch = {
    cut: false,
    stop() {
      signal?.removeEventListener('abort', cut);
    },
  };
  function cut() {
    watch.cut = true;
    onCut();
  }
  signal?.addEventListener('abort', cut, { once: true });
  if (signal?.aborted) cut();
  return watch;
}

/**
 * A watchdog for a chunk stream: `arm` (re)starts it, `pause` stops it (while the consumer holds a
 * chunk: its time is not the peer's); when it runs out, `onQuiet` cuts the stream and `stalled` is
 * set, so the caller reports a stall rather than the cut.
 */
export function quietWatch(timeoutMs: number, onQuiet: () => void) {
  let timer: NodeJS.Timeout | undefined;
  const watch = {
    stalled: false,
    arm() {
      clearTimeout(timer);
      timer = setTimeout(() => {
        watch.stalled = true;
        onQuiet();
      }, timeoutMs);
    },
    pause() {
      clearTimeout(timer);
    },
  };
  return watch;
}
