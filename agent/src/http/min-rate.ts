import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** The longest window over which a connection's rate is measured (a shorter idle timeout: that). */
export const MAX_RATE_WINDOW_MS = 10_000;

/**
 * Whether the server waits on the client of `res` now: it is the client's turn (its idle clock runs:
 * not while the server works, not on an exchange stream), and either the answer has bytes the client
 * is not taking, or a handler reads a body that is not all in and has not paused the connection
 * (then the server holds it back, not the client). An `Expect: 100-continue` body nobody reads yet
 * has not been asked for (http/continue.ts). A connection already destroyed waits on nobody.
 */
export function waitsOnClient(socket: Socket, res: ServerResponse): boolean {
  if (socket.destroyed || !socket.timeout) return false;
  if (socket.writableNeedDrain) return true;
  const req = res.req;
  return (
    !req.complete &&
    !socket.isPaused() &&
    (req.listenerCount('data') > 0 || req.listenerCount('readable') > 0)
  );
}

/** What node:net keeps of a socket's writes: bytes handed to libuv, and those it still queues. */
interface SocketInternals {
  _bytesDispatched?: number;
  _handle?: { writeQueueSize?: number } | null;
}

/**
 * The bytes a connection has moved: read from the client, and written that the client's side took
 * (the kernel accepted them). `bytesWritten` would count bytes the server only queued: an answer is
 * written a chunk (4 MiB or more) at a time, so it moves by a whole chunk or by nothing. Node
 * counts what it handed to libuv (`_bytesDispatched`) and libuv what it could not yet pass to the
 * kernel (`writeQueueSize`, which node:net's own idle timeout reads); without them, `bytesWritten`.
 */
export function bytesMoved(socket: Socket): number {
  const internals = socket as unknown as SocketInternals;
  const dispatched = internals._bytesDispatched;
  const queued = internals._handle?.writeQueueSize;
  const written =
    typeof dispatched === 'number' && typeof queued === 'number' ? dispatched - queued : socket.bytesWritten;
  return socket.bytesRead + written;
}

/**
 * The minimum data rate of the HTTP API's clients. While the server waits on a request's client
 * (waitsOnClient, at every check), the bytes it moves (bytesMoved) are measured over a window of at
 * least `windowMs`: a window that moved `bytesPerSecond` for its length passes and the next starts;
 * one that moved something, but less, is handed to `onSlow`; one that moved nothing goes on (the
 * bytes that come next must make up for it), so a body sent in bursts with silences between them is
 * held to the rate on average, and a connection silent from the start is the idle timeout's (counted
 * `idle`, not `slow`). The idle timeout alone would keep a body trickled at a byte a minute, or an
 * answer read as slowly, and its admission slot, for ever. Windows are a request's own (a keep-alive
 * connection's next request starts afresh), and a check that finds the server waiting on itself
 * (nothing to send, a body held back) starts a new one. What it cannot see: bytes the kernel's
 * buffers took at the start of an answer (a few MiB) count as taken.
 */
export class MinDataRate {
  readonly #watched = new WeakMap<ServerResponse, { bytes: number; sinceMs: number }>();
  readonly #bytesPerSecond: number;
  readonly #windowMs: number;

  constructor(options: { bytesPerSecond: number; windowMs: number }) {
    this.#bytesPerSecond = options.bytesPerSecond;
    this.#windowMs = options.windowMs;
  }

  /** The connections of `busy` whose clients are too slow, at `nowMs`. */
  *check(busy: Iterable<[Socket, ServerResponse]>, nowMs: number): Generator<Socket> {
    for (const [socket, res] of busy) {
      if (!waitsOnClient(socket, res)) {
        this.#watched.delete(res);
        continue;
      }
      const bytes = bytesMoved(socket);
      const watch = this.#watched.get(res);
      if (!watch) {
        this.#watched.set(res, { bytes, sinceMs: nowMs });
        continue;
      }
      const elapsedMs = nowMs - watch.sinceMs;
      if (elapsedMs < this.#windowMs) continue;
      const moved = bytes - watch.bytes;
      if (moved >= (this.#bytesPerSecond * elapsedMs) / 1000)
        this.#watched.set(res, { bytes, sinceMs: nowMs });
      else if (moved > 0) {
        this.#watched.delete(res);
        yield socket;
      }
    }
  }
}
