import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
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

const MiB = 2 ** 20;
const unavailable = natsUnavailable();

/** A test origin: serves fixed objects, counts requests and body bytes, can be told to fail. */
async function startOrigin(objects: Map<string, Buffer>) {
  const stats = { requests: 0, bytes: 0, failing: false };
  const server: Server = createServer((req, res) => {
    stats.requests++;
    if (stats.failing) return void res.writeHead(500).end('origin on fire');
    const body = objects.get(req.url ?? '');
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': body.length, 'Content-Type': 'video/mp4' });
    stats.bytes += body.length;
    res.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/o/`,
    stats,
    close: () => server.close(),
  };
}

describe(
  'one origin fetch for the whole mesh (9 agents, 3 regions x 3 zones)',
  { skip: unavailable ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    let origin: Awaited<ReturnType<typeof startOrigin>>;
    const agents: AgentProcess[] = [];
    const video = randomBytes(64 * MiB);

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-origin-'));
      nats = await startNatsServer();
      origin = await startOrigin(new Map([['/o/video.bin', video]]));
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
        counters: { originFetches: number };
      })[];
      assert.equal(
        statuses.reduce((n, s) => n + s.counters.originFetches, 0),
        1,
      );
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
