import { status } from '@grpc/grpc-js';
import type { SocketConstructorOpts } from 'node:net';
import { finished } from 'node:stream';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { BULK_ALPN, ClientReads, encodeRequest, FRAME, ResponseReader } from './bulk-wire.ts';
import {
  cancelWatch,
  heartbeatCheck,
  PeerBusyError,
  PeerError,
  PeerRefusedError,
  quietWatch,
  type ReceivedChunk,
  type ReceiveBuffers,
  REFUSALS,
} from './peer-transport.ts';

/** Idle connections kept per peer, and how long one may stay idle (under the server's 60 s). */
const MAX_IDLE = 4;
const IDLE_MS = 30_000;
/** A peer found without the bulk stream is asked again this much later (it may have been upgraded). */
const UNSUPPORTED_RETRY_MS = 10 * 60_000;

/** A connection to the peer and where its bytes land (bulk-wire.ts). */
interface Connection {
  socket: TLSSocket;
  reads: ClientReads;
}

/** A connection the peer closed or reset before its handshake ended: it turned it away (busy). */
class TurnedAway extends Error {}

/** The peer does not speak the bulk stream (a build from before it): use FetchChunks. */
export class BulkUnsupportedError extends Error {
  override name = 'BulkUnsupportedError';
}

export interface BulkChannelOptions {
  id: string;
  /** host:port, the peer's gRPC address (the bulk stream shares its port). */
  address: string;
  /** Deadline for the handshake and for each frame (a peer quiet this long is abandoned). */
  timeoutMs: number;
  /** TLS options for a new connection (mutual TLS, the peer's node checked): read at each connect. */
  tls: () => ConnectionOptions;
}

/**
 * The client end of the bulk stream (bulk-wire.ts) to one peer: a small pool of kept-alive mutual
 * TLS connections, one request on each at a time.
 */
export class BulkChannel {
  readonly #opts: BulkChannelOptions;
  readonly #host: string;
  readonly #port: number;
  readonly #idle: Connection[] = [];
  /** Until when the peer is taken not to speak the bulk stream (performance.now()). */
  #unsupportedUntil = -Infinity;
  #closed = false;

  constructor(opts: BulkChannelOptions) {
    this.#opts = opts;
    const colon = opts.address.lastIndexOf(':');
    this.#host = opts.address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
    this.#port = Number(opts.address.slice(colon + 1));
  }

  /** Whether the peer turned out not to speak the bulk stream (the caller uses FetchChunks). */
  get unsupported(): boolean {
    return performance.now() < this.#unsupportedUntil;
  }

