import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { describe, it } from 'node:test';
import { continueWhenRead } from './continue.ts';
import { inTurn } from './in-turn.ts';

/**
 * A server whose listener (behind inTurn) records each request it is handed and answers it with
 * its path, except `/hold`, answered when the test calls `release`. `parsed(n)` resolves once
 * node:http has emitted n requests (before inTurn saw the last: await it to see what inTurn did).
 */
async function start(maxQueued: number) {
  const handed: string[] = [];
  const held: ServerResponse[] = [];
  let refused = 0;
  const emitted: ServerResponse[] = [];
  const requests: IncomingMessage[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const server: Server = createServer();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    emitted.push(res);
    requests.push(req);
    for (const w of waiters) if (emitted.length >= w.n) w.resolve();
  });
  // As the agent: a request with Expect: 100-continue is a request, continued only once read.
  server.on(
    'checkContinue',
    continueWhenRead((req, res) => server.emit('request', req, res)),
  );
  server.on(
    'request',
    inTurn(
      (req, res) => {
        handed.push(req.url!);
        if (req.url === '/hold') held.push(res);
        else res.end(req.url);
      },
      () => refused++,
      maxQueued,
    ),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    handed,
    emitted,
    requests,
    refused: () => refused,
    release: () => held.shift()!.end('held'),
    parsed: (n: number) =>
      new Promise<void>((resolve) => {
        if (emitted.length >= n) resolve();
        else waiters.push({ n, resolve });
      }).then(() => new Promise<void>((resolve) => setImmediate(resolve))),
    connect: async () => {
      const socket = connect(port, '127.0.0.1');
      await once(socket, 'connect');
      socket.setEncoding('latin1');
      let text = '';
      socket.on('data', (d: string) => (text += d));
      socket.on('error', () => {});
      return {
        socket,
        /** Writes the GETs of `paths` in one go (pipelined). */
        send: (...paths: string[]) =>
          socket.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join('')),
        /** Resolves with the status lines received once there are n of them. */
        statuses: async (n: number) => {
          const lines = () => text.match(/HTTP\/1\.1 \d{3}/g) ?? []; // bodies end without a newline
          while (lines().length < n) await once(socket, 'data');
          return lines().map((l) => Number(l.slice(9)));
        },
        text: () => text,
      };
    },
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('inTurn: requests pipelined on one connection', () => {
  it(
    'are handed on only when their answer gets the connection, in order, round after round',
    { timeout: 10_000 },
    async (t) => {
      const s = await start(2);
      t.after(s.close);
      const client = await s.connect();
      for (const round of [1, 2]) {
        const before = s.emitted.length;
        client.send('/hold', `/a${round}`, `/b${round}`);
        await s.parsed(before + 3);
        assert.deepEqual(s.handed.slice(-1), ['/hold'], `round ${round}: only the first is handed on yet`);
        s.release();
        await client.statuses(3 * round);
        assert.deepEqual(s.handed.slice(-3), ['/hold', `/a${round}`, `/b${round}`]);
      }
      assert.equal(s.refused(), 0, 'two waiting at most: none refused');
      assert.deepEqual(await client.statuses(6), [200, 200, 200, 200, 200, 200]);
    },
  );

  it('are never handed on when their connection goes while they wait', { timeout: 10_000 }, async (t) => {
    const s = await start(8);
    t.after(s.close);
    const client = await s.connect();
    client.send('/hold', '/a', '/b');
    await s.parsed(3);
    const waiting = s.emitted.slice(1).map((res) => once(res, 'close'));
    client.socket.destroy();
    await Promise.all(waiting); // node:http destroys the answers that waited
    s.release(); // the held answer ends on a closed connection
    assert.deepEqual(s.handed, ['/hold']);
  });

  it(
    'beyond the limit are answered 429 with Connection: close, in their turn, and handed on never',
    { timeout: 10_000 },
    async (t) => {
      const s = await start(2);
      t.after(s.close);
      const client = await s.connect();
      const closed = once(client.socket, 'close');
      client.send('/hold', '/a', '/b', '/c', '/d');
      await s.parsed(5);
      assert.deepEqual(s.handed, ['/hold']);
      assert.equal(s.refused(), 2, '/c and /d: two already waited');
      s.release();
      await closed; // after the first 429, which closes the connection
      assert.deepEqual(s.handed, ['/hold', '/a', '/b']);
      assert.deepEqual(await client.statuses(4), [200, 200, 200, 429]);
      assert.match(client.text(), /Retry-After: 1\r\n/);
      assert.match(client.text(), /"code":"TooManyRequests"/);
    },
  );
});

