import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { writeChunks } from './write-chunks.ts';

/** `server` listening on a free port of the loopback; its URL. */
async function listening(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

describe('writeChunks', () => {
  // A part never given back leaves the test waiting: the timeout makes that a failure.
  it(
    'tells `done` of every part it sent, the last one too, each only once the socket has it',
    { timeout: 30_000 },
    async () => {
      const chunkSize = 64 * 1024;
      const chunks = [randomBytes(chunkSize), randomBytes(chunkSize), randomBytes(1000)];
      const size = 2 * chunkSize + 1000;
      for (const bytes of [
        { start: 0, end: size - 1 }, // the whole object
        { start: chunkSize + 10, end: chunkSize + 20 }, // a range within one chunk
      ]) {
        const done: Uint8Array[] = [];
        const length = bytes.end - bytes.start + 1;
        let allDone!: () => void;
        const given = new Promise<void>((resolve) => (allDone = resolve));
        let finishedAt = -1;
        const server = createServer((_req, res) => {
          res.on('finish', () => (finishedAt = done.length));
          const pass = {
            read: (index: number) => Promise.resolve(chunks[index]!),
            done: (part: Uint8Array) => {
              done.push(part);
              if (Buffer.concat(done).length >= length) allDone();
            },
          };
          const first = Math.floor(bytes.start / chunkSize);
          void writeChunks(res, { size, chunkSize }, bytes, pass, chunks[first]!, () => {});
        });
        const url = await listening(server);
        try {
          const body = await new Promise<Buffer>((resolve, reject) =>
            get(url, (res) => {
              const parts: Buffer[] = [];
              res.on('data', (d: Buffer) => parts.push(d));
              res.on('end', () => resolve(Buffer.concat(parts)));
            }).on('error', reject),
          );
          assert.ok(body.equals(Buffer.concat(chunks).subarray(bytes.start, bytes.end + 1)));
          await given; // the server's last `done` follows the response's end
          assert.equal(
            Buffer.concat(done).length,
            length,
            'every byte sent was given back, the last part too',
          );
          assert.ok(finishedAt < done.length, 'the last part only once the response finished');
        } finally {
          server.close();
        }
      }
    },
  );

  it('gives back every chunk it read when the client goes away mid-response, once the response has closed', async () => {
    const chunkSize = 1024 * 1024;
    const chunks = Array.from({ length: 16 }, () => randomBytes(chunkSize));
    const size = chunks.length * chunkSize;
    const read: Buffer[] = [];
    const done: Uint8Array[] = [];
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    let allBack: (() => void) | undefined;
    const server = createServer((_req, res) => {
      const pass = {
        read: (index: number) => {
          read.push(chunks[index]!);
          return Promise.resolve(chunks[index]!);
        },
        done: (part: Uint8Array) => {
          done.push(part);
          if (done.length === read.length) allBack?.();
        },
      };
      read.push(chunks[0]!);
      writeChunks(res, { size, chunkSize }, { start: 0, end: size - 1 }, pass, chunks[0]!, () => {}).then(
        settle,
        settle,
      );
    });
    const url = await listening(server);
    try {
      await new Promise<void>((resolve) =>
        get(url, (res) => {
          let got = 0;
          res.on('data', (d: Buffer) => {
            got += d.length;
            if (got > chunkSize) res.destroy(); // gone after a chunk and a bit
          });
          res.on('close', () => resolve());
        }).on('error', () => resolve()),
      );
      await settled; // no chunk is read after this
      // Every part read goes back: those sent at once, the others once the response has closed.
      if (done.length < read.length) await new Promise<void>((resolve) => (allBack = resolve));
      assert.ok(read.length < chunks.length, `the response stopped early (${read.length} read)`);
      assert.equal(done.length, read.length);
    } finally {
      server.close();
    }
  });

  it('gives back a part written after its socket was destroyed, whose write callback never comes', async () => {
    const chunkSize = 64 * 1024;
    const chunks = Array.from({ length: 6 }, () => randomBytes(chunkSize));
    const size = chunks.length * chunkSize;
    const read: Buffer[] = [chunks[0]!];
    const done: Uint8Array[] = [];
    let allBack!: () => void;
    const back = new Promise<void>((resolve) => (allBack = resolve));
    let written!: Promise<void>;
    const server = createServer((_req, res) => {
      const pass = {
        read: (index: number) => {
          read.push(chunks[index]!);
          if (index === 3) res.socket!.destroy(); // the client reset: the response does not know yet
          return Promise.resolve(chunks[index]!);
        },
        done: (part: Uint8Array) => {
          done.push(part);
          if (done.length === read.length) allBack();
        },
      };
      written = writeChunks(
        res,
        { size, chunkSize },
        { start: 0, end: size - 1 },
        pass,
        chunks[0]!,
        () => {},
      );
    });
    const url = await listening(server);
    try {
      await new Promise<void>((resolve) =>
        get(url, (res) => {
          res.resume();
          res.on('close', () => resolve());
        }).on('error', () => resolve()),
      );
      await written;
      if (done.length < read.length) await back;
      assert.equal(done.length, read.length, 'every part read was given back');
    } finally {
      server.close();
    }
  });

  it(
    'gives back a response of one part when its client is gone, before or while it is sent (counted as served only once sent)',
    { timeout: 30_000 },
    async () => {
      // One part of 8 MiB: more than the socket takes at once, so a client that resets after its first
      // bytes leaves it unsent; and a client gone before writeChunks is called.
      const part = randomBytes(8 * 1024 * 1024);
      for (const when of ['before', 'while'] as const) {
        const done: Uint8Array[] = [];
        let served = 0; // what onPart heard: the bytes served a client counts
        let back!: () => void;
        const given = new Promise<void>((resolve) => (back = resolve));
        let written!: Promise<void>;
        const server = createServer((_req, res) => {
          const pass = {
            read: () => Promise.reject(new Error('one part: nothing more is read')),
            done: (p: Uint8Array) => {
              done.push(p);
              back();
            },
          };
          const write = () =>
            (written = writeChunks(
              res,
              { size: part.length, chunkSize: part.length },
              { start: 0, end: part.length - 1 },
              pass,
              part,
              (p) => (served += p.length),
            ));
          if (when === 'before') {
            res.socket!.destroy();
            res.once('close', () => void write());
          } else void write();
        });
        const url = await listening(server);
        try {
          await new Promise<void>((resolve) =>
            get(url, (res) => res.once('data', () => res.destroy()).once('close', resolve)).on('error', () =>
              resolve(),
            ),
          );
          await given;
          await written;
          assert.deepEqual(done, [part], `${when}: the part went back, once`);
          // Gone before: nothing was given to the response, so nothing counts as served.
          assert.equal(served, when === 'before' ? 0 : part.length, `${when}: bytes served`);
        } finally {
          server.close();
        }
      }
    },
  );
});
