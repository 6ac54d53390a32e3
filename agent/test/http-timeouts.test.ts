import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';
import { startOrigin, type TestOrigin } from '../harness/origin-server.ts';

const MiB = 2 ** 20;

/** The agent's local clients refused so far, by why (`counters.clientsRefused` in /v1/status). */
async function refusedBy(agent: AgentProcess): Promise<Record<string, number>> {
  return ((await agent.status()) as unknown as { counters: { clientsRefused: Record<string, number> } })
    .counters.clientsRefused;
}

/**
 * The HTTP API's timeouts, on a real agent with a 1 s idle timeout: a body that stops coming, and a
 * client that stops reading, lose their connection (and hold nothing); a keep-alive connection left
 * idle goes too; an exchange stream waiting for messages stays.
 */
describe('HTTP API timeouts', () => {
  let dir: string;
  let agent: AgentProcess;
  const idleCuts = async () => (await refusedBy(agent)).idle ?? 0;
  const open = async () => {
    const socket = netConnect(Number(new URL(agent.url).port), '127.0.0.1');
    await once(socket, 'connect');
    return socket;
  };
  /** Resolves when the server closes `socket` (an end or a reset). */
  const closedByServer = (socket: Socket) =>
    new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.on('error', () => undefined);
    });

  let origin: TestOrigin;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-timeouts-'));
    // An origin slower than the idle timeout: 8 MiB at 2 MiB/s.
    origin = await startOrigin(new Map([['/o/slow.bin', Buffer.alloc(8 * MiB, 3)]]), {
      bytesPerSecond: 2 * MiB,
    });
    agent = await startAgentProcess([
      ...['--node-id', 'a', '--store.dir', dir, '--http.idle-timeout-ms', '1000'],
      ...['--origins', `o/=${origin.url}`],
    ]);
  });
  after(async () => {
    await agent?.stop();
    origin?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'keeps a connection whose body, answered before it came in whole, comes at the minimum rate or more',
    { timeout: 30_000 },
    async () => {
      const before = await refusedBy(agent);
      const socket = await open();
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.on('error', () => undefined);
      // No such route: answered 404 at once. The rest of its 20 KB body comes at 4 KB/s (the agent
      // asks 1 KiB/s over 1 s windows here) for five windows, never pausing for long.
      socket.write('PUT /v1/nope HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n');
      for (let sent = 0; sent < 20_000; sent += 400) {
        socket.write('x'.repeat(400));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // The connection is still there, and takes the next request.
      socket.write('GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n');
      await eventually(
        () => Promise.resolve((text.match(/HTTP\/1\.1 \d{3}/g) ?? []).length >= 2 ? true : undefined),
        10_000,
        'two answers',
      );
      assert.deepEqual(text.match(/HTTP\/1\.1 \d{3}/g), ['HTTP/1.1 404', 'HTTP/1.1 200']);
      socket.destroy();
      const after = await refusedBy(agent);
      assert.equal(after.slow ?? 0, before.slow ?? 0, 'not counted slow');
    },
  );

  it(
    'closes a connection whose body stops coming, and stores nothing of it',
    { timeout: 30_000 },
    async () => {
      const receiver = await fetch(`${agent.url}/v1/exchange/orders`);
      const lines = receiver.body!.getReader();
      const before = await idleCuts();
      const socket = await open();
      const closed = closedByServer(socket);
      socket.write(
        'PUT /v1/objects/stalled/doc HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789',
      );
      await closed;
      assert.equal(await idleCuts(), before + 1);
      assert.equal((await fetch(`${agent.url}/v1/objects/stalled/doc`)).status, 404);
      // The exchange stream, opened before and idle for longer than the timeout since, is still there.
      const sent = await fetch(`${agent.url}/v1/exchange/a/orders`, { method: 'POST', body: 'still here' });
      assert.equal(sent.status, 202);
      const { value } = await lines.read();
      const message = JSON.parse(new TextDecoder().decode(value).split('\n')[0]!) as { body: string };
      assert.equal(Buffer.from(message.body, 'base64').toString(), 'still here');
      await lines.cancel();
    },
  );

  it(
    'closes a connection whose client stops reading a response, and one left idle between requests',
    { timeout: 30_000 },
    async () => {
      assert.equal(
        (await fetch(`${agent.url}/v1/objects/big/doc`, { method: 'PUT', body: Buffer.alloc(64 * MiB, 7) }))
          .status,
        201,
      );
      const before = await idleCuts();
      const reader = await open();
      const closed = closedByServer(reader);
      reader.pause(); // reads nothing: the response fills the buffers and stops moving
      reader.write('GET /v1/objects/big/doc HTTP/1.1\r\nHost: a\r\n\r\n');
      await eventually(async () => ((await idleCuts()) > before ? true : undefined), 10_000, 'the cut');
      reader.resume();
      await closed;
      const cutsBefore = await idleCuts();
      const idle = await open();
      const idleClosed = closedByServer(idle);
      idle.write('GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n');
      idle.resume();
      await idleClosed; // by the keep-alive timeout, or the idle one
      assert.equal(await idleCuts(), cutsBefore, 'an idle keep-alive closed is no client refused');
    },
  );

  it(
    'cuts a stalled response with an exchange stream pipelined behind it (the stream does not lift the idle timeout before its turn)',
    { timeout: 30_000 },
    async () => {
      assert.equal(
        (
          await fetch(`${agent.url}/v1/objects/big/pipelined`, {
            method: 'PUT',
            body: Buffer.alloc(64 * MiB, 5),
          })
        ).status,
        201,
      );
      const before = await idleCuts();
      const reader = await open();
      const closed = closedByServer(reader);
      reader.pause(); // reads nothing: the first response stalls, the stream waits behind it
      reader.write(
        'GET /v1/objects/big/pipelined HTTP/1.1\r\nHost: a\r\n\r\nGET /v1/exchange/behind HTTP/1.1\r\nHost: a\r\n\r\n',
      );
      await eventually(async () => ((await idleCuts()) > before ? true : undefined), 10_000, 'the cut');
      reader.resume();
      await closed;
    },
  );

  it('counts the cut of a stalled response pipelined behind a small one', { timeout: 30_000 }, async () => {
    assert.equal(
      (await fetch(`${agent.url}/v1/objects/big/behind`, { method: 'PUT', body: Buffer.alloc(32 * MiB, 4) }))
        .status,
      201,
    );
    const before = await idleCuts();
    const reader = await open();
    const closed = closedByServer(reader);
    reader.pause(); // reads nothing: the second answer stalls
    reader.write(
      'GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /v1/objects/big/behind HTTP/1.1\r\nHost: a\r\n\r\n',
    );
    await eventually(async () => ((await idleCuts()) > before ? true : undefined), 10_000, 'the cut counted');
    reader.resume();
    await closed;
  });

  it(
    'does not cut a client while the server works for it: a miss fetched from a slow origin',
    { timeout: 60_000 },
    async () => {
      const before = await idleCuts();
      const res = await fetch(`${agent.url}/v1/objects/o/slow.bin`);
      assert.equal(res.status, 200);
      assert.equal((await res.arrayBuffer()).byteLength, 8 * MiB);
      assert.equal(await idleCuts(), before, 'nobody cut');
    },
  );
});

