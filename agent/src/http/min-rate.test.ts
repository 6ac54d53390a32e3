import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { bytesMoved, MinDataRate, waitsOnClient } from './min-rate.ts';

const WINDOW_MS = 1000;
const RATE = 10_000; // bytes a second: 10,000 over a window

/**
 * Real connections to a real node:http server, checked by hand at chosen instants: which ones the
 * server waits on, and which of those are too slow.
 */
describe('the minimum data rate of HTTP clients', () => {
  let server: Server;
  let port: number;
  /** The request in progress on each connection, as the agent's `busy` map holds them. */
  const busy = new Map<Socket, ServerResponse>();
  /** What the server does with the next request. */
  let handle: (req: IncomingMessage, res: ServerResponse) => void = () => undefined;
  const clients: Socket[] = [];

  before(async () => {
    server = createServer((req, res) => {
      const socket = req.socket;
      socket.setTimeout(60_000); // the client's turn: its idle clock runs
      busy.set(socket, res);
      res.once('close', () => busy.delete(socket));
      handle(req, res);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    for (const c of clients) c.destroy();
    server.closeAllConnections();
    server.close();
  });

  /** Opens a connection, sends `head`, and resolves with the server's side once its request is in. */
  async function request(head: string): Promise<{ client: Socket; socket: Socket }> {
    const client = connect(port, '127.0.0.1');
    clients.push(client);
    client.on('error', () => undefined);
    await once(client, 'connect');
    const known = new Set(busy.keys());
    client.write(head);
    for (;;) {
      const socket = [...busy.keys()].find((s) => !known.has(s));
      if (socket) return { client, socket };
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  const only = (socket: Socket) => [[socket, busy.get(socket)!]] as [Socket, ServerResponse][];
  /** Waits until `cond` holds, on the event loop's turns (the sockets' state comes from I/O). */
  async function until(cond: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`never: ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  it('cuts a body trickled while a handler reads it, once a window has passed below the rate', async () => {
    handle = (req) => req.on('data', () => undefined);
    const { client, socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nx');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'reading the body');
    assert.deepEqual([...rate.check(only(socket), 0)], [], 'the window starts');
    const quiet = socket.bytesRead;
    client.write('y'.repeat(100));
    await until(() => socket.bytesRead > quiet, 'the bytes in');
    assert.deepEqual([...rate.check(only(socket), WINDOW_MS / 2)], [], 'not a whole window yet');
    assert.deepEqual([...rate.check(only(socket), WINDOW_MS)], [socket], '101 bytes in a second: slow');
  });

  it('holds a body sent in bursts to the rate over the silences between them', async () => {
    handle = (req) => req.on('data', () => undefined);
    const { client, socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'reading the body');
    const send = async (n: number) => {
      const before = socket.bytesRead;
      client.write('b'.repeat(n));
      await until(() => socket.bytesRead >= before + n, 'the burst in');
    };
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    await send(RATE);
    assert.deepEqual([...rate.check(only(socket), WINDOW_MS)], [], 'a window at the rate');
    assert.deepEqual([...rate.check(only(socket), 2 * WINDOW_MS)], [], 'silent: the window goes on');
    await send(RATE);
    assert.deepEqual(
      [...rate.check(only(socket), 3 * WINDOW_MS)],
      [socket],
      'one window of bytes over two of time: half the rate',
    );
  });

  it("judges each request of a keep-alive connection over its own time, not the one before's", async () => {
    handle = (req, res) => {
      req.on('data', () => undefined);
      req.on('end', () => res.end('ok'));
    };
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    const { client, socket } = await request('PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\n\r\n');
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'reading the first body');
    assert.deepEqual([...rate.check(only(socket), 0)], [], "the first request's window starts");
    client.write('x'.repeat(600));
    await until(() => !busy.has(socket), 'the first answered');
    // The next request, well after: its body's first bytes come at once, more than the rate.
    client.write(`PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n${'y'.repeat(2 * RATE)}`);
    await until(() => busy.has(socket) && waitsOnClient(socket, busy.get(socket)!), 'reading the second');
    assert.deepEqual([...rate.check(only(socket), 10 * WINDOW_MS)], [], 'a window of its own starts');
    assert.deepEqual([...rate.check(only(socket), 10.5 * WINDOW_MS)], [], 'not a whole one yet');
  });

  it('passes over a connection already destroyed (the idle timeout cut it first)', async () => {
    handle = (req) => req.on('data', () => undefined);
    const { client, socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'reading the body');
    const res = busy.get(socket)!;
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    const before = socket.bytesRead;
    client.write('z'.repeat(100));
    await until(() => socket.bytesRead > before, 'the bytes in');
    socket.destroy();
    assert.deepEqual([...rate.check([[socket, res]], WINDOW_MS)], [], 'not cut, nor counted, twice');
  });

  it('keeps a body that comes at the rate, window after window', async () => {
    handle = (req) => req.on('data', () => undefined);
    const { client, socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'reading the body');
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    for (let i = 1; i <= 3; i++) {
      const before = socket.bytesRead;
      client.write('z'.repeat(RATE));
      await until(() => socket.bytesRead >= before + RATE, 'the bytes in');
      assert.deepEqual([...rate.check(only(socket), i * WINDOW_MS)], [], `window ${i}: at the rate`);
    }
    // A window in which nothing comes: the idle timeout's, not a slow client.
    assert.deepEqual([...rate.check(only(socket), 4 * WINDOW_MS)], []);
    // The next: a byte.
    const quiet = socket.bytesRead;
    client.write('z');
    await until(() => socket.bytesRead > quiet, 'the byte in');
    assert.deepEqual([...rate.check(only(socket), 5 * WINDOW_MS)], [socket]);
  });

  it('does not wait on a client whose body nobody reads yet (the server holds it back)', async () => {
    handle = () => undefined; // a handler busy elsewhere: no 'data' listener
    const { socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nx');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    assert.equal(waitsOnClient(socket, busy.get(socket)!), false);
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    assert.deepEqual([...rate.check(only(socket), 10 * WINDOW_MS)], []);
  });

  it('does not wait on a client whose body the server holds back (a handler that paused it)', async () => {
    handle = (req) => {
      req.on('data', () => undefined);
      req.pause(); // backpressure: a disk or a replica slower than the client
    };
    const { client, socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n');
    client.write('w'.repeat(500_000));
    await until(() => socket.isPaused(), 'the connection paused');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    assert.equal(waitsOnClient(socket, busy.get(socket)!), false);
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    assert.deepEqual([...rate.check(only(socket), 10 * WINDOW_MS)], []);
  });

  it('cuts a client that does not take its answer, but not one the server has nothing for', async () => {
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    // Nothing to send yet (an answer that waits on a peer): the server's slowness, not the client's.
    handle = (_req, res) => res.writeHead(200, { 'content-length': '100' });
    const waiting = await request('GET /k HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.deepEqual([...rate.check(only(waiting.socket), 0)], []);
    assert.deepEqual([...rate.check(only(waiting.socket), 10 * WINDOW_MS)], []);
    // 64 MiB written, as the agent writes chunks, 32 MiB at a time, to a client that reads nothing:
    // the answer waits on it.
    handle = (_req, res) => {
      res.writeHead(200, { 'content-length': String(64 * 2 ** 20) });
      const chunk = Buffer.alloc(32 * 2 ** 20);
      res.write(chunk);
      res.write(chunk);
    };
    const stalled = await request('GET /k HTTP/1.1\r\nHost: a\r\n\r\n');
    stalled.client.pause();
    const { socket } = stalled;
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'the answer backed up');
    // Taken far below the rate: reads of what the client holds, until its server writes a little more.
    const fast = new MinDataRate({ bytesPerSecond: 1e9, windowMs: WINDOW_MS });
    assert.deepEqual([...fast.check(only(socket), 0)], []);
    assert.deepEqual([...fast.check(only(socket), WINDOW_MS)], [], "nothing moved: the idle timeout's");
    // What the server wrote but the client's side has not taken is not counted as moved.
    const taken = bytesMoved(socket);
    assert.ok(
      taken < socket.bytesRead + socket.bytesWritten - 16 * 2 ** 20,
      `${taken} moved of ${socket.bytesRead} read and ${socket.bytesWritten} written`,
    );
    await until(() => {
      while (stalled.client.read() !== null);
      return bytesMoved(socket) > taken;
    }, 'a little more taken');
    await until(() => waitsOnClient(socket, busy.get(socket)!), 'backed up again');
    assert.deepEqual([...fast.check(only(socket), 2 * WINDOW_MS)], [socket]);
  });

  it('exempts a connection whose idle clock is off (the server works, an exchange stream)', async () => {
    handle = (req) => {
      req.on('data', () => undefined);
      req.socket.setTimeout(0);
    };
    const { socket } = await request('PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nx');
    const rate = new MinDataRate({ bytesPerSecond: RATE, windowMs: WINDOW_MS });
    assert.equal(waitsOnClient(socket, busy.get(socket)!), false);
    assert.deepEqual([...rate.check(only(socket), 0)], []);
    assert.deepEqual([...rate.check(only(socket), 10 * WINDOW_MS)], []);
  });
});
