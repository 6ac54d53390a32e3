#!/usr/bin/env node
/**
 * The baseline for `hit`, `load` and `ingest`: a minimal file server (Node http + fs) over the files
 * in DIR, by name. GET reads the file from disk on every request: streamed (createReadStream, the
 * default), or with `--read-file` read whole (fs.readFile, the 10-line server). PUT writes the
 * body to the file through a write stream while hashing it with SHA-256 (one hash update per piece,
 * as it arrives), fsyncs it before answering when started with `--fsync`, and answers 201 with the
 * hex digest. Prints {"port":N} when listening.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename, join } from 'node:path';

const dir = process.argv[2]!;
const readWhole = process.argv.includes('--read-file');
const fsync = process.argv.includes('--fsync');
await mkdir(dir, { recursive: true });

async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const file = join(dir, basename(req.url ?? '/'));
  if (req.method === 'PUT') return store(file, req, res);
  if (readWhole) {
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch {
      res.writeHead(404).end(); // any read failure is a miss for this baseline
      return;
    }
    res.writeHead(200, { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' });
    res.end(data);
    return;
  }
  try {
    const { size } = await stat(file);
    res.writeHead(200, { 'Content-Length': size, 'Content-Type': 'application/octet-stream' });
    createReadStream(file).pipe(res);
  } catch {
    res.writeHead(404).end(); // any stat failure is a miss for this baseline
  }
}

async function store(file: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for await (const piece of req) {
    hash.update(piece as Buffer);
    if (!out.write(piece)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  if (fsync) {
    const handle = await open(file, 'r');
    await handle.sync();
    await handle.close();
  }
  res.writeHead(201, { 'Content-Type': 'text/plain' }).end(hash.digest('hex'));
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
