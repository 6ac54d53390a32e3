import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** The longest window over which a connection's rate is measured (a shorter idle timeout: that). */
export const MAX_RATE_WINDOW_MS = 10_000;

/**
 * Whether the server waits on the client of `res` now: it is the client's turn (its idle clock runs:
 * not while the server works, not on an exchange stream), and either the answer has bytes the client
 * is not taking, or a handler reads a body that is not all in and has not paused the connection
 * (then the server holds it back, not the client). An `Expect: 100-continue` body nobody reads yet
 * has not been asked for (http/continue.ts).
 */
export function waitsOnClient(socket: Socket, res: ServerResponse): boolean {
  if (!socket.timeout) return false;
  if (socket.writableNeedDrain) return true;
  const req = res.req;
  return (
    !req.complete &&
    !socket.isPaused() &&
    (req.listenerCount('data') > 0 || req.listenerCount('readable') > 0)
  );
}

/**
 * The minimum data rate of the HTTP API's clients: a connection that moves fewer than
 * `bytesPerSecond` (in and out) over `windowMs` while the server waits on its client the whole time
 * (waitsOnClient, at every check) is handed to `onSlow`. The idle timeout alone would keep a body
 * trickled at a byte a minute, or an answer read as slowly, and its admission slot, for ever.
 * `check` runs the checks (every quarter window); a connection waiting on the server, even for a
 * moment seen by a check, starts a new window. One that moved nothing at all is left to the idle
 * timeout (counted `idle`, not `slow`).
 */
export class MinDataRate {
  readonly #watched = new WeakMap<Socket, { bytes: number; sinceMs: number }>();
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
        this.#watched.delete(socket);
        continue;
      }
      const bytes = socket.bytesRead + socket.bytesWritten;
      const watch = this.#watched.get(socket);
      if (!watch) {
        this.#watched.set(socket, { bytes, sinceMs: nowMs });
        continue;
      }
      const elapsedMs = nowMs - watch.sinceMs;
      if (elapsedMs < this.#windowMs) continue;
      const moved = bytes - watch.bytes;
      if (moved > 0 && moved < (this.#bytesPerSecond * elapsedMs) / 1000) {
        this.#watched.delete(socket);
        yield socket;
      } else this.#watched.set(socket, { bytes, sinceMs: nowMs });
    }
  }
}
