import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * The HTTP server's `checkContinue` listener, for a request with `Expect: 100-continue`: it goes to
 * `handle` (the server's request listeners) and gets its `100 Continue` once a handler starts
 * reading its body (adds a 'data' or 'readable' listener: for await, pipe, on('data')), not, as
 * node:http does without this listener, before anything is known of the request. So a request
 * refused before its body is read (401, 403, 404, 413, 429...) is answered while the client still
 * waits, and it never sends the body: nothing of it crosses the network, and no unread body makes
 * the connection's close (sendError) reset it under the answer. An answer sent without a
 * `100 Continue` closes the connection (node:http: the client may send the body anyway).
 */
export function continueWhenRead(handle: (req: IncomingMessage, res: ServerResponse) => void) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const reading = (event: string | symbol) => {
      if (event !== 'data' && event !== 'readable') return;
      req.off('newListener', reading);
      if (!res.headersSent && !res.writableEnded) res.writeContinue();
    };
    req.on('newListener', reading);
    handle(req, res);
  };
}
