import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { DISCARDED_BODY_BYTES, HttpError, sendError } from './errors.ts';

/** Requests one connection may have waiting behind the one being answered; more are refused. */
export const MAX_QUEUED_PER_CONNECTION = 32;

/** Whether `req` says it has a body (a Transfer-Encoding, or a Content-Length other than 0). */
export const hasBody = (req: IncomingMessage): boolean =>
  (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined;

/**
 * A request listener that hands `listener` each request of a connection only when its answer's
 * turn has come. node:http parses requests pipelined on one connection as they arrive and emits
 * them at once, while their answers go out one at a time, in order: a request emitted early would
 * be admitted, authenticated and read from disk while it waits behind an answer its client may
 * never read. One connection pipelining a few hundred GETs of a large object, and reading none,
 * would so hold every admission slot of its client (all anonymous clients share one) until its
 * connection is cut, and a pipelined exchange stream would turn off the idle timeout of the answer
 * it waits behind. Here a request without a body waits parsed and nothing more: it is handed on,
 * on the next tick (after node:http has flushed what it writes for its turn, and the answer
 * before it has closed), when its answer gets the connection (`socket`); and dropped, never handed
 * on, when the connection goes first.
 *
 * Refused at once, each answered in its turn with 429 TooManyRequests and `Connection: close`
 * (`onRefused` is called for each):
 * - a request with a body that would have to wait: node:http would parse its body into it while
 *   it waits, unread, and a body sent in chunks of a byte costs a buffer each (tens of MiB for one
 *   connection's 64 KiB). RFC 9112 §9.3.2: a client should not pipeline requests that are not safe
 *   and idempotent;
 * - a request past `maxQueued` waiting on one connection: node:http stops reading a connection
 *   only once the answers written ahead on it fill its buffer, and only after the whole read it is
 *   parsing (64 KiB: a few thousand small requests, each kept until the connection goes).
 * A refused request's body is thrown away as it comes, never kept; past DISCARDED_BODY_BYTES of
 * refused bodies on one connection, or `maxQueued` refusals (nothing after the first is ever
 * answered: it closes the connection), the connection is closed at once.
 */
export function inTurn(
  listener: RequestListener,
  onRefused: () => void,
  maxQueued = MAX_QUEUED_PER_CONNECTION,
): RequestListener {
  /** By connection: requests waiting on it, requests refused, bytes of refused bodies thrown away. */
  const connections = new WeakMap<Socket, { waiting: number; refused: number; discarded: number }>();
  const refuse = (
    req: IncomingMessage,
    res: ServerResponse,
    state: { refused: number; discarded: number },
    why: string,
  ) => {
    onRefused();
    const connection = req.socket;
    if (++state.refused > maxQueued) return void connection.destroy();
    sendError(res, new HttpError(429, 'TooManyRequests', why, { 'Retry-After': '1', Connection: 'close' }));
    // After the answer, which is ended: a client waiting for `100 Continue` gets none (continue.ts).
    req.on('data', (chunk: Buffer) => {
      state.discarded += chunk.length;
      if (state.discarded > DISCARDED_BODY_BYTES) connection.destroy();
    });
  };
  return (req: IncomingMessage, res: ServerResponse) => {
    if (res.socket) return listener(req, res); // the connection's current answer: its turn now
    const connection = req.socket;
    let state = connections.get(connection);
    if (!state) connections.set(connection, (state = { waiting: 0, refused: 0, discarded: 0 }));
    if (hasBody(req))
      return refuse(
        req,
        res,
        state,
        'a request with a body is taken only once the answers before it on its connection have gone out',
      );
    if (state.waiting >= maxQueued)
      return refuse(
        req,
        res,
        state,
        `${state.waiting} requests already wait on this connection: send more once they are answered`,
      );
    state.waiting++;
    const leave = () => {
      res.off('socket', turn);
      res.off('close', leave);
      state.waiting--;
    };
    const turn = () => {
      leave();
      process.nextTick(() => res.destroyed || listener(req, res));
    };
    res.once('socket', turn);
    res.once('close', leave); // its connection went while it waited (node:http destroys it)
  };
}
