import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { testPeer } from '../harness/test-ca.ts';
import { natsUnavailable, type NatsServer, startNatsServer } from '../harness/nats-server.ts';

const MiB = 2 ** 20;
const missing = natsUnavailable();

/**
 * Stores too small for what is written: older objects are evicted everywhere. A read of one is a
 * miss (404), not a fault (502), though holders were once known for it (found by `npm run soak`).
 */
describe('objects evicted everywhere', { skip: missing ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  const agents: AgentProcess[] = [];
  /** Keys every agent answered 404 for: evicted everywhere. */
  const goneEverywhere: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-eviction-'));
    nats = await startNatsServer();
    for (let i = 0; i < 3; i++)
      agents.push(
        await startAgentProcess([
          ...['--node-id', `e${i}`, '--zone', `z${i}`, '--mesh', 'evict', '--store.dir', join(dir, `e${i}`)],
          ...[
            '--control-plane.servers',
            nats.url,
            '--replication.factor',
            '3',
            '--replication.write-copies',
            '2',
          ],
          ...['--store.max-bytes', String(32 * MiB)],
        ]),
      );
    await Promise.all(agents.map((a) => peersAlive(a, 2)));
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers a read of an object no node holds any more with 404, and the rest with their bytes', async () => {
    const bodies: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      bodies.push(randomBytes(2 * MiB));
      const res = await fetch(`${agents[i % 3]!.url}/v1/objects/evict/${i}`, {
        method: 'PUT',
        body: bodies[i],
      });
      assert.equal(res.status, 201);
    }
    const statuses: Record<number, number> = {};
    const reading = performance.now();
    for (let i = 0; i < 40; i++) {
      let misses = 0;
      for (const agent of agents) {
        const res = await fetch(`${agent.url}/v1/objects/evict/${i}`);
        const body = Buffer.from(await res.arrayBuffer());
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 200) assert.deepEqual(body, bodies[i], `evict/${i}: its own bytes`);
        if (res.status === 404) misses++;
      }
      if (misses === agents.length) goneEverywhere.push(`evict/${i}`);
    }
    const seconds = ((performance.now() - reading) / 1000).toFixed(1);
    console.log(
      `# reads of 40 objects of 2 MiB on 3 stores of 32 MiB: ${JSON.stringify(statuses)} in ${seconds} s`,
    );
    assert.deepEqual(Object.keys(statuses).sort(), ['200', '404'], 'a hit or a miss, never a fault');
  });

  it('leaves no owner naming a holder that let the object go (Release), so no reader is sent to ask it', async () => {
    assert.ok(goneEverywhere.length > 0, 'some objects were evicted everywhere (found by the test above)');
    // Every agent owns every key here (R = 3); each had recorded the others as holders of what they
    // stored, for 10 minutes unless told otherwise.
    const owners = await Promise.all(
      agents.map((agent) => testPeer(`127.0.0.1:${agent.grpcPort}`, { mesh: 'evict' })),
    );
    try {
      for (const key of goneEverywhere)
        for (const owner of owners)
          await eventually(
            async () => ((await owner.getManifest(key)) === undefined ? true : undefined),
            10_000,
            `${owner.id} to name no holder of ${key}`,
          );
    } finally {
      for (const owner of owners) owner.close();
    }
  });
});
