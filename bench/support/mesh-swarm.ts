/**
 * The pieces of the `swarm` scenario that `swarm` and `swarm-vs-peer` share: N agents with their upload
 * capped, one origin with its own cap, all asking for the same object at the same moment; the naive
 * way (all N from the origin) and the Kumar–Ross lower bound.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type BuildName, buildOfAll } from './bundle.ts';
import {
  type AgentProcess,
  type PlaceOptions,
  peersAlive,
  startAgentProcess,
} from '../../agent/harness/agent-process.ts';
import type { NatsServer } from '../../agent/harness/nats-server.ts';
import type { TestOrigin } from '../../agent/harness/origin-server.ts';

export const MiB = 2 ** 20;

/** Where the origin serves the object, under its base URL. */
export const OBJECT_NAME = 'object.bin';

export interface SwarmShape {
  nodes: number;
  /** The object's size F, bytes. */
  bytes: number;
  /** Every node's upload cap u, bytes/s. */
  uploadBytesPerSecond: number;
  /** The origin's upload cap u_s, bytes/s. */
  originBytesPerSecond: number;
}

/**
 * Kumar–Ross: no scheme gives F bytes to N nodes faster than max{F/u_s, F/d_min, N·F/(u_s + Σu_i)};
 * downloads are not capped here, so F/d_min is 0.
 */
export function kumarRossBound(s: SwarmShape): number {
  return Math.max(
    s.bytes / s.originBytesPerSecond,
    (s.nodes * s.bytes) / (s.originBytesPerSecond + s.nodes * s.uploadBytesPerSecond),
  );
}

/** GETs every URL at once; seconds until the last body is whole. Throws on a status or digest that is off. */
export async function getAll(urls: string[], expectedSha256: string): Promise<number> {
  const started = performance.now();
  await Promise.all(
    urls.map(async (url) => {
      const res = await fetch(url);
      const digest = createHash('sha256')
        .update(Buffer.from(await res.arrayBuffer()))
        .digest('hex');
      if (res.status !== 200 || digest !== expectedSha256)
        throw new Error(`${url}: ${res.status}, wrong bytes`);
    }),
  );
  return (performance.now() - started) / 1000;
}

/** The naive way: `nodes` direct downloads from the origin at once; seconds. Leaves the origin's stats at 0. */
export async function naiveSwarm(origin: TestOrigin, nodes: number, expectedSha256: string): Promise<number> {
  const seconds = await getAll(
    Array.from({ length: nodes }, () => `${origin.url}${OBJECT_NAME}`),
    expectedSha256,
  );
  origin.stats.requests = 0;
  origin.stats.bytes = 0;
  return seconds;
}

export interface MeshSwarmOptions {
  nodes: number;
  uploadBytesPerSecond: number;
  /** Mesh name (one per run, so agents of an earlier run are not taken for members). */
  mesh: string;
  /** Parent of the agents' store folders. */
  dir: string;
  nats: NatsServer;
  origin: TestOrigin;
  expectedSha256: string;
  /** Called with each agent as it starts (e.g. to kill it if the benchmark is interrupted). */
  onStart?: (agent: AgentProcess) => void;
  /** How the agents run (bench/support/bundle.ts's agentBuild); from the sources if not given. */
  place?: PlaceOptions;
}

export interface MeshSwarmResult {
  /** Seconds from the N GETs to the last whole, verified body. */
  seconds: number;
  /** Bytes each agent uploaded to its peers. */
  uploads: number[];
  originRequests: number;
  originBytes: number;
  /** Seconds from the GETs to the origin's last byte (within 10 ms). */
  originSeconds: number;
  /** How the agents ran (bundle.ts's buildOf). */
  build: BuildName;
}

/**
 * Starts `nodes` agents (each its own process, upload capped with `--transfer.upload-bytes-per-second`),
 * waits until they all see each other, then GETs the object from every one at once. The agents are
 * killed before it returns or throws. Counts the origin from 0.
 */
export async function meshSwarm(o: MeshSwarmOptions): Promise<MeshSwarmResult> {
  const agents: AgentProcess[] = [];
  o.origin.stats.requests = 0;
  o.origin.stats.bytes = 0;
  try {
    for (let i = 0; i < o.nodes; i++) {
      const agent = await startAgentProcess(
        [
          ...['--node-id', `s${i}`, '--zone', 'z', '--region', 'r', '--store.dir', join(o.dir, `s${i}`)],
          ...['--mesh', o.mesh, '--control-plane.servers', o.nats.url, '--store.scrub-on-start', 'false'],
          ...['--origins', `cdn/=${o.origin.url}`],
          ...['--transfer.upload-bytes-per-second', String(o.uploadBytesPerSecond)],
        ],
        20_000,
        o.place,
      );
      agents.push(agent);
      o.onStart?.(agent);
    }
    for (const agent of agents) await peersAlive(agent, o.nodes - 1);
    const started = performance.now();
    let originSent = 0;
    let originLast = started;
    const watch = setInterval(() => {
      if (o.origin.stats.bytes === originSent) return;
      originSent = o.origin.stats.bytes;
      originLast = performance.now();
    }, 10);
    const seconds = await getAll(
      agents.map((a) => `${a.url}/v1/objects/cdn/${OBJECT_NAME}`),
      o.expectedSha256,
    ).finally(() => clearInterval(watch));
    const statuses = await Promise.all(agents.map((a) => a.status()));
    return {
      seconds,
      uploads: statuses.map((s) => s.counters.bytesToPeers),
      originRequests: o.origin.stats.requests,
      originBytes: o.origin.stats.bytes,
      originSeconds: (originLast - started) / 1000,
      build: buildOfAll(agents.map((a) => a.child.pid)),
    };
  } catch (error) {
    // What the agents said went wrong (their warnings and errors), before they go.
    for (const agent of agents)
      for (const line of agent.logs.filter((l) => /"level":(40|50|60)/.test(l)).slice(-5))
        process.stderr.write(`${agent.url}: ${line.trim()}\n`);
    throw error;
  } finally {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  }
}
