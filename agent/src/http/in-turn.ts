import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { HttpError, sendError } from './errors.ts';

/** Requests one connection may have waiting behind the one being answered; more are refused. */
export const MAX_QUEUED_PER_CONNECTION = 32;

/**
 * A request listener that hands `listener` each request of a connection only when its answer's
 * turn has come. node:http parses requests pipelined on one connection as they arrive and emits
 * them at once, while their answers go out one at a time, in order: a request emitted early would
 * be admitted, authenticated and read from disk while it waits behind an answer its client may
 * never read. One connection pipelining a few hundred GETs of a large object, and reading none,
 * would so hold every admission slot of its client (all anonymous clients share one) until its
 * connection is cut, and a pipelined exchange stream would turn off the idle timeout of the answer
 * it waits behind. Here a waiting request is nothing but parsed: it is handed on when its answer gets
 * the connection (`socket`), and dropped, never handed on, when the connection goes first.
 *
 * At most `maxQueued` requests wait on one connection (the parser does not pause for requests that
 * write nothing): one more is answered at once, in its turn, with 429 TooManyRequests and
 * `Connection: close`, and `onRefused` is called. Those answers are written ahead, so node:http
 * stops reading the connection once they fill its buffer, as it does for any unread answers.
 */
export function inTurn(
  listener: RequestListener,
  onRefused: () => void,
  maxQueued = MAX_QUEUED_PER_CONNECTION,
): RequestListener {
  /** Requests waiting, by connection. */
  const waiting = new WeakMap<Socket, number>();
  return (req: IncomingMessage, res: ServerResponse) => {
    if (res.socket) return listener(req, res); // the connection's current answer: its turn now
    const connection = req.socket;
    const queued = waiting.get(connection) ?? 0;
    if (queued >= maxQueued) {
      onRefused();
      refuse(res, queued);
      return;
    }
    waiting.set(connection, queued + 1);
    const leave = () => {
      res.off('socket', turn);
      res.off('close', leave);
      waiting.set(connection, waiting.get(connection)! - 1);
    };
    const turn = () => {
      leave();
      listener(req, res);
    };
    res.once('socket', turn);
    res.once('close', leave); // its connection went while it waited (node:http destroys it)
  };
}

/** The API's 429, ending the connection after it. */
function refuse(res: ServerResponse, queued: number): void {
  sendError(
    res,
    new HttpError(
      429,
      'TooManyRequests',
      `${queued} requests already wait on this connection: send more once they are answered`,
      { 'Retry-After': '1', Connection: 'close' },
    ),
  );
}
