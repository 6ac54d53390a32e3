import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';

const unavailable = natsUnavailable();

describe('mesh-wide purge with tombstones', { skip: unavailable ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  const agents = new Map<number, AgentProcess>();
  const start = async (i: number) => {
    const agent = await startAgentProcess([
      ...['--node-id', `n${i}`, '--zone', `z${i}`, '--region', 'r1', '--store.dir', join(dir, `n${i}`)],
      ...['--mesh', 'purge', '--control-plane.servers', nats.url, '--replication.write-copies', '3'],
      ...['--membership.probe-interval-ms', '200', '--membership.suspicion-timeout-ms', '600'],
    ]);
    agents.set(i, agent);
    return agent;
  };
  const status = (key: string, agent: AgentProcess) =>
    fetch(`${agent.url}/v1/objects/${key}`).then((r) => r.status);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-purge-'));
    nats = await startNatsServer();
    for (let i = 0; i < 4; i++) await start(i);
    for (const agent of agents.values()) await peersAlive(agent, 3);
  });
  after(async () => {
    await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('removes an object everywhere, and a node that was away does not bring it back', async () => {
    const body = randomBytes(200_000);
    assert.equal(
      (await fetch(`${agents.get(0)!.url}/v1/objects/p/one`, { method: 'PUT', body })).status,
      201,
    );
    assert.equal(await status('p/one', agents.get(3)!), 200); // n3 holds a copy too
    await agents.get(3)!.stop('SIGKILL'); // n3 is away, its disk keeps the copy
    agents.delete(3);

    assert.equal((await fetch(`${agents.get(1)!.url}/v1/objects/p/one`, { method: 'DELETE' })).status, 204);
    for (const agent of agents.values()) {
      let last: number | undefined;
      await eventually(
        async () => ((last = await status('p/one', agent)) === 404 ? true : undefined),
        5000,
        'purged',
      ).catch(() => assert.fail(`${agent.url}: still answers ${last} after the purge`));
    }

    const back = await start(3);
    await peersAlive(back, 3);
    await eventually(
      async () => ((await status('p/one', back)) === 404 ? true : undefined),
      10_000,
      'stale copy dropped',
    );
    for (const agent of agents.values()) assert.equal(await status('p/one', agent), 404, 'not resurrected');

    // A new version written after the purge is a new object.
    const again = randomBytes(1000);
    assert.equal(
      (await fetch(`${agents.get(2)!.url}/v1/objects/p/one`, { method: 'PUT', body: again })).status,
      201,
    );
    const res = await fetch(`${agents.get(0)!.url}/v1/objects/p/one`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), again);
  });

  it('leaves no chunk bytes behind for an object of repeated chunks, fetched from peers and purged', async () => {
    const chunkBytes = async (agent: AgentProcess) =>
      ((await agent.status()) as unknown as { cache: { chunkBytes: number } }).cache.chunkBytes;
    const before = new Map<AgentProcess, number>();
    for (const agent of agents.values()) before.set(agent, await chunkBytes(agent));
    // 8 MiB of zeros: every chunk the same, which once left one chunk's bytes counted for ever.
    const zeros = Buffer.alloc(8 * 2 ** 20);
    assert.equal(
      (await fetch(`${agents.get(0)!.url}/v1/objects/p/zeros`, { method: 'PUT', body: zeros })).status,
      201,
    );
    for (const agent of agents.values()) {
      const res = await fetch(`${agent.url}/v1/objects/p/zeros`);
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(zeros), `${agent.url}: the bytes`);
    }
    assert.equal((await fetch(`${agents.get(2)!.url}/v1/objects/p/zeros`, { method: 'DELETE' })).status, 204);
    // Back to what it held before, give or take what the test before may still be settling (a
    // restarted agent dropping its stale copy, a read caching a 1000-byte object): far less than
    // the one 4 MiB chunk a repeated chunk once left behind.
    const settled = (agent: AgentProcess, bytes: number) => Math.abs(bytes - before.get(agent)!) < 2 ** 20;
    for (const agent of agents.values())
      await eventually(
        async () => (settled(agent, await chunkBytes(agent)) ? true : undefined),
        10_000,
        'its chunk bytes released',
      ).catch(async () =>
        assert.fail(`${agent.url}: ${await chunkBytes(agent)} chunk bytes, ${before.get(agent)} before`),
      );
  });

  it('answers 404 to a DELETE of a key no node has', async () => {
    assert.equal(
      (await fetch(`${agents.get(0)!.url}/v1/objects/never/was`, { method: 'DELETE' })).status,
      404,
    );
  });
});
