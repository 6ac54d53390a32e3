/**
 * swarm: N agents, each with its upload capped at u, and an origin capped at u_s, all asking for the
 * same F-byte object at the same moment. Side by side in the same run: the naive way (all N fetch
 * from the origin, sharing its u_s) and the Kumar–Ross lower bound for distributing F to N nodes,
 * max{F/u_s, F/d_min, N·F/(u_s + Σu_i)} (downloads are not capped here, so F/d_min is 0). The
 * agents run as in the image (bench/support/bundle.ts); `--sources` runs them from the TypeScript
 * sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how they ran.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { startOrigin } from '../agent/harness/origin-server.ts';
import { agentBuild } from './support/bundle.ts';
import { describeMachine, round } from './support/machine.ts';
import { kumarRossBound, meshSwarm, MiB, naiveSwarm, OBJECT_NAME } from './support/mesh-swarm.ts';

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const build = agentBuild(args);
  const n = 8;
  const size = (quick ? 32 : 64) * MiB;
  const u = 8 * MiB; // every agent's upload cap, bytes/s
  const us = 8 * MiB; // the origin's
  const bound = kumarRossBound({ nodes: n, bytes: size, uploadBytesPerSecond: u, originBytesPerSecond: us });
  console.log(
    `# swarm: ${n} agents (upload ${u / MiB} MiB/s each), origin ${us / MiB} MiB/s, object ${size / MiB} MiB; the agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const missing = natsUnavailable();
  if (missing) throw new Error(`swarm bench needs nats-server: ${missing}`);
  const object = randomBytes(size);
  const expected = createHash('sha256').update(object).digest('hex');
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-swarm-'));
  const origin = await startOrigin(new Map([[`/o/${OBJECT_NAME}`, object]]), { bytesPerSecond: us });
  const nats = await startNatsServer();
  try {
    const place = build.place(dir); // before any measuring: a failed build ends the run at once
    const naive = await naiveSwarm(origin, n, expected);
    console.log(`# naive: ${n} direct origin fetches took ${naive.toFixed(2)} s`);
    const mesh = await meshSwarm({
      nodes: n,
      uploadBytesPerSecond: u,
      mesh: 'swarm',
      dir,
      nats,
      origin,
      expectedSha256: expected,
      place,
    });
    const time = mesh.seconds;
    console.log(`# mesh: all ${n} had identical bytes after ${time.toFixed(2)} s`);
    console.log(`# MiB uploaded to peers per agent: ${mesh.uploads.map((b) => round(b / MiB, 1)).join(' ')}`);
    console.log(
      `# origin: ${mesh.originRequests} request(s), ${mesh.originBytes} bytes; bound ${bound.toFixed(2)} s; ` +
        `goals: origin_bytes <= 1.05 x bytes, ratio_to_bound <= 1.5`,
    );
    console.log(
      JSON.stringify({
        bench: 'swarm',
        nodes: n,
        agent_build: mesh.build,
        bytes: size,
        origin_bytes: mesh.originBytes,
        time_s: round(time, 3),
        naive_s: round(naive, 3),
        bound_s: round(bound, 3),
        ratio_to_bound: round(time / bound, 3),
      }),
    );
  } finally {
    origin.close();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