/**
 * Admission of pipelined requests, on a real agent that lets anonymous clients 4 requests at once: a
 * connection that pipelines a hundred GETs of a large object and reads none holds one slot (its
 * current answer's), not all of them, and another client is served meanwhile.
 */
describe('HTTP API: requests pipelined on one connection', () => {
  let dir: string;
  let agent: AgentProcess;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-pipelined-'));
    agent = await startAgentProcess([
      ...['--node-id', 'a', '--store.dir', dir],
      ...['--access.anonymous', 'all', '--access.max-concurrent-per-client', '4'],
    ]);
  });
  after(async () => {
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'hold one admission slot of their client while they wait, and those past 32 are refused',
    { timeout: 60_000 },
    async () => {
      assert.equal(
        (await fetch(`${agent.url}/v1/objects/big/obj`, { method: 'PUT', body: Buffer.alloc(16 * MiB, 9) }))
          .status,
        201,
      );
      const refused = () => refusedBy(agent);
      const hog = netConnect(Number(new URL(agent.url).port), '127.0.0.1');
      await once(hog, 'connect');
      hog.on('error', () => undefined);
      hog.pause(); // reads nothing
      hog.write('GET /v1/objects/big/obj HTTP/1.1\r\nHost: a\r\n\r\n'.repeat(60));
      // Every request parsed: all but the one answered and those waiting were refused (as pipelined here;
      // as over the limit when each pipelined request was admitted on arrival).
      const counts = await eventually(
        async () => {
          const r = await refused();
          return (r.pipelined ?? 0) + (r['over-limit'] ?? 0) >= 20 ? r : undefined;
        },
        20_000,
        'the pipelined requests parsed',
      );
      try {
        const res = await fetch(`${agent.url}/v1/objects/big/obj`, { method: 'HEAD' });
        assert.equal(res.status, 200, 'another client is admitted while the connection waits');
        // Fewer refusals than 32, or the connection would have been closed (in-turn.ts).
        assert.equal(counts.pipelined, 60 - 1 - 32, 'one answered, 32 waiting, the rest refused');
        assert.equal(
          counts['over-limit'],
          undefined,
          'no request of the connection took a slot but its current one',
        );
      } finally {
        hog.destroy();
      }
    },
  );

  it(
    'count anonymous clients by address: one that holds every slot of its own holds none of another',
    { timeout: 60_000 },
    async () => {
      const port = Number(new URL(agent.url).port);
      const getFrom = (localAddress: string) =>
        new Promise<number>((resolve, reject) => {
          httpGet(
            { host: '127.0.0.1', port, localAddress, path: '/v1/objects/big/obj', agent: false },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode!));
            },
          ).on('error', reject);
        });
      // Four stalled answers from 127.0.0.1: its four slots (the object was stored by the test before).
      const hogs: Socket[] = [];
      try {
        for (let i = 0; i < 4; i++) {
          const hog = netConnect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' });
          hogs.push(hog);
          hog.on('error', () => undefined);
          await once(hog, 'connect');
          hog.pause();
          hog.write('GET /v1/objects/big/obj HTTP/1.1\r\nHost: a\r\n\r\n');
        }
        await eventually(
          async () => ((await getFrom('127.0.0.1')) === 429 ? true : undefined),
          20_000,
          "127.0.0.1's slots taken",
        );
        assert.equal(await getFrom('127.0.0.2'), 200, 'another anonymous address is served meanwhile');
      } finally {
        for (const hog of hogs) hog.destroy();
      }
    },
  );
});

