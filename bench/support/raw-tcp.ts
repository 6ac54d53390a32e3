#!/usr/bin/env node
/**
 * The practical limit for moving bytes between two Node processes here: a plain TCP stream.
 *   raw-tcp.ts serve        listens on 127.0.0.1:0, prints {"port":N}, then for one connection
 *                           prints {"bytes":N,"seconds":S} from first to last byte and exits
 *   raw-tcp.ts send PORT N  sends N bytes in 1 MiB writes with backpressure
 */
import { createConnection, createServer } from 'node:net';

const [mode, a, b] = process.argv.slice(2);
if (mode === 'serve') {
  const server = createServer((socket) => {
    let bytes = 0;
    let start = 0;
    socket.on('data', (d) => {
      if (bytes === 0) start = performance.now();
      bytes += d.length;
    });
    socket.on('end', () => {
      process.stdout.write(`${JSON.stringify({ bytes, seconds: (performance.now() - start) / 1000 })}\n`);
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(
      `${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`,
    );
  });
} else if (mode === 'send') {
  const total = Number(b);
  const block = Buffer.alloc(2 ** 20, 7);
  const socket = createConnection({ host: '127.0.0.1', port: Number(a) }, () => {
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(block.length, total - sent);
        sent += n;
        if (!socket.write(n === block.length ? block : block.subarray(0, n)))
          return void socket.once('drain', pump);
      }
      socket.end();
    };
    pump();
  });
} else {
  process.stderr.write('usage: raw-tcp.ts serve | send PORT BYTES\n');
  process.exit(2);
}