  /**
   * The chunks `digests` in order, `lengths` their lengths, unverified (the caller hashes them),
   * each received into a buffer of `into` when it gives one. Throws BulkUnsupportedError
   * before yielding anything when the peer lacks the bulk stream, PeerBusyError when its upload is
   * busy, PeerError for anything else. `signal` cuts the call (and closes its connection) until the
   * last chunk is handed over; after that it no longer does: the call reads the answer's END, within
   * its quiet deadline, and keeps the connection, so a caller that cancels then should read on (or
   * call `return()`) rather than drop the generator.
   */
  async *fetch(
    digests: readonly string[],
    lengths: readonly number[],
    from: string,
    meta: Record<string, string>,
    signal?: AbortSignal,
    into?: ReceiveBuffers,
  ): AsyncGenerator<ReceivedChunk> {
    if (signal?.aborted) throw new PeerError(this.#opts.id, 'FetchChunks cancelled');
    const request = encodeRequest({ digests: [...digests], from, meta });
    let reused = true;
    let connection = this.#takeIdle();
    if (!connection) {
      reused = false;
      connection = await this.#connect(signal);
    }
    for (;;) {
      const outcome = yield* this.#request(connection, request, lengths, signal, reused, into);
      if (outcome === 'done') return;
      // A kept connection the server closed meanwhile (its age, its idle time): once more, anew.
      reused = false;
      connection = await this.#connect(signal);
    }
  }

  async *#request(
    connection: Connection,
    request: Buffer,
    lengths: readonly number[],
    signal: AbortSignal | undefined,
    reused: boolean,
    into: ReceiveBuffers | undefined,
  ): AsyncGenerator<ReceivedChunk, 'done' | 'retry'> {
    const { socket } = connection;
    const reader = new ResponseReader(socket, connection.reads, (index) => lengths[index], into);
    const quiet = quietWatch(this.#opts.timeoutMs, () => socket.destroy());
    const beats = heartbeatCheck(this.#opts.id, lengths.length);
    // The caller's cancel closes the connection (at once if it came while the connection was made).
    const cancel = cancelWatch(signal, () => socket.destroy());
    let index = 0;
    let heard = false;
    let reusable = false;
    try {
      socket.write(request);
      quiet.arm();
      for (;;) {
        let frame;
        try {
          frame = await reader.next();
        } catch (error) {
          if (reused && !heard && !quiet.stalled && !signal?.aborted) return 'retry';
          throw error;
        }
        heard = true;
        quiet.arm();
        if (frame.type === FRAME.WAIT) {
          const error = beats.beat(frame.index, index);
          if (error) throw error;
          continue;
        }
        if (frame.type === FRAME.ERROR) {
          reusable = reader.clean; // an honest server sends nothing after it
          const { code, message } = frame.error;
          if (code === Number(status.RESOURCE_EXHAUSTED))
            throw new PeerBusyError(this.#opts.id, `FetchChunks: ${message}`);
          if (REFUSALS.has(code))
            throw new PeerRefusedError(
              this.#opts.id,
              code,
              `FetchChunks refused: ${status[code]}: ${message}`,
            );
          throw new PeerError(this.#opts.id, `FetchChunks failed: ${message} (${status[code] ?? code})`);
        }
        if (frame.type === FRAME.END) {
          if (index !== lengths.length)
            throw new PeerError(
              this.#opts.id,
              `FetchChunks: stream ended after ${index} of ${lengths.length} chunks`,
            );
          reusable = reader.clean;
          return 'done';
        }
        if (frame.index !== index)
          throw new PeerError(
            this.#opts.id,
            `FetchChunks: unexpected chunk ${frame.index} (expected ${index})`,
          );
        index++;
        beats.progress();
        quiet.pause(); // the consumer's time is not the peer's
        // Every chunk is in: the consumer's cancelling now (a download that has all it needs, reading
        // on) no longer closes the connection. The answer's END is read all the same, within the
        // quiet deadline, and the connection kept for the next request: closed, it cost a new
        // handshake at both ends, most of the mesh's connection churn (docs/agent.md).
        if (index === lengths.length) cancel.stop();
        yield { data: frame.data, digest: frame.digest };
        quiet.arm();
      }
    } catch (error) {
      if (error instanceof PeerError) throw error;
      if (quiet.stalled)
        throw new PeerError(this.#opts.id, `FetchChunks stalled: nothing for ${this.#opts.timeoutMs} ms`, {
          cause: error,
        });
      // A cancel once every chunk was in cuts nothing: the call then failed on its own (its END).
      if (cancel.cut) throw new PeerError(this.#opts.id, 'FetchChunks cancelled', { cause: error });
      throw new PeerError(this.#opts.id, `FetchChunks failed: ${(error as Error).message}`, { cause: error });
    } finally {
      quiet.pause();
      cancel.stop();
      reader.detach();
      // An answer not read to its end (the consumer stopped, an error) leaves bytes in flight: the
      // connection goes with it (and one cancelled before its last chunk was destroyed then). A
      // consumer that stops at the last chunk is not waited for: its END may never come.
      if (reusable) this.#keep(connection);
      else {
        socket.destroy();
        // Bodies received into the caller's buffers and never handed over go back once the
        // connection is closed (TLS writes into them no more): at once if it is closed already.
        const unread = reader.unread();
        if (unread.length > 0 && into) finished(socket, () => unread.forEach((body) => into.giveBack(body)));
      }
    }
  }

  #takeIdle(): Connection | undefined {
    for (;;) {
      const connection = this.#idle.pop();
      if (!connection) return undefined;
      const { socket } = connection;
      if (!socket.destroyed && socket.readable && socket.writable) {
        socket.setTimeout(0);
        socket.ref();
        return connection;
      }
      socket.destroy();
    }
  }

  #keep(connection: Connection): void {
    const { socket } = connection;
    if (this.#closed || this.#idle.length >= MAX_IDLE || socket.destroyed) return void socket.destroy();
    socket.setTimeout(IDLE_MS);
    socket.unref(); // an idle connection keeps no process alive
    // Read while idle: any byte now is outside an answer, and ClientReads closes the connection
    // (paused, those bytes would wait in the kernel and be taken for the next answer's start).
    socket.resume();
    this.#idle.push(connection);
  }

  #forget(socket: TLSSocket): void {
    const at = this.#idle.findIndex((c) => c.socket === socket);
    if (at >= 0) this.#idle.splice(at, 1);
  }

  /** A new connection, its handshake done; BulkUnsupportedError when the peer chose another protocol. */
  #connect(signal?: AbortSignal): Promise<Connection> {
    if (this.#closed)
      return Promise.reject(new PeerError(this.#opts.id, 'FetchChunks: the connection was closed'));
    return new Promise((resolve, reject) => {
      // Bytes from an idle connection (a server that breaks the protocol) close it.
      const reads = new ClientReads(() => socket.destroy());
      // `onread` is a net.Socket option tls.connect passes on (its types leave it out).
      const options: ConnectionOptions & Pick<SocketConstructorOpts, 'onread'> = {
        ...this.#opts.tls(),
        host: this.#host,
        port: this.#port,
        ALPNProtocols: [BULK_ALPN, 'h2'],
        onread: reads.onread,
      };
      const socket = connect(options);
      // Errors are the request's (through the reader) or, while idle, only close the connection.
      socket.on('error', () => {});
      socket.on('close', () => this.#forget(socket));
      socket.on('timeout', () => socket.destroy());
      const timer = setTimeout(
        () => fail(new Error(`no handshake in ${this.#opts.timeoutMs} ms`)),
        this.#opts.timeoutMs,
      );
      const onAbort = () => fail(new Error('cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('secureConnect', connected);
        socket.off('error', fail);
        socket.off('close', closed);
      };
      function fail(this: void, error: Error) {
        settle();
        socket.destroy();
        // Reset before the handshake ended: the peer turned the connection away (too many
        // handshakes at once, from here or in all: bulk-server.ts PEER_PORT_LIMITS), as busy.
        reject(
          (error as NodeJS.ErrnoException).code === 'ECONNRESET' ? new TurnedAway(error.message) : error,
        );
      }
      const closed = () => fail(new TurnedAway('the connection closed during the handshake'));
      const connected = () => {
        settle();
        if (socket.alpnProtocol !== BULK_ALPN) {
          this.#unsupportedUntil = performance.now() + UNSUPPORTED_RETRY_MS;
          socket.destroy();
          return reject(new BulkUnsupportedError(`${this.#opts.address} does not speak ${BULK_ALPN}`));
        }
        socket.setNoDelay(true);
        resolve({ socket, reads });
      };
      socket.once('secureConnect', connected);
      socket.once('error', fail);
      socket.once('close', closed);
    }).catch((error: Error) => {
      if (error instanceof BulkUnsupportedError) throw error;
      // Asked again later, and not counted against the peer (a busy refusal, not a failure).
      if (error instanceof TurnedAway)
        throw new PeerBusyError(this.#opts.id, `FetchChunks: ${error.message} (turned away: busy)`);
      throw new PeerError(this.#opts.id, `FetchChunks: ${error.message}`, { cause: error });
    }) as Promise<Connection>;
  }

  close(): void {
    this.#closed = true;
    for (const { socket } of this.#idle.splice(0)) socket.destroy();
  }
}
