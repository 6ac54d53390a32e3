#!/usr/bin/env node
/**
 * A local mesh to watch, no cluster needed: a nats-server (when installed; else static peers), three
 * real agent processes in three zones that find each other, a demo object stored on one and fetched,
 * verified chunk by chunk, by the others over gRPC, and an origin object that three agents ask for at
 * once and the origin serves once.
 * It stays up (printing how to poke it) until Ctrl-C; `--once` runs the demo and exits.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type AgentProcess,
  eventually,
  peersAlive,
  startAgentProcess,
} from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { createTestCa } from '../agent/harness/test-ca.ts';

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

/** A stand-in origin for the demo: serves one object under /o/clip.bin and counts requests. */
async function startOrigin(clip: Buffer) {
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    if (req.url !== '/o/clip.bin') return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': clip.length, 'Content-Type': 'video/mp4' }).end(clip);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/o/`, requests: () => requests };
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
  const missing = natsUnavailable();
  const nats = missing ? undefined : await startNatsServer();
  const origin = await startOrigin(randomBytes(Math.min(size, 16 * MiB)));
  // The mesh's CA, in files: each agent makes its key and gets its node certificate from it.
  const ca = await createTestCa('demo', join(dir, 'ca'));
  // One client token for the demo; every call to the HTTP API carries it (no token: 401).
  const token = randomBytes(24).toString('base64url');
  await writeFile(join(dir, 'tokens.yaml'), `tokens:\n  - { name: demo, token: ${token} }\n`, {
    mode: 0o600,
  });
  const auth = { Authorization: `Bearer ${token}` };
  const stopAll = async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await nats?.stop();
    origin.server.close();
  };
  try {
    for (const node of nodes) {
      const peers = agents.map((a) => `127.0.0.1:${a.grpcPort}`);
      const discovery = nats
        ? ['--mesh', 'demo', '--control-plane.servers', nats.url]
        : peers.length
          ? ['--peers', peers.join(',')]
          : [];
      agents.push(
        await startAgentProcess(
          [
            ...['--node-id', node.id, '--zone', node.zone, '--region', node.region],
            ...['--store.dir', join(dir, node.id), '--origins', `cdn/=${origin.url}`],
            ...ca.flags,
            ...['--access.tokens-file', join(dir, 'tokens.yaml')],
            ...discovery,
          ],
          undefined,
          { token },
        ),
      );
    }
    // Over NATS every agent finds both others; on static peers each knows only those started before it.
    for (const [i, agent] of agents.entries()) {
      await peersAlive(agent, nats ? agents.length - 1 : i);
    }
    line(
      nats
        ? `EdgeMesh local mesh: three agents that found each other over NATS (${nats.url}); data over gRPC, every chunk verified`
        : `EdgeMesh local mesh: three agents on static peers (${missing}); data over gRPC, every chunk verified`,
    );
    line(`Between agents: mutual TLS, each with a node certificate from the mesh CA in ${ca.dir}`);
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
      fetch(`${a.url}/v1/objects/demo/video.bin`, { method: 'PUT', body, headers: auth }).then(async (r) => ({
        ...((await r.json()) as object),
        copies: r.headers.get('x-edgemesh-copies'),
      })),
    );
    line(`PUT  demo/video.bin (${size / MiB} MiB) on edge-a: ${JSON.stringify(put)} in ${putS.toFixed(2)} s`);

    const getFrom = async (name: string, agent: AgentProcess) => {
      const [res, s] = await timed(async () => {
        const r = await fetch(`${agent.url}/v1/objects/demo/video.bin`, { headers: auth });
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
    const clips = await Promise.all(
      agents.map(async (agent) =>
        (await fetch(`${agent.url}/v1/objects/cdn/clip.bin`, { headers: auth })).headers.get(
          'x-edgemesh-source',
        ),
      ),
    );
    line(
      `ORIGIN three agents asked for cdn/clip.bin at once: sources ${clips.join(', ')}; ` +
        `the origin served ${origin.requests()} request(s)`,
    );
    line();
    for (const [i, agent] of agents.entries()) {
      const s = await agent.status();
      line(
        `  ${nodes[i]!.id}: ${s.cache.entries} object(s), ${(s.cache.bytes / MiB).toFixed(0)} MiB cached, ` +
          `peers alive ${s.peers.alive}/${s.peers.known}, sent to peers ${(s.counters.bytesToPeers / MiB).toFixed(0)} MiB, ` +
          `received ${(s.counters.bytesFromPeers / MiB).toFixed(0)} MiB`,
      );
    }
    if (values.once) return;
    line();
    line('The mesh stays up. Every call to the API carries a client token (docs/security.md). Try:');
    line(`  TOKEN=${token}`);
    line(`  curl -sS -H "Authorization: Bearer $TOKEN" ${c.url}/v1/status | head -c 400; echo`);
    line(
      `  echo hello | curl -sS -H "Authorization: Bearer $TOKEN" -X PUT --data-binary @- ${c.url}/v1/objects/hello.txt`,
    );
    line(`  curl -sS -D- -H "Authorization: Bearer $TOKEN" ${b.url}/v1/objects/hello.txt`);
    line(`  curl -sS -o /dev/null -w '%{http_code} without a token\\n' ${b.url}/v1/objects/hello.txt`);
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
