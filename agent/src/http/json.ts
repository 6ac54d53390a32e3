import type { ServerResponse } from 'node:http';

/**
 * Answers `status` with `body` as JSON: `headers` first, then `Content-Type: application/json;
 * charset=utf-8` and the body's `Content-Length`. A HEAD gets the same headers and no body.
 */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', String(Buffer.byteLength(text)));
  res.end(res.req.method === 'HEAD' ? undefined : text);
}
