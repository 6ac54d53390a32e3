#!/usr/bin/env node
/**
 * The transfer bench's limit pipeline: only the work a peer-to-peer fetch cannot avoid, in two
 * processes like the mesh's two agents, with mutual TLS between them (node certificates from the
 * given file CA, as agents get theirs).
 *   limit-pipeline.ts send CA_CERT CA_KEY DIR
 *       a TLS server; a connection names a file of DIR in its first line, and gets its size (8 bytes)
 *       and then the file, streamed in 1 MiB reads. Prints {"port":N}.
 *   limit-pipeline.ts receive CA_CERT CA_KEY DIR
 *       an HTTP server; GET /PORT/NAME connects to the sender at 127.0.0.1:PORT and asks for NAME; it
 *       hashes each 4 MiB chunk with SHA-256 as its bytes arrive, and once a chunk is whole, serves it
 *       to the client and writes it to a file in DIR, with backpressure from both. Prints {"port":N}.
 * No framing, no manifest, no store bookkeeping: what is left is reading, TLS both ways, hashing,
 * writing and serving the bytes.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { basename, join } from 'node:path';
import { connect, createServer as createTlsServer } from 'node:tls';
import { testCredentials } from '../../agent/harness/test-ca.ts';

const CHUNK = 4 * 2 ** 20;
/** Bytes held for the disk before the sender is paused (the agents hold 64 MiB). */
const WRITE_BEHIND = 64 * 2 ** 20;
const [mode, certFile, keyFile, path] = process.argv.slice(2);
if ((mode !== 'send' && mode !== 'receive') || !certFile || !keyFile || !path) {
  process.stderr.write('usage: limit-pipeline.ts send|receive CA_CERT CA_KEY DIR\n');
  process.exit(2);
}
const me = await testCredentials(mode === 'send' ? 'limit-a' : 'limit-b', { ca: { certFile, keyFile } });
const tls = { cert: me.certPem, key: me.keyPem, ca: readFileSync(certFile) };
const printPort = (address: unknown) =>
  process.stdout.write(`${JSON.stringify({ port: (address as { port: number }).port })}\n`);

if (mode === 'send') {
  const server = createTlsServer({ ...tls, requestCert: true, rejectUnauthorized: true }, (socket) => {
    let asked = '';
    const onName = (data: Buffer) => {
      asked += data.toString('latin1');
      if (!asked.includes('\n')) return;
      socket.off('data', onName);
      const file = join(path, basename(asked.split('\n', 1)[0]!));
      stat(file).then(
        ({ size }) => {
          const header = Buffer.alloc(8);
          header.writeBigUInt64BE(BigInt(size));
          socket.write(header); // the size first, as a manifest tells the mesh's receiver
          createReadStream(file, { highWaterMark: 2 ** 20 })
            .on('error', () => socket.destroy())
            .pipe(socket);
        },
        () => socket.destroy(),
      );
    };
    socket.on('data', onName);
  });
  server.listen(0, '127.0.0.1', () => printPort(server.address()));
} else {
  let n = 0;
  const server = createHttpServer((req, res) => {
    const [, port, name] = req.url!.split('/');
    const socket = connect({ ...tls, host: '127.0.0.1', port: Number(port), servername: 'limit-a' });
    socket.write(`${name}\n`);
    const opened = open(join(path, `object-${n++}`), 'w');
    let writes: Promise<unknown> = opened;
    let header: Buffer | undefined = Buffer.alloc(0);
    let hash = createHash('sha256');
    let parts: Buffer[] = []; // the chunk under way
    let inChunk = 0;
    let unwritten = 0; // bytes handed to the disk, not yet written
    let position = 0;
    let clientFull = false;
    const resume = () => {
      if (!clientFull && unwritten < WRITE_BEHIND) socket.resume();
    };
    const fail = (error: Error) => {
      socket.destroy();
      res.destroy(error);
    };
    res.on('drain', () => {
      clientFull = false;
      resume();
    });
    /**
     * A whole chunk (or the last): its hash is done, then it is served (one write for all its parts)
     * and written to the file (one writev, no copy). The mesh serves only verified chunks too.
     */
    const chunkDone = () => {
      hash.digest();
      hash = createHash('sha256');
      const batch = parts;
      const bytes = inChunk;
      parts = [];
      inChunk = 0;
      res.cork();
      for (const part of batch) if (!res.write(part)) clientFull = true;
      process.nextTick(() => res.uncork());
      const at = position;
      position += bytes;
      unwritten += bytes;
      writes = writes
        .then(() => opened)
        .then((f) => f.writev(batch, at))
        .then(() => {
          unwritten -= bytes;
          resume();
        });
      writes.catch(fail);
      if (clientFull || unwritten >= WRITE_BEHIND) socket.pause();
    };
    socket.on('data', (data: Buffer) => {
      if (header) {
        header = Buffer.concat([header, data]);
        if (header.length < 8) return;
        res.writeHead(200, {
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(header.readBigUInt64BE(0)),
        });
        data = header.subarray(8);
        header = undefined;
      }
      for (let offset = 0; offset < data.length;) {
        const take = Math.min(CHUNK - inChunk, data.length - offset);
        const part = data.subarray(offset, offset + take);
        hash.update(part);
        parts.push(part);
        inChunk += take;
        offset += take;
        if (inChunk === CHUNK) chunkDone();
      }
    });
    socket.on('end', () => {
      if (header) return fail(new Error(`the sender has no ${name}`)); // it hung up before the size
      if (inChunk > 0) chunkDone();
      writes
        .then(() => opened)
        .then((f) => f.close())
        .then(() => res.end(), fail);
    });
    socket.on('error', fail);
  });
  server.listen(0, '127.0.0.1', () => printPort(server.address()));
}
