import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import { HttpError, sendError } from './errors.ts';

export interface ClientErrorDeps {
  counters: Counters;
  logger: Logger;
}

/** How the agent answers a request node:http's parser refused, and the reason it counts it by. */
interface Refusal {
  status: number;
  code: string;
  message: string;
  /** Its key in clientsRefused. */
  reason: 'malformed' | 'too-large' | 'timeout';
}

/**
 * The refusal a `clientError` is (Node's own choice of status, node:http socketOnError), or
 * undefined when it is no refusal but the connection's own error (ECONNRESET, EPIPE...): then
 * there is no one to answer.
 */
function refusalOf(error: NodeJS.ErrnoException & { reason?: unknown }): Refusal | undefined {
  const code = error.code ?? '';
  if (code === 'HPE_HEADER_OVERFLOW')
    return {
      status: 431,
      code: 'RequestHeaderFieldsTooLarge',
      message: 'the request headers are too large',
      reason: 'too-large',
    };
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW')
    return {
      status: 413,
      code: 'PayloadTooLarge',
      message: 'the request chunk extensions are too large',
      reason: 'too-large',
    };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return {
      status: 408,
      code: 'RequestTimeout',
      message: 'the request did not come in time',
      reason: 'timeout',
    };
  if (code.startsWith('HPE_')) {
    // llhttp's reason: a fixed text such as "Invalid method encountered", never the client's bytes.
    const why = typeof error.reason === 'string' ? `: ${error.reason}` : '';
    return {
      status: 400,
      code: 'BadRequest',
      message: `the request is not valid HTTP${why}`,
      reason: 'malformed',
    };
  }
  return undefined;
}

/**
 * A whole HTTP/1.1 answer with the API's JSON error body, closing the connection; to a HEAD, the same
 * headers and no body (as sendJson answers one: its client reads no body, and would take one for
 * garbage after the answer).
 */
function answerText(refusal: Refusal, head: boolean): string {
  const body = JSON.stringify({ error: { code: refusal.code, message: refusal.message } });
  return (
    `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status]}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    (head ? '' : body)
  );
}

/**
 * Whether the refused request is a HEAD: the request node:http parsed, if any (a chunk or the bytes
 * after it refused), else the bytes it refused, when they begin with the request line.
 */
function isHead(current: ServerResponse | null | undefined, error: { rawPacket?: unknown }): boolean {
  if (current) return current.req.method === 'HEAD';
  const bytes = error.rawPacket;
  return Buffer.isBuffer(bytes) && bytes.subarray(0, 5).toString('latin1') === 'HEAD ';
}

/**
 * The HTTP server's `clientError` listener: a request node:http's parser refused (malformed: 400;
 * headers too large: 431; chunk extensions too large: 413; not in within headersTimeout or
 * requestTimeout: 408) is answered as every other error of the API is, with its JSON error body
 * (`{ error: { code, message } }`) and `Connection: close`, in place of Node's bare status line;
 * the socket is closed once the answer is written. As Node's documentation has it, there is no
 * request or response then: the answer is written to the socket itself, and only if it can be
 * without corrupting anything: never on a connection error (ECONNRESET and the like: the client is
 * gone), on a socket no longer writable, or on one whose current response has started (its status
 * line went out: a second one would be read as part of it); those sockets are destroyed.
 *
 * Each refusal is counted in clientsRefused (`malformed`, `too-large`, `timeout`) and logged at debug
 * level only: a flood of garbage must not flood the log.
 */
export function clientErrorListener(deps: ClientErrorDeps) {
  return (error: Error & { rawPacket?: unknown }, socket: Duplex): void => {
    // node:http's own test (socketOnError): the response this connection is answering, if any. It
    // has no public accessor.
    const current = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    const code = (error as NodeJS.ErrnoException).code;
    // Bytes after a request that said `Connection: close` (Node's client writes a HEAD's body so,
    // having announced none) while its answer is still to come: that request is answered, the
    // connection closed after it (node:http), and the bytes ignored: RFC 9112 §9.6, no further
    // request is processed on it. Not a refusal.
    if (code === 'HPE_CLOSED_CONNECTION' && current) return;
    const refusal = refusalOf(error);
    if (refusal) {
      Counters.bump(deps.counters.clientsRefused, refusal.reason);
      deps.logger.debug({ err: error.message, code }, 'client refused');
    }
    if (!refusal || !socket.writable || current?.headersSent) {
      socket.destroy();
      return;
    }
    socket.end(answerText(refusal, isHead(current, error)), () => socket.destroy());
  };
}

/**
 * The HTTP server's `checkExpectation` listener, for a request whose `Expect` is not `100-continue`
 * (which node:http handles): 417 ExpectationFailed with the API's JSON error body, in place of Node's
 * bare 417, counted in clientsRefused (`expectation`). Node emits no `request` for it.
 */
export function checkExpectationListener(deps: Pick<ClientErrorDeps, 'counters'>) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    Counters.bump(deps.counters.clientsRefused, 'expectation');
    sendError(
      res,
      new HttpError(
        417,
        'ExpectationFailed',
        `Expect: ${req.headers.expect ?? ''} cannot be met: only 100-continue is supported`,
      ),
    );
  };
}