describe('inTurn: a connection refused more than the limit', () => {
  it(
    'is closed at once: nothing after its first refusal would ever be answered',
    { timeout: 10_000 },
    async (t) => {
      const s = await start(2);
      t.after(s.close);
      const client = await s.connect();
      const closed = new Promise((resolve) => client.socket.once('close', resolve));
      client.send('/hold', '/a', '/b', '/c', '/d', '/e', '/f'); // 2 wait, /c /d /e refused, /f...
      await closed; // ...while the first answer is still held: at the third refusal
      assert.deepEqual(s.handed, ['/hold']);
      assert.equal(client.text(), '', 'nothing answered');
    },
  );
});

describe('inTurn: requests with a body pipelined behind an answer', () => {
  it(
    'are refused 429 with Connection: close, their bodies thrown away as they come (1-byte chunks too), never kept',
    { timeout: 10_000 },
    async (t) => {
      const s = await start(8);
      t.after(s.close);
      const client = await s.connect();
      const closed = once(client.socket, 'close');
      client.send('/hold');
      const body = Buffer.alloc(100_000, 1);
      client.socket.write(`PUT /sized HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`);
      client.socket.write(body);
      // A chunked body of 1-byte chunks: a buffer each, were it kept.
      client.socket.write('PUT /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
      client.socket.write(`${'1\r\nx\r\n'.repeat(20_000)}0\r\n\r\n`);
      await s.parsed(3);
      // Both bodies read to their end while the first answer is still held: thrown away, not kept.
      await Promise.all(
        s.requests.slice(1).map((req) => (req.complete ? Promise.resolve() : once(req, 'end'))),
      );
      assert.deepEqual(
        s.requests.slice(1).map((req) => req.readableLength),
        [0, 0],
      );
      assert.deepEqual(s.handed, ['/hold']);
      assert.equal(s.refused(), 2);
      s.release();
      await closed; // after the first 429
      assert.deepEqual(await client.statuses(2), [200, 429]);
      assert.match(client.text(), /a request with a body is taken only once the answers before it/);
    },
  );

  it(
    'close their connection once more than 256 KiB of refused bodies came',
    { timeout: 10_000 },
    async (t) => {
      const s = await start(8);
      t.after(s.close);
      const client = await s.connect();
      const closed = new Promise((resolve) => client.socket.once('close', resolve)); // reset, likely
      client.send('/hold');
      client.socket.write('PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n');
      client.socket.write(Buffer.alloc(512 * 1024, 2));
      await closed; // while the first answer is still held
      assert.deepEqual(s.handed, ['/hold']);
      assert.equal(client.text(), '', 'nothing answered: the held answer had not gone out');
    },
  );

  it('waiting for 100 Continue get none, only their 429', { timeout: 10_000 }, async (t) => {
    const s = await start(8);
    t.after(s.close);
    const client = await s.connect();
    const closed = once(client.socket, 'close');
    client.send('/hold');
    client.socket.write(
      'PUT /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n',
    );
    await s.parsed(2);
    s.release();
    await closed;
    assert.deepEqual(await client.statuses(2), [200, 429]);
    assert.doesNotMatch(client.text(), /100 Continue/);
  });
});

// A connection with no pipelining at all: each request is handed on at once (its answer owns the
// connection when it is emitted).
describe('inTurn: one request at a time', () => {
  it('hands each on at once', { timeout: 10_000 }, async (t) => {
    const s = await start(0);
    t.after(s.close);
    const client = await s.connect();
    for (const path of ['/a', '/b', '/c']) {
      client.send(path);
      await client.statuses(s.handed.length + 1);
    }
    assert.deepEqual(s.handed, ['/a', '/b', '/c']);
    assert.equal(s.refused(), 0, 'none waited, so none was refused even with no room to wait');
  });
});
