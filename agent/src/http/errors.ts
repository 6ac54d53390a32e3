import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  IncompleteBodyError,
  InsufficientStorageError,
  IntegrityError,
  ObjectNotFoundError,
  ObjectPurgedError,
  ObjectTooLargeError,
  StaleVersionError,
} from '../cache/errors.ts';
import { OriginError } from '../fetch/origin.ts';
import { PeerFetchError } from '../fetch/download.ts';
import { TooManyFetchesError } from '../fetch/fetch-limits.ts';
import type { Logger } from '../telemetry/logger.ts';
import { sendJson } from './json.ts';
import { clientLeft } from './outcome.ts';

/** An error meant for the HTTP client, with its status and a stable machine-readable code. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** Maps any error to the status and code the API documents; unknown errors are 500s. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof ObjectNotFoundError) return new HttpError(404, 'NotFound', error.message);
  if (error instanceof ObjectTooLargeError) return new HttpError(413, 'PayloadTooLarge', error.message);
  if (error instanceof IncompleteBodyError) return new HttpError(400, 'IncompleteBody', error.message);
  if (error instanceof InsufficientStorageError)
    return new HttpError(507, 'InsufficientStorage', error.message);
  // No peer failed: none holds it any more (evicted everywhere, and the holders it was known by let
  // it go). That is a miss, not a fault.
  if (error instanceof PeerFetchError && error.gone)
    return new HttpError(404, 'NotFound', `${error.key} is held by no node any more`);
  if (error instanceof PeerFetchError) return new HttpError(502, 'PeerFetchFailed', error.message);
  if (error instanceof OriginError) return new HttpError(502, 'OriginFailed', error.message);
  if (error instanceof IntegrityError) return new HttpError(502, 'IntegrityError', error.message);
  if (error instanceof TooManyFetchesError)
    return new HttpError(503, 'Busy', error.message, { 'Retry-After': '1' });
  if (error instanceof StaleVersionError) return new HttpError(409, 'NewerVersionHeld', error.message);
  if (error instanceof ObjectPurgedError) return new HttpError(409, 'Purged', error.message);
  return new HttpError(500, 'Internal', 'internal error');
}

/** Headers of an object that a GET may have set before it failed: an error answer is not that object. */
const OBJECT_HEADERS = [
  'etag',
  'last-modified',
  'content-range',
  'content-type',
  'accept-ranges',
  'x-edgemesh-source',
];

/**
 * The most of a body an error answer leaves unread that node:http may still read, and throw away, to
 * keep the connection alive (as Go's net/http does, with the same bound): a small body has mostly
 * come in by the time it is refused (often in the packet after the headers), and closing for it
 * would cost the client a new connection for nothing.
 */
export const DISCARDED_BODY_BYTES = 256 * 1024;

/**
 * Whether an error answer to `req` closes its connection: its body has not come in whole and may be
 * longer than DISCARDED_BODY_BYTES (a Transfer-Encoding, or a larger Content-Length). (A request
 * without a body may not be `complete` yet while its 'request' event runs.)
 */
export function bodyLeftUnread(req: IncomingMessage): boolean {
  if (req.complete) return false;
  if (req.headers['transfer-encoding'] !== undefined) return true;
  return Number(req.headers['content-length'] ?? 0) > DISCARDED_BODY_BYTES;
}

/**
 * Sends `{ error: { code, message } }`, unless the response has already started (it is cut then).
 * An error answer to a request whose body has not been read whole (bodyLeftUnread: refused before it
 * was read, at any step: 401, 403, 404, 413, 429...) says `Connection: close`, and the connection
 * closes once it is sent: node:http would otherwise read the rest of the body, whatever its length,
 * and throw it away to keep the connection alive. A client that waits for `100 Continue`
 * (continueWhenRead) has sent none of it; one that reads while it sends gets the answer; one that
 * reads only once it has sent everything may see the connection reset instead (docs/agent.md).
 */
export function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy(error);
    return;
  }
  for (const name of OBJECT_HEADERS) res.removeHeader(name);
  const headers = bodyLeftUnread(res.req) ? { ...error.headers, Connection: 'close' } : error.headers;
  sendJson(res, error.status, { error: { code: error.code, message: error.message } }, headers);
}

/**
 * Answers `error`, the failure of `req`, with toHttpError and sendError, and logs it: a 5xx at error
 * level with its stack, but Busy (load shedding: warn, no stack, or a loaded node would flood its log
 * exactly when it is loaded). A client that went away (clientLeft: its request aborted under it) is
 * answered nothing, as no one is there to read it, and logged at debug without a stack: leaving is
 * the client's choice, not a server fault, routine (a player that seeks, an upload cancelled), and
 * counted by the request metric (error.type `aborted`); at info, a client that opens and abandons
 * requests in a loop would write a line each. Any other failure after the client left is logged as
 * it would be had it stayed.
 */
export function answerFailure(
  logger: Logger,
  req: IncomingMessage,
  res: ServerResponse,
  error: unknown,
): void {
  if (clientLeft(req, res, error)) {
    const { message, code } = error as NodeJS.ErrnoException;
    logger.debug({ url: req.url, method: req.method, err: message, code }, 'client went away');
    return;
  }
  const httpError = toHttpError(error);
  if (httpError.code === 'Busy') logger.warn({ url: req.url, err: httpError.message }, 'busy');
  else if (httpError.status >= 500) logger.error({ err: error, url: req.url }, 'request failed');
  if (res.closed) return; // gone: nothing can be answered
  sendError(res, httpError);
}
