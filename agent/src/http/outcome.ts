import type { IncomingMessage, ServerResponse } from 'node:http';

/** `error.type` of a response that was not completely sent: its connection closed first. */
export const ABORTED = 'aborted';

/** What a request came to, as OpenTelemetry's HTTP semantic conventions record a server request. */
export interface Outcome {
  /** `http.response.status_code`: only when a status line was sent. */
  status?: number;
  /** `error.type`: `aborted` when the response was not completely sent. */
  errorType?: string;
}

/**
 * The outcome of `res` (for its request metric and span): its status only if its status line went
 * out (headersSent), and `aborted` if its connection closed before the response had gone out whole
 * (the client went away, or the agent cut short a response it could not complete). Read when the
 * response has closed, or earlier for what it is so far (a response still being sent is no error).
 */
export function responseOutcome(res: ServerResponse): Outcome {
  const outcome: Outcome = {};
  if (res.headersSent) outcome.status = res.statusCode;
  if (res.closed && !res.writableFinished) outcome.errorType = ABORTED;
  return outcome;
}

/** Errors of a stream whose connection closed under it (a request's body, a response being written). */
const CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * Whether `error`, a request's failure, is its client going away: the response closed before it had
 * gone out whole, and the error is the request's own abort (node:http's `aborted`, ECONNRESET) or a
 * stream cut by the closed connection. Any other failure is the server's, even if the client has
 * gone meanwhile (an internal error then is still one).
 */
export function clientLeft(req: IncomingMessage, res: ServerResponse, error: unknown): boolean {
  if (!res.closed || res.writableFinished) return false;
  if (error !== null && error === req.errored) return true;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code !== undefined && CONNECTION_ERRORS.has(code);
}
