#!/usr/bin/env node
/**
 * The baseline for `hit`: a minimal static file server (Node http + fs), serving files from DIR by name
 * from disk on every request. Prints {"port":N} when listening.
 */
import { createReadStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename, join } from 'node:path';

const dir = process.argv[2]!;
await mkdir(dir, { recursive: true });
async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const file = join(dir, basename(req.url ?? '/'));
  try {
    const { size } = await stat(file);
    res.writeHead(200, { 'Content-Length': size, 'Content-Type': 'application/octet-stream' });
    createReadStream(file).pipe(res);
  } catch {
    res.writeHead(404).end(); // any stat failure is a miss for this baseline
  }
}

const server = createServer((req, res) => {
  serve(req, res).catch(() => res.destroy());
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`,
  );
});
