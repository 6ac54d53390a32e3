import type { ServerResponse } from 'node:http';
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
import { sendJson } from './json.ts';

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

/** Sends `{ error: { code, message } }`, unless the response has already started. */
export function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy(error);
    return;
  }
  for (const name of OBJECT_HEADERS) res.removeHeader(name);
  sendJson(res, error.status, { error: { code: error.code, message: error.message } }, error.headers);
}