/**
 * The minimum data rate, on a real agent that asks 4 MB/s of its clients over 2 s windows: a body
 * trickled within the idle timeout loses its connection (counted `slow`, not `idle`) and is not
 * stored. Which connections are watched (a body the server holds back, an answer it has nothing
 * for, an exchange stream: none) is shown on real sockets in agent/src/http/min-rate.test.ts.
 */
describe('HTTP API: the minimum data rate', () => {
  let dir: string;
  let agent: AgentProcess;
  const refused = () => refusedBy(agent);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-min-rate-'));
    agent = await startAgentProcess([
      ...['--node-id', 'a', '--store.dir', dir],
      ...['--http.idle-timeout-ms', '2000', '--http.min-bytes-per-second', '4000000'],
    ]);
  });
  after(async () => {
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'closes a connection whose body comes too slowly, and stores nothing of it',
    { timeout: 60_000 },
    async () => {
      const before = await refused();
      const socket = netConnect(Number(new URL(agent.url).port), '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      let closed = false;
      socket.once('close', () => (closed = true));
      socket.write('PUT /v1/objects/trickled/doc HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n');
      // 100 bytes every 50 ms: never idle for long, 2 KB/s.
      const deadline = Date.now() + 30_000;
      while (!closed && Date.now() < deadline) {
        socket.write('x'.repeat(100));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      socket.destroy();
      assert.ok(closed, 'closed by the agent');
      const after = await refused();
      assert.equal((after.slow ?? 0) - (before.slow ?? 0), 1, 'counted slow');
      assert.equal(after.idle ?? 0, before.idle ?? 0, 'not idle');
      assert.equal((await fetch(`${agent.url}/v1/objects/trickled/doc`)).status, 404);
    },
  );

  it('cuts a connection whose client takes its answer too slowly', { timeout: 60_000 }, async () => {
    assert.equal(
      (await fetch(`${agent.url}/v1/objects/big/slow`, { method: 'PUT', body: Buffer.alloc(16 * MiB, 6) }))
        .status,
      201,
    );
    const before = await refused();
    // A client with a 4 KiB receive buffer that takes 2,000 bytes every 100 ms (20 KB/s), for at
    // most 30 s (node:net cannot shrink a socket's buffer; python3 is one of .ci/run's needs).
    const reader = spawn(
      'python3',
      [
        '-c',
        `
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'GET /v1/objects/big/slow HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')
t0 = time.time(); total = 0
while time.time() - t0 < 30:
    time.sleep(0.1)
    try:
        d = s.recv(2000)
    except ConnectionResetError:
        print('cut', total); sys.exit(0)
    if not d:
        print('cut', total); sys.exit(0)
    total += len(d)
print('open', total)
`,
        new URL(agent.url).port,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await once(reader, 'exit');
    assert.match(out, /^cut \d+/, 'the agent cut the connection (a reset: the kernel sends no more of it)');
    // Taken at 20 KB/s, the kernel's buffers moved nothing for seconds (the idle timeout's), or a
    // little (the rate's): either way cut, and counted once.
    const after = await refused();
    const cuts = (r: Record<string, number>) => (r.slow ?? 0) + (r.idle ?? 0);
    assert.equal(cuts(after) - cuts(before), 1, out.trim());
  });

  it(
    'closes a connection whose body, answered before it came in whole, keeps trickling',
    { timeout: 60_000 },
    async () => {
      const before = await refused();
      const socket = netConnect(Number(new URL(agent.url).port), '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      let closed = false;
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      socket.once('close', () => (closed = true));
      // No such route: answered 404 at once, and the rest of its small body is read and thrown away.
      socket.write('PUT /v1/nope HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789');
      // A byte every 100 ms: never idle for long.
      const deadline = Date.now() + 30_000;
      while (!closed && Date.now() < deadline) {
        socket.write('x');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      socket.destroy();
      assert.match(answer, /^HTTP\/1\.1 404 /, 'answered first');
      assert.ok(closed, 'then closed by the agent');
      const after = await refused();
      assert.equal((after.slow ?? 0) - (before.slow ?? 0), 1, 'counted slow');
    },
  );

  it(
    'lets a keep-alive client read its last answer to the end, however long after it was handed over',
    { timeout: 60_000 },
    async () => {
      assert.equal(
        (await fetch(`${agent.url}/v1/objects/small/slow`, { method: 'PUT', body: Buffer.alloc(MiB, 8) }))
          .status,
        201,
      );
      // 1 MiB, all in the kernel's buffers at once (the answer ends at once), read at 100 KB/s: the
      // keep-alive timeout (2 s here) comes long before the client has read it.
      const reader = spawn(
        'python3',
        [
          '-c',
          `
import socket, sys, time
s = socket.socket(); s.connect(('127.0.0.1', int(sys.argv[1])))
s.sendall(b'GET /v1/objects/small/slow HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')
data = b''
try:
    while True:
        time.sleep(0.1)
        d = s.recv(10000)
        if not d: break
        data += d
except ConnectionResetError:
    print('reset', len(data)); sys.exit(0)
print('closed', len(data) - data.index(b'\\r\\n\\r\\n') - 4)
`,
          new URL(agent.url).port,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      reader.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await once(reader, 'exit');
      assert.equal(out.trim(), `closed ${MiB}`, 'the whole answer, then the keep-alive close');
    },
  );
});
