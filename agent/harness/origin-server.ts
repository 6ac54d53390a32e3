import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UploadLimiter } from '../src/transport/upload-limiter.ts';

/** Bytes written per paced slice. */
const SLICE = 64 * 1024;

export interface TestOrigin {
  /** Base URL; objects are served at `${url}${name}`. */
  url: string;
  /** Requests seen, body bytes sent, and a switch that makes every request fail with 500. */
  stats: { requests: number; bytes: number; failing: boolean };
  close(): void;
}

/**
 * An origin for tests and benchmarks: serves fixed objects (by path, e.g. `/o/video.bin`) with a
 * Content-Length, counts requests and body bytes, and can cap its total upload at `bytesPerSecond`
 * (shared by all responses, in arrival order) like a slow origin behind a thin link.
 */
export async function startOrigin(
  objects: Map<string, Buffer>,
  opts: { bytesPerSecond?: number; contentType?: string } = {},
): Promise<TestOrigin> {
  const stats = { requests: 0, bytes: 0, failing: false };
  const pacer = new UploadLimiter(opts.bytesPerSecond ?? 0, SLICE);
  const server: Server = createServer((req, res) => {
    stats.requests++;
    if (stats.failing) return void res.writeHead(500).end('origin on fire');
    const body = objects.get(req.url ?? '');
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, {
      'Content-Length': body.length,
      'Content-Type': opts.contentType ?? 'application/octet-stream',
    });
    if (!pacer.limited) {
      stats.bytes += body.length;
      return void res.end(body);
    }
    (async () => {
      for (let offset = 0; offset < body.length && !res.destroyed; offset += SLICE) {
        const slice = body.subarray(offset, offset + SLICE);
        await pacer.acquire(slice.length, '');
        stats.bytes += slice.length;
        if (!res.write(slice)) await once(res, 'drain').catch(() => undefined);
      }
      res.end();
    })().catch(() => res.destroy()); // a test origin: a failed body is a cut connection
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/o/`,
    stats,
    close: () => {
      pacer.close();
      server.closeAllConnections();
      server.close();
    },
  };
}
