import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type AgentProcess,
  type AgentStatus,
  peersAlive,
  startAgentProcess,
} from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';
import { startOrigin, type TestOrigin } from '../harness/origin-server.ts';

const MiB = 2 ** 20;
const unavailable = natsUnavailable();

describe(
  'one origin fetch for the whole mesh (9 agents, 3 regions x 3 zones)',
  { skip: unavailable ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    let origin: TestOrigin;
    const agents: AgentProcess[] = [];
    const video = randomBytes(64 * MiB);

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-origin-'));
      nats = await startNatsServer();
      // A slow origin (64 MiB in about 4 s), so the others follow its download chunk by chunk.
      origin = await startOrigin(new Map([['/o/video.bin', video]]), {
        bytesPerSecond: 16 * MiB,
        contentType: 'video/mp4',
      });
      for (let i = 0; i < 9; i++) {
        agents.push(
          await startAgentProcess([
            ...[
              '--node-id',
              `n${i}`,
              '--region',
              `r${Math.floor(i / 3)}`,
              '--zone',
              `r${Math.floor(i / 3)}z${i % 3}`,
            ],
            ...['--store.dir', join(dir, `n${i}`), '--mesh', 'origin', '--control-plane.servers', nats.url],
            ...['--origins', `cdn/=${origin.url}`, '--store.scrub-on-start', 'false'],
          ]),
        );
      }
      for (const agent of agents) {
        await peersAlive(agent, 8);
      }
    });
    after(async () => {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      origin?.close();
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    it('9 nodes asking at the same moment cause one origin fetch and all get identical bytes', async () => {
      const expected = createHash('sha256').update(video).digest('hex');
      const results = await Promise.all(
        agents.map(async (agent) => {
          const res = await fetch(`${agent.url}/v1/objects/cdn/video.bin`);
          const body = Buffer.from(await res.arrayBuffer());
          return {
            status: res.status,
            source: res.headers.get('x-edgemesh-source'),
            type: res.headers.get('content-type'),
            digest: createHash('sha256').update(body).digest('hex'),
          };
        }),
      );
      for (const r of results) {
        assert.equal(r.status, 200);
        assert.equal(r.digest, expected);
        assert.equal(r.type, 'video/mp4');
      }
      console.log(
        `# origin: ${origin.stats.requests} request(s), ${origin.stats.bytes} bytes for a ${video.length}-byte object and 9 readers`,
      );
      assert.equal(origin.stats.requests, 1);
      assert.ok(origin.stats.bytes <= 1.05 * video.length);
      assert.equal(
        results.filter((r) => r.source === 'origin').length,
        1,
        'one node fetched from the origin',
      );
      const statuses = (await Promise.all(agents.map((a) => a.status()))) as (AgentStatus & {
        id: string;
        counters: { originFetches: number; bytesFromPeer: Record<string, number> };
      })[];
      assert.equal(
        statuses.reduce((n, s) => n + s.counters.originFetches, 0),
        1,
      );
      // Swarming: the readers got chunks from each other, not only from the node that fetched.
      const fetcher = statuses.find((s) => s.counters.originFetches === 1)!.id;
      const fromOthers = statuses.reduce(
        (n, s) =>
          n +
          Object.entries(s.counters.bytesFromPeer)
            .filter(([peer]) => peer !== fetcher)
            .reduce((m, [, bytes]) => m + bytes, 0),
        0,
      );
      console.log(`# swarm: ${fromOthers} bytes moved between readers, not from the fetching node`);
      assert.ok(fromOthers > 0, 'readers fetched chunks from each other');
    });

    it('answers 404 for what the origin lacks, and 502 when the origin fails', async () => {
      assert.equal((await fetch(`${agents[4]!.url}/v1/objects/cdn/missing.bin`)).status, 404);
      assert.equal((await fetch(`${agents[4]!.url}/v1/objects/elsewhere/no-rule`)).status, 404);
      origin.stats.failing = true;
      const res = await fetch(`${agents[5]!.url}/v1/objects/cdn/another.bin`);
      assert.equal(res.status, 502);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'OriginFailed');
      origin.stats.failing = false;
    });
  },
);
