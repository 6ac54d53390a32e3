/**
 * swarm: N agents, each with its upload capped at u, and an origin capped at u_s, all asking for the
 * same F-byte object at the same moment. Side by side in the same run: the naive way (all N fetch
 * from the origin, sharing its u_s) and the Kumar–Ross lower bound for distributing F to N nodes,
 * max{F/u_s, F/d_min, N·F/(u_s + Σu_i)} (downloads are not capped here, so F/d_min is 0).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, peersAlive, startAgentProcess } from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { startOrigin } from '../agent/harness/origin-server.ts';
import { describeMachine, round } from './support/machine.ts';

const MiB = 2 ** 20;

type Status = { id: string; counters: { bytesToPeers: number; originFetches: number } };

async function getAll(urls: string[], expected: string): Promise<number> {
  const started = performance.now();
  await Promise.all(
    urls.map(async (url) => {
      const res = await fetch(url);
      const digest = createHash('sha256')
        .update(Buffer.from(await res.arrayBuffer()))
        .digest('hex');
      if (res.status !== 200 || digest !== expected) throw new Error(`${url}: ${res.status}, wrong bytes`);
    }),
  );
  return (performance.now() - started) / 1000;
}

export async function run(quick: boolean): Promise<void> {
  const n = 8;
  const size = (quick ? 32 : 64) * MiB;
  const u = 8 * MiB; // every agent's upload cap, bytes/s
  const us = 8 * MiB; // the origin's
  const bound = Math.max(size / us, (n * size) / (us + n * u));
  console.log(
    `# swarm: ${n} agents (upload ${u / MiB} MiB/s each), origin ${us / MiB} MiB/s, object ${size / MiB} MiB`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const missing = natsUnavailable();
  if (missing) throw new Error(`swarm bench needs nats-server: ${missing}`);
  const object = randomBytes(size);
  const expected = createHash('sha256').update(object).digest('hex');
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-swarm-'));
  const origin = await startOrigin(new Map([['/o/object.bin', object]]), { bytesPerSecond: us });
  const nats = await startNatsServer();
  const agents: AgentProcess[] = [];
  try {
    const naive = await getAll(
      Array.from({ length: n }, () => `${origin.url}object.bin`),
      expected,
    );
    console.log(`# naive: ${n} direct origin fetches took ${naive.toFixed(2)} s`);
    origin.stats.requests = 0;
    origin.stats.bytes = 0;
    for (let i = 0; i < n; i++) {
      agents.push(
        await startAgentProcess([
          ...['--node-id', `s${i}`, '--zone', 'z', '--region', 'r', '--store.dir', join(dir, `s${i}`)],
          ...['--mesh', 'swarm', '--control-plane.servers', nats.url, '--store.scrub-on-start', 'false'],
          ...['--origins', `cdn/=${origin.url}`, '--transfer.upload-bytes-per-second', String(u)],
        ]),
      );
    }
    for (const agent of agents) await peersAlive(agent, n - 1);
    const time = await getAll(
      agents.map((a) => `${a.url}/v1/objects/cdn/object.bin`),
      expected,
    );
    const statuses = (await Promise.all(agents.map((a) => a.status()))) as unknown as Status[];
    const uploads = statuses.map((s) => round(s.counters.bytesToPeers / MiB, 1));
    console.log(`# mesh: all ${n} had identical bytes after ${time.toFixed(2)} s`);
    console.log(`# MiB uploaded to peers per agent: ${uploads.join(' ')}`);
    console.log(
      `# origin: ${origin.stats.requests} request(s), ${origin.stats.bytes} bytes; bound ${bound.toFixed(2)} s; ` +
        `goals: origin_bytes <= 1.05 x bytes, ratio_to_bound <= 1.5`,
    );
    console.log(
      JSON.stringify({
        bench: 'swarm',
        nodes: n,
        bytes: size,
        origin_bytes: origin.stats.bytes,
        time_s: round(time, 3),
        naive_s: round(naive, 3),
        bound_s: round(bound, 3),
        ratio_to_bound: round(time / bound, 3),
      }),
    );
  } finally {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    origin.close();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
