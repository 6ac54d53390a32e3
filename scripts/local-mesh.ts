#!/usr/bin/env node
/**
 * A local mesh to watch, no cluster needed: three real agent processes in three zones with static
 * peers, a demo object stored on one and fetched, verified chunk by chunk, by the others over gRPC.
 * It stays up (printing how to poke it) until Ctrl-C; `--once` runs the demo and exits.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type AgentProcess, eventually, startAgentProcess } from '../agent/harness/agent-process.ts';

const { values } = parseArgs({
  options: {
    once: { type: 'boolean', default: false },
    'size-mib': { type: 'string', default: '64' },
    dir: { type: 'string', default: '.edgemesh-demo' },
  },
});
const MiB = 2 ** 20;
const size = Number(values['size-mib']) * MiB;
const dir = resolve(values.dir);
const line = (s = '') => process.stdout.write(`${s}\n`);

async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await run();
  return [result, (performance.now() - start) / 1000];
}

async function main(): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const nodes: { id: string; zone: string; region: string }[] = [
    { id: 'edge-a', zone: 'zone-a', region: 'region-1' },
    { id: 'edge-b', zone: 'zone-b', region: 'region-1' },
    { id: 'edge-c', zone: 'zone-c', region: 'region-2' },
  ];
  const agents: AgentProcess[] = [];
  const stopAll = () => Promise.all(agents.map((a) => a.stop()));
  try {
    for (const node of nodes) {
      const peers = agents.map((a) => `127.0.0.1:${a.grpcPort}`);
      agents.push(
        await startAgentProcess([
          ...['--node-id', node.id, '--zone', node.zone, '--region', node.region],
          ...['--store.dir', join(dir, node.id)],
          ...(peers.length ? ['--peers', peers.join(',')] : []),
        ]),
      );
    }
    line('EdgeMesh local mesh: three agents, static peers, data over gRPC, every chunk verified');
    line();
    for (const [i, a] of agents.entries()) {
      line(
        `  ${nodes[i]!.id}  ${nodes[i]!.zone}/${nodes[i]!.region}  http ${a.url}  grpc 127.0.0.1:${a.grpcPort}`,
      );
    }
    line();

    const [a, b, c] = agents as [AgentProcess, AgentProcess, AgentProcess];
    const body = randomBytes(size);
    const digest = createHash('sha256').update(body).digest('hex');
    const [put, putS] = await timed(async () =>
      (await fetch(`${a.url}/v1/objects/demo/video.bin`, { method: 'PUT', body })).json(),
    );
    line(`PUT  demo/video.bin (${size / MiB} MiB) on edge-a: ${JSON.stringify(put)} in ${putS.toFixed(2)} s`);

    const getFrom = async (name: string, agent: AgentProcess) => {
      const [res, s] = await timed(async () => {
        const r = await fetch(`${agent.url}/v1/objects/demo/video.bin`);
        return { source: r.headers.get('x-edgemesh-source'), bytes: Buffer.from(await r.arrayBuffer()) };
      });
      const same = createHash('sha256').update(res.bytes).digest('hex') === digest;
      line(
        `GET  from ${name}: source=${res.source}  ${(res.bytes.length / MiB).toFixed(0)} MiB in ${s.toFixed(2)} s ` +
          `(${(res.bytes.length / 1e6 / s).toFixed(0)} MB/s)  identical=${same}`,
      );
      if (!same) throw new Error('demo: bytes differ');
    };
    // Fetched chunks are served as soon as they are verified; the copy is local once all are on disk.
    const stored = (agent: AgentProcess) =>
      eventually(
        async () => ((await agent.status()).cache.entries > 0 ? true : undefined),
        30_000,
        'the copy',
      );
    await getFrom('edge-b', b);
    await getFrom('edge-c', c);
    await Promise.all([stored(b), stored(c)]);
    await getFrom('edge-b', b);
    line();
    for (const [i, agent] of agents.entries()) {
      const s = await agent.status();
      line(
        `  ${nodes[i]!.id}: ${s.cache.entries} object(s), ${(s.cache.bytes / MiB).toFixed(0)} MiB cached, ` +
          `peers alive ${s.peers.alive}/${s.peers.known}, sent to peers ${(s.counters.bytesToPeers / MiB).toFixed(0)} MiB, ` +
          `received ${(Object.values(s.counters.bytesFromPeer).reduce((x, y) => x + y, 0) / MiB).toFixed(0)} MiB`,
      );
    }
    if (values.once) return;
    line();
    line('The mesh stays up. Try:');
    line(`  curl -sS ${c.url}/v1/status | head -c 400; echo`);
    line(`  echo hello | curl -sS -X PUT --data-binary @- ${c.url}/v1/objects/hello.txt`);
    line(`  curl -sS -D- ${b.url}/v1/objects/hello.txt`);
    line(`  curl -sS ${b.url}/metrics | grep ^edgemesh_`);
    line('Ctrl-C stops it.');
    await new Promise<void>((done) => {
      process.once('SIGINT', done);
      process.once('SIGTERM', done);
    });
  } finally {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`local mesh failed: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
