import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';
import { startOrigin, type TestOrigin } from '../harness/origin-server.ts';

const MiB = 2 ** 20;

/**
 * The HTTP API's timeouts, on a real agent with a 1 s idle timeout: a body that stops coming, and a
 * client that stops reading, lose their connection (and hold nothing); a keep-alive connection left
 * idle goes too; an exchange stream waiting for messages stays.
 */
describe('HTTP API timeouts', () => {
  let dir: string;
  let agent: AgentProcess;
  const idleCuts = async () =>
    ((await agent.status()) as unknown as { counters: { clientsRefused: Record<string, number> } }).counters
      .clientsRefused.idle ?? 0;
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
