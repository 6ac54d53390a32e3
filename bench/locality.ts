/**
 * locality, in the geo lab (network namespaces, 3 regions x 3 zones, 12 agents, 40 ms round trips
 * between regions, every agent's upload capped): an object is written to one node of region 0 and
 * nowhere else (replication factor 1). The rest of region 0 (the near group) reads it at once; a
 * second later the four nodes of region 2 (the far group) read it too, while the near group still
 * holds the upload. Measures:
 * - near_fraction: of the bytes that could have come from the reader's own zone or region (all but
 *   the one copy region 2 must bring in), the share that did;
 * - far_group_ratio: the far group's time from its start over the near group's: the starvation guard
 *   (upload shared fairly among zones) keeps it from waiting behind the near group.
 * The agents run as in the image (bench/support/bundle.ts); `--sources` runs them from the
 * TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how they ran.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, peersAlive } from '../agent/harness/agent-process.ts';
import { geoLabUnavailable, startGeoLab, startLabAgents } from '../agent/harness/geo-lab.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { Placement } from '../agent/src/overlay/placement.ts';
import type { HopClass } from '../agent/src/domain.ts';
import { agentBuild, buildOfAll } from './support/bundle.ts';
import { describeMachine, round } from './support/machine.ts';

const MiB = 2 ** 20;
type Status = { counters: { bytesByHop: Record<HopClass, number> } };

async function read(agent: AgentProcess, key: string, expected: string, since: number): Promise<number> {
  let res: Response;
  let body: Buffer;
  try {
    res = await fetch(`${agent.url}/v1/objects/${key}`);
    body = Buffer.from(await res.arrayBuffer());
  } catch (error) {
    // Why the agent gave up on the response (a download that failed part way): its warnings.
    const said = agent.logs.filter((line) => /"level":(40|50)/.test(line)).slice(-20);
    throw new Error(
      `GET ${agent.url}: ${(error as Error).message}; the agent's last warnings:\n${said.join('\n')}`,
      {
        cause: error,
      },
    );
  }
  if (res.status !== 200 || createHash('sha256').update(body).digest('hex') !== expected)
    throw new Error(`${agent.url}: ${res.status}, wrong bytes`);
  return (performance.now() - since) / 1000;
}

/**
 * `--quick` runs the whole scenario: it takes about half a minute. A smaller object was not
 * representative: with 4 chunks instead of 12, one chunk imported twice (a member that starts before
 * it has heard of the others) is an eighth of the object, and near_fraction read 0.67-1.0.
 */
export async function run(_quick: boolean, args: readonly string[] = []): Promise<void> {
  const build = agentBuild(args);
  const size = 48 * MiB;
  const upload = 16 * MiB;
  const delayMs = 10;
  console.log(
    `# locality: geo lab, 3 regions x zones [a a b c], ${4 * delayMs} ms between regions, upload ${upload / MiB} MiB/s per agent, object ${size / MiB} MiB; the agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const missing = natsUnavailable() ?? geoLabUnavailable();
  if (missing) throw new Error(`locality bench needs the geo lab: ${missing}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-locality-'));
  const lab = await startGeoLab({ regions: 3, zones: ['a', 'a', 'b', 'c'], delayMs });
  const agents: AgentProcess[] = [];
  const nats = await startNatsServer(4222, { netns: lab.services.netns, host: lab.services.ip });
  try {
    agents.push(
      ...(await startLabAgents(lab, {
        dir,
        mesh: 'locality',
        natsUrl: nats.url,
        args: ['--replication.factor', '1', '--transfer.upload-bytes-per-second', String(upload)],
        place: build.place(dir),
      })),
    );
    for (const agent of agents) await peersAlive(agent, agents.length - 1, 30_000);
    // A key whose one owner is in region 0, written there: the only copy.
    const placement = new Placement(
      lab.hosts.map((h) => ({ id: h.name, zone: h.zone, region: h.region, weight: 1 })),
    );
    let key = '';
    for (let n = 0; !key; n++) {
      const owner = placement.owners(`locality/${n}`, 1)[0]!;
      if (owner.region === 'region-0') key = `locality/${n}`;
    }
    const writer = lab.hosts.findIndex((h) => h.name === placement.owners(key, 1)[0]!.id);
    const body = randomBytes(size);
    const expected = createHash('sha256').update(body).digest('hex');
    const put = await fetch(`${agents[writer]!.url}/v1/objects/${key}`, { method: 'PUT', body });
    if (put.status !== 201) throw new Error(`PUT: ${put.status}`);
    const near = lab.hosts
      .map((h, i) => i)
      .filter((i) => lab.hosts[i]!.region === 'region-0' && i !== writer);
    const far = lab.hosts.map((h, i) => i).filter((i) => lab.hosts[i]!.region === 'region-2');
    const before = (await Promise.all(agents.map((a) => a.status()))) as unknown as Status[];

    const nearStart = performance.now();
    const nearDone = Promise.all(near.map((i) => read(agents[i]!, key, expected, nearStart)));
    await new Promise((r) => setTimeout(r, 1000));
    const farStart = performance.now();
    const farTimes = await Promise.all(far.map((i) => read(agents[i]!, key, expected, farStart)));
    const nearTimes = await nearDone;

    const after = (await Promise.all(agents.map((a) => a.status()))) as unknown as Status[];
    const moved = (i: number, c: HopClass) =>
      after[i]!.counters.bytesByHop[c] - before[i]!.counters.bytesByHop[c];
    const readers = [...near, ...far];
    const total = readers.reduce((n, i) => n + moved(i, 'zone') + moved(i, 'region') + moved(i, 'remote'), 0);
    const nearBytes = readers.reduce((n, i) => n + moved(i, 'zone') + moved(i, 'region'), 0);
    const remote = readers.reduce((n, i) => n + moved(i, 'remote'), 0);
    // Region 2 has no copy: one object's worth must cross regions; everything else had a nearer holder.
    const nearFraction = nearBytes / (total - size);
    const tNear = Math.max(...nearTimes);
    const tFar = Math.max(...farTimes);
    console.log(
      `# near group (${near.length} nodes, region 0): ${tNear.toFixed(2)} s; far group (${far.length} nodes, region 2, started 1 s later): ${tFar.toFixed(2)} s`,
    );
    console.log(
      `# bytes: ${round(nearBytes / MiB, 1)} MiB from the same zone or region, ${round(remote / MiB, 1)} MiB across regions (${size / MiB} MiB had to); goals: near_fraction >= 0.95, far_group_ratio <= 1.5`,
    );
    console.log(
      JSON.stringify({
        bench: 'locality',
        agent_build: buildOfAll(agents.map((a) => a.child.pid)),
        near_fraction: round(nearFraction, 3),
        far_group_ratio: round(tFar / tNear, 3),
        near_s: round(tNear, 3),
        far_s: round(tFar, 3),
        remote_bytes: remote,
        bytes: size,
      }),
    );
  } finally {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await nats.stop();
    lab.close();
    await rm(dir, { recursive: true, force: true });
  }
}
