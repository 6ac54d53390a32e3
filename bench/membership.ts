/**
 * membership: N agents on a real nats-server with the default membership timing. Measures the time
 * until every agent stops choosing an agent killed with SIGKILL (detect), and until every agent uses
 * a newly started one (join, from the moment it is listening, and from its spawn). Side by side: the
 * bound the configuration implies for detection when the dead node's host is gone and every probe
 * must time out (probe interval + direct and indirect probe timeouts + suspicion timeout). The
 * agents run as in the image (bench/support/bundle.ts); `--sources` runs them from the TypeScript
 * sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how they ran.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AgentProcess,
  type AgentStatus,
  type PlaceOptions,
  startAgentProcess,
} from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { agentBuild, buildOfAll } from './support/bundle.ts';
import { describeMachine, round } from './support/machine.ts';

const DEFAULTS = { probeIntervalMs: 500, probeTimeoutMs: 500, suspicionTimeoutMs: 1000 };

type Members = AgentStatus & { mesh: { members: { nodeId: string; state: string }[] } };
const aliveAt = async (a: AgentProcess) =>
  new Set(
    ((await a.status()) as Members).mesh.members.filter((m) => m.state === 'alive').map((m) => m.nodeId),
  );

/** Polls until `check` holds for every agent; seconds from `since`. */
async function untilAll(
  agents: AgentProcess[],
  check: (alive: Set<string>) => boolean,
  since: number,
  limitS = 60,
): Promise<number> {
  const pending = new Set(agents);
  while (pending.size > 0) {
    if ((performance.now() - since) / 1000 > limitS) throw new Error(`not converged in ${limitS} s`);
    await Promise.all(
      [...pending].map(async (a) => {
        if (check(await aliveAt(a))) pending.delete(a);
      }),
    );
    if (pending.size > 0) await new Promise((r) => setTimeout(r, 20));
  }
  return (performance.now() - since) / 1000;
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const n = quick ? 8 : 20;
  const build = agentBuild(args);
  console.log(
    `# membership: ${n} agents on a real nats-server, default timing ${JSON.stringify(DEFAULTS)}; the agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const missing = natsUnavailable();
  if (missing) throw new Error(`membership bench needs nats-server: ${missing}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-membership-'));
  const nats = await startNatsServer();
  const agents: AgentProcess[] = [];
  let place: PlaceOptions | undefined;
  const start = (i: number) =>
    startAgentProcess(
      [
        ...[
          '--node-id',
          `m${i}`,
          '--zone',
          `z${i % 3}`,
          '--region',
          `r${i % 2}`,
          '--store.dir',
          join(dir, `m${i}`),
        ],
        ...['--mesh', 'bench', '--control-plane.servers', nats.url, '--store.scrub-on-start', 'false'],
      ],
      60_000,
      place,
    );
  try {
    place = build.place(dir);
    for (let i = 0; i < n; i++) agents.push(await start(i)); // one at a time: 2 cores
    const formed = await untilAll(agents, (alive) => alive.size === n - 1, performance.now());
    console.log(`# ${n} agents formed one membership (${formed.toFixed(2)} s after the last start)`);
    await new Promise((r) => setTimeout(r, 1000)); // settle

    const victim = agents.pop()!;
    const killedAt = performance.now();
    await victim.stop('SIGKILL');
    const detect = await untilAll(agents, (alive) => !alive.has(`m${n - 1}`), killedAt);
    console.log(`# kill -9 of m${n - 1}: every agent stopped choosing it after ${detect.toFixed(3)} s`);

    const spawnedAt = performance.now();
    const newcomer = await start(n);
    const readyAt = performance.now();
    const joinReady = await untilAll(agents, (alive) => alive.has(`m${n}`), readyAt);
    const joinSpawn = (performance.now() - spawnedAt) / 1000;
    agents.push(newcomer);
    console.log(
      `# m${n} joined: used by every agent ${joinReady.toFixed(3)} s after it listened (${joinSpawn.toFixed(2)} s after spawn)`,
    );
    const bound =
      (DEFAULTS.probeIntervalMs + 3 * DEFAULTS.probeTimeoutMs + DEFAULTS.suspicionTimeoutMs) / 1000;
    console.log(
      `# detection bound when probes must time out (host gone): ${bound} s; goal: detect_s and join_s <= 3`,
    );
    console.log(
      JSON.stringify({
        bench: 'membership',
        agents: n,
        agent_build: buildOfAll(agents.map((a) => a.child.pid)),
        detect_s: round(detect, 3),
        join_s: round(joinReady, 3),
        join_from_spawn_s: round(joinSpawn, 3),
        timeout_bound_s: bound,
      }),
    );
  } finally {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
