/**
 * chaos, in the geo lab (network namespaces, 3 regions x 2 zones, 6 agents, 40 ms round trips
 * between regions, R = 3, W = 2): a mixed workload runs (PUTs, GETs from any node, messages from
 * node to node) while faults are injected one after another, each held, then healed:
 * - kill -9 of two agents at once (and of one, in the full run), brought back at the same address;
 * - a region partitioned from the rest (each side drops what the other sends);
 * - nats-server stopped, then started again at the same address;
 * - a slow peer (its uplink cut to 256 KiB/s by a tbf qdisc);
 * - a full disk on one node (its store on a tmpfs, filled up);
 * - a clock jump on one node (2 minutes ahead, then back: libfaketime, within the 5 minutes of skew
 *   the mesh allows).
 * An invariant checker verifies the sha-256 of every body served, and at the end that every
 * acknowledged write is readable and held by its R owners. Measures:
 * - acked_lost: acknowledged writes not readable at the end;
 * - corrupt_served: bodies served with wrong bytes;
 * - availability: requests that succeeded, of all requests, leaving out those whose own node was
 *   killed under them and reads and messages across the partition while a region is cut off;
 * - max_recovery_s: the longest time, after a fault was healed, until every agent counts every
 *   other alive again;
 * - keys_on_owners_s: after the last fault, until every acknowledged key is on its R owners.
 * The agents run as in the image (bench/support/bundle.ts); `--sources` runs them from the
 * TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how they ran.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Agent as HttpAgent, request } from 'node:http';
import { mkdir, mkdtemp, open, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, type PlaceOptions, startAgentProcess } from '../agent/harness/agent-process.ts';
import {
  type GeoLab,
  geoLabUnavailable,
  labAgentArgs,
  labFaultsUnavailable,
  type LabHost,
  limitRate,
  partition,
  startGeoLab,
} from '../agent/harness/geo-lab.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { Placement } from '../agent/src/overlay/placement.ts';
import { agentBuild, buildOfAll } from './support/bundle.ts';
import { describeMachine, round } from './support/machine.ts';

const KiB = 1024;
const MiB = 2 ** 20;
const R = 3;
const REQUEST_TIMEOUT_MS = 10_000;
/** Keys checked on their owners at once after the last fault. */
const CHECKS_AT_ONCE = 128;
/** How far the clock jumps: well within the skew the mesh allows (MAX_CLOCK_SKEW_MS, 5 minutes). */
const CLOCK_JUMP_S = 120;
const SLOW_PEER_BYTES_PER_S = 256 * KiB;
/**
 * Every store's limit, above what a run writes (so nothing owned is evicted: the suite measures
 * faults, not capacity; a full run writes about 5,000 objects, 1.9 GiB with their R copies, about
 * 320 MiB per node, more on some), and n0's disk. At 384 MiB, once the workload got faster, owners
 * evicted their oldest copies and keys were lost: the end of the run prints each node's evictions.
 */
const STORE_MIB = 768;
const DISK_MIB = 1024;
const FAKETIME = ['x86_64', 'aarch64']
  .map((arch) => `/usr/lib/${arch}-linux-gnu/faketime/libfaketimeMT.so.1`)
  .find((lib) => existsSync(lib));

/** Why the chaos suite cannot run here, or undefined when it can. */
export function chaosUnavailable(): string | undefined {
  return (
    natsUnavailable() ??
    geoLabUnavailable() ??
    labFaultsUnavailable() ??
    (FAKETIME ? undefined : 'libfaketime is not installed (apt-get install faketime): the clock jump')
  );
}

interface Node {
  host: LabHost;
  args: string[];
  env?: Record<string, string>;
  agent: AgentProcess | undefined;
  grpcPort: number;
  httpPort: number;
}

/** When a node was killed or cut off: requests that depend on it then are judged accordingly. */
interface Disturbance {
  kind: 'killed' | 'partitioned';
  nodes: Set<string>;
  from: number;
  to: number;
}

interface Tally {
  requests: number;
  failed: number;
  excluded: number;
  reasons: Record<string, number>;
}

interface FaultResult {
  fault: string;
  held_s: number;
  recovery_s: number;
  tally: Tally;
}

interface Fault {
  name: string;
  inject(): Promise<void> | void;
  heal(): Promise<void> | void;
}

const now = () => performance.now();
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const pick = <T>(list: readonly T[]) => list[Math.floor(Math.random() * list.length)]!;
const newTally = (): Tally => ({ requests: 0, failed: 0, excluded: 0, reasons: {} });

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const build = agentBuild(args);
  const delayMs = 10;
  const holdS = quick ? 4 : 20;
  const clients = quick ? 4 : 6;
  console.log(
    `# chaos: geo lab, 3 regions x zones [a b], 6 agents, ${4 * delayMs} ms between regions, R = ${R}, W = 2; each fault held ${holdS} s; ${clients} clients; the agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const missing = chaosUnavailable();
  if (missing) throw new Error(`chaos needs: ${missing}`);

  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-chaos-'));
  const lab: GeoLab = await startGeoLab({ regions: 3, zones: ['a', 'b'], delayMs });
  let nats: NatsServer | undefined;
  const nodes: Node[] = [];
  const mounts: string[] = [];
  const byName = (name: string) => nodes.find((n) => n.host.name === name)!;
  // Roles: n0 (region 0) fills its disk, n1 (region 0) and n3 (region 1) are killed, n2 (region 1)
  // is the slow peer, region 2 (n4, n5) is partitioned, n5's clock jumps.
  const diskNode = 'n0';
  const clockNode = 'n5';
  const clockFile = join(dir, 'clock-offset');
  const diskMount = join(dir, `disk-${diskNode}`);

  let place: PlaceOptions = {};
  const startNode = async (node: Node) => {
    const again = node.grpcPort
      ? ['--grpc.port', String(node.grpcPort), '--http.port', String(node.httpPort)]
      : [];
    node.agent = await startAgentProcess([...node.args, ...again], 30_000, {
      ...place,
      netns: node.host.netns,
      host: node.host.ip,
      env: { ...place.env, ...node.env },
    });
    node.grpcPort = node.agent.grpcPort;
    node.httpPort = node.agent.httpPort;
  };

  // Interrupted (Ctrl-C): the agents and the tmpfs go too; the lab's own exit handler removes the
  // namespaces and delay lines.
  const interrupted = () => {
    for (const n of nodes) n.agent?.child.kill('SIGKILL');
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    place = build.place(dir);
    nats = await startNatsServer(4222, { netns: lab.services.netns, host: lab.services.ip });
    const natsUrl = nats.url;
    await writeFile(clockFile, '+0');
    await mkdir(diskMount);
    // The disk holds more than the store's limit (as it should be configured); the fault fills the rest.
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${DISK_MIB}m`, 'tmpfs', diskMount]);
    mounts.push(diskMount);
    for (const host of lab.hosts) {
      const node: Node = {
        host,
        args: [
          ...labAgentArgs(host, { dir, mesh: 'chaos', natsUrl }),
          ...['--replication.factor', String(R), '--replication.write-copies', '2'],
          ...['--store.max-bytes', `${STORE_MIB}Mi`],
          ...(host.name === diskNode ? ['--store.dir', join(diskMount, 'store')] : []),
        ],
        ...(host.name === clockNode
          ? {
              env: {
                LD_PRELOAD: FAKETIME!,
                FAKETIME_TIMESTAMP_FILE: clockFile,
                FAKETIME_CACHE_DURATION: '1',
                DONT_FAKE_MONOTONIC: '1',
              },
            }
          : {}),
        agent: undefined,
        grpcPort: 0,
        httpPort: 0,
      };
      nodes.push(node);
      await startNode(node);
    }

    const everyoneAlive = async (): Promise<boolean> => {
      const counts = await Promise.all(
        nodes.map(async (n) => {
          if (!n.agent) return -1;
          try {
            const res = await fetch(`${n.agent.url}/v1/status`, { signal: AbortSignal.timeout(2000) });
            return ((await res.json()) as { peers: { alive: number } }).peers.alive;
          } catch {
            return -1;
          }
        }),
      );
      return counts.every((c) => c === nodes.length - 1);
    };
    const untilEveryoneAlive = async (limitS: number): Promise<number> => {
      const start = now();
      // Past the limit it gives up: the time it returns, over the limit, says so.
      while (!(await everyoneAlive()) && now() - start < limitS * 1000)
        await new Promise((r) => setTimeout(r, 100));
      return (now() - start) / 1000;
    };
    if ((await untilEveryoneAlive(60)) >= 60) throw new Error('the lab mesh did not form in 60 s');

    // The workload and its judge.
    const acked = new Map<string, { sha: string; entry: string; at: number }>();
    const ackedKeys: string[] = [];
    const disturbances: Disturbance[] = [];
    const overlapping = (kind: Disturbance['kind'], t0: number, t1: number) =>
      disturbances.filter((d) => d.kind === kind && d.from <= t1 && d.to >= t0);
    const placement = new Placement(
      lab.hosts.map((h) => ({ id: h.name, zone: h.zone, region: h.region, weight: 1 })),
    );
    const started = now();
    const verbose = process.env.CHAOS_VERBOSE === '1';
    let tally = newTally();
    const total = newTally();
    let corrupt = 0;
    let nextKey = 0;
    let running = true;

    const record = (ok: boolean, why: string | undefined, exclude: string | undefined) => {
      for (const t of [tally, total]) {
        t.requests++;
        if (ok) continue;
        const reason = exclude ? `excluded: ${exclude}` : why!;
        t.reasons[reason] = (t.reasons[reason] ?? 0) + 1;
        if (exclude) t.excluded++;
        else t.failed++;
      }
    };
    const liveNodes = () => nodes.filter((n) => n.agent);

    /** One request from a workload on a live node; judged once it ends. */
    const step = async () => {
      const entry = pick(liveNodes());
      const agent = entry.agent!;
      const name = entry.host.name;
      const roll = Math.random();
      const t0 = now();
      let ok = false;
      let why: string | undefined;
      let kind: 'put' | 'get' | 'message';
      let key = '';
      let target = '';
      let detail = '';
      try {
        if (roll < 0.3 || ackedKeys.length < 10) {
          kind = 'put';
          key = `chaos/${nextKey++}`;
          const size = Math.random() < 0.1 ? MiB : KiB + Math.floor(Math.random() * 63 * KiB);
          const body = randomBytes(size);
          const res = await fetch(`${agent.url}/v1/objects/${key}`, {
            method: 'PUT',
            body,
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          });
          const answer = await res.text();
          ok = res.status === 201;
          why = `PUT ${res.status}`;
          if (!ok) detail = answer.slice(0, 300);
          if (ok) {
            acked.set(key, { sha: sha(body), entry: name, at: now() });
            ackedKeys.push(key);
          }
        } else if (roll < 0.85) {
          kind = 'get';
          key = pick(ackedKeys);
          const res = await fetch(`${agent.url}/v1/objects/${key}`, {
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          });
          const body = new Uint8Array(await res.arrayBuffer());
          why = `GET ${res.status}`;
          if (res.status !== 200) detail = new TextDecoder().decode(body.subarray(0, 300));
          if (res.status === 200) {
            if (sha(body) === acked.get(key)!.sha) ok = true;
            else {
              corrupt++;
              why = 'GET 200 with wrong bytes';
              console.log(`# CORRUPT: ${key} from ${name} (${res.headers.get('x-edgemesh-source')})`);
            }
          }
        } else {
          kind = 'message';
          target = pick(nodes.filter((n) => n !== entry)).host.name;
          const res = await fetch(`${agent.url}/v1/exchange/${target}/chaos`, {
            method: 'POST',
            body: randomBytes(512),
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          });
          const answer = (await res.json()) as { delivered?: string[] };
          detail = JSON.stringify(answer).slice(0, 300);
          ok = res.status === 202 && (answer.delivered ?? []).includes(target);
          why = res.status === 202 ? 'message not delivered' : `POST ${res.status}`;
        }
      } catch (error) {
        kind ??= 'get';
        why = (error as Error).name === 'TimeoutError' ? 'timed out' : `network: ${(error as Error).message}`;
        // (fetch says only "fetch failed"; what failed is in its cause, for CHAOS_VERBOSE.)
        const cause = (error as { cause?: { code?: string; message?: string } }).cause;
        if (cause) detail = `${cause.code ?? ''} ${cause.message ?? ''}`.trim();
      }
      const t1 = now();
      let exclude: string | undefined;
      if (!ok) {
        // The node the workload ran on was killed under it: the workload went with it.
        if (overlapping('killed', t0, t1).some((d) => d.nodes.has(name))) exclude = 'its node was killed';
        else if (kind === 'message' && overlapping('killed', t0, t1).some((d) => d.nodes.has(target)))
          exclude = 'to a node killed';
        for (const d of overlapping('partitioned', t0, t1)) {
          if (exclude) break;
          const side = (n: string) => d.nodes.has(n);
          if (kind === 'get' && side(name)) exclude = 'read from the partitioned region';
          else if (
            kind === 'get' &&
            !side(name) &&
            side(acked.get(key)!.entry) &&
            acked.get(key)!.at >= d.from
          )
            exclude = 'read of what the partitioned region wrote';
          else if (kind === 'message' && side(name) !== side(target))
            exclude = 'message across the partition';
        }
      }
      record(ok, why, exclude);
      if (!ok && verbose) {
        // A read that failed: where the key is now (its owners, and who holds it).
        const where = kind === 'get' && !exclude ? ` ${await whereIs(key)}` : '';
        console.log(
          `# ${((t0 - started) / 1000).toFixed(2)}-${((t1 - started) / 1000).toFixed(2)} s ${kind} at ${name}${key ? ` ${key}` : ''}${target ? ` to ${target}` : ''}: ${why}${exclude ? ` (left out: ${exclude})` : ''}${detail ? ` ${detail}` : ''}${where}`,
        );
      }
    };
    /** For CHAOS_VERBOSE: `key`'s writer and time, its owners, and the live nodes holding it now. */
    const whereIs = async (key: string) => {
      const held = await Promise.all(
        liveNodes().map(async (n) => {
          const res = await fetch(`${n.agent!.url}/v1/objects/${key}`, {
            method: 'HEAD',
            signal: AbortSignal.timeout(5000),
          }).catch(() => undefined);
          return res?.headers.get('x-edgemesh-source') === 'local' ? n.host.name : '';
        }),
      );
      const a = acked.get(key);
      return `(written at ${a?.entry} at ${a ? ((a.at - started) / 1000).toFixed(2) : '?'} s; owners ${placement
        .owners(key, R)
        .map((o) => o.id)
        .join(' ')}; held by ${held.filter(Boolean).join(' ') || 'none'})`;
    };

    const workers = Array.from({ length: clients }, async () => {
      while (running) await step();
    });

    // The faults, each injected, held, healed and recovered from.
    const kill = (names: string[]): Fault => {
      let d: Disturbance | undefined;
      return {
        name: `kill -9 ${names.join(' and ')}`,
        async inject() {
          d = { kind: 'killed', nodes: new Set(names), from: now(), to: Number.POSITIVE_INFINITY };
          disturbances.push(d);
          await Promise.all(
            names.map(async (name) => {
              const node = byName(name);
              const agent = node.agent!;
              node.agent = undefined;
              await agent.stop('SIGKILL');
            }),
          );
        },
        async heal() {
          for (const name of names) await startNode(byName(name));
          d!.to = now();
        },
      };
    };
    const cutRegion = (region: string): Fault => {
      let heal: (() => void) | undefined;
      let d: Disturbance | undefined;
      const cut = lab.hosts.filter((h) => h.region === region);
      return {
        name: `partition ${region} (${cut.map((h) => h.name).join(', ')})`,
        inject() {
          d = { kind: 'partitioned', nodes: new Set(cut.map((h) => h.name)), from: now(), to: Infinity };
          disturbances.push(d);
          heal = partition(lab, cut);
        },
        heal() {
          heal!();
          d!.to = now();
        },
      };
    };
    const natsDown: Fault = {
      name: 'nats-server stopped',
      async inject() {
        await nats!.stop();
      },
      async heal() {
        nats = await startNatsServer(4222, { netns: lab.services.netns, host: lab.services.ip });
      },
    };
    const slowPeer = (name: string): Fault => {
      let heal: (() => void) | undefined;
      return {
        name: `slow peer ${name} (${SLOW_PEER_BYTES_PER_S / KiB} KiB/s up)`,
        inject() {
          // Its uplink to the mesh is slow; its own workload (this process) reaches it as before.
          heal = limitRate(byName(name).host, SLOW_PEER_BYTES_PER_S, lab.hostIp);
        },
        heal() {
          heal!();
        },
      };
    };
    const filler = join(diskMount, 'filler');
    const fullDisk: Fault = {
      name: `full disk on ${diskNode}`,
      async inject() {
        const file = await open(filler, 'w');
        const block = Buffer.alloc(MiB);
        try {
          for (;;) await file.write(block);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        } finally {
          await file.close();
        }
      },
      async heal() {
        await unlink(filler);
      },
    };
    const clockJump: Fault = {
      name: `clock of ${clockNode} ${CLOCK_JUMP_S} s ahead, then back`,
      async inject() {
        await writeFile(clockFile, `+${CLOCK_JUMP_S}`);
      },
      async heal() {
        await writeFile(clockFile, '+0');
      },
    };
    // CHAOS_FAULTS=slow,kill (words each fault's name starts with, or contains): only those faults,
    // to look into one; the figures of record run them all.
    const only = (process.env.CHAOS_FAULTS ?? '').split(',').filter(Boolean);
    const faults: Fault[] = [
      ...(quick ? [] : [kill(['n3'])]),
      kill(['n1', 'n3']),
      cutRegion('region-2'),
      natsDown,
      slowPeer('n2'),
      fullDisk,
      clockJump,
    ].filter((f) => only.length === 0 || only.some((word) => f.name.includes(word)));
    if (faults.length === 0) throw new Error(`CHAOS_FAULTS=${only.join(',')} names no fault`);
    const rounds = quick ? 1 : 2;

    await new Promise((r) => setTimeout(r, quick ? 3000 : 10_000)); // the workload warms up
    const steady = tally;
    const results: FaultResult[] = [];
    let lastHeal = now();
    for (let round = 0; round < rounds; round++) {
      for (const fault of faults) {
        tally = newTally();
        const injected = now();
        if (verbose) console.log(`# ${((injected - started) / 1000).toFixed(2)} s: ${fault.name}`);
        await fault.inject();
        await new Promise((r) => setTimeout(r, holdS * 1000));
        await fault.heal();
        lastHeal = now();
        if (verbose) console.log(`# ${((lastHeal - started) / 1000).toFixed(2)} s: healed`);
        const recovery = await untilEveryoneAlive(60);
        results.push({
          fault: fault.name,
          held_s: round2((lastHeal - injected) / 1000),
          recovery_s: round2(recovery),
          tally,
        });
        console.log(
          `# ${fault.name}: held ${round2((lastHeal - injected) / 1000)} s, everyone alive ${round2(recovery)} s after the heal; ${tally.requests} requests, ${tally.failed} failed, ${tally.excluded} left out ${JSON.stringify(tally.reasons)}`,
        );
        tally = newTally();
        await new Promise((r) => setTimeout(r, 1000)); // the steady state between faults
      }
    }

    // After the last fault: every acknowledged key on its R owners (while the workload still runs,
    // checking what was acknowledged by each pass's start).
    // node:http on kept-alive connections: fetch made about 2,000 HEADs a second from this process
    // (idle, one agent), node:http 5,000-8,000, and the check's speed is the measurement's resolution.
    const checker = new HttpAgent({ keepAlive: true, maxSockets: 32 });
    const heldAt = (url: string) =>
      new Promise<boolean>((resolve) => {
        const req = request(url, { method: 'HEAD', agent: checker, timeout: 5000 }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.headers['x-edgemesh-source'] === 'local'));
          res.on('error', () => resolve(false));
        });
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(false));
        req.end();
      });
    const held = async (key: string) => {
      const owners = placement.owners(key, R).map((o) => byName(o.id).agent!);
      const local = await Promise.all(owners.map((a) => heldAt(`${a.url}/v1/objects/${key}`)));
      return local.every(Boolean);
    };
    const onOwners = new Set<string>();
    /** How long the first check of every key took: nothing shorter can be measured. */
    let firstSweepS: number | undefined;
    /** Until the first `count` keys acknowledged are each on their R owners; seconds since the last heal. */
    const allOnOwners = async (count: number, limitS: number): Promise<number> => {
      const keys = ackedKeys.slice(0, count);
      // A queue worked by a pool of checks (three HEADs each): a key not yet on its owners goes back
      // to the end of the queue 200 ms later, so it is checked again as soon as the others allow,
      // not after a whole sweep of thousands of keys (the measurement's resolution).
      const queue = keys.filter((k) => !onOwners.has(k));
      const first = queue.length;
      const sweepStart = now();
      let next = 0;
      let firstChecks = 0;
      const over = () => now() - lastHeal > limitS * 1000;
      // Every 2 s while keys are missing: how many, and where a few of them are.
      const shown = verbose
        ? setInterval(() => {
            const pending = keys.filter((k) => !onOwners.has(k));
            console.log(
              `# ${((now() - lastHeal) / 1000).toFixed(2)} s after the heal: ${pending.length} keys off their owners`,
            );
            for (const key of pending.slice(0, 3))
              whereIs(key)
                .then((where) => console.log(`#   ${key} ${where}`))
                .catch(() => undefined);
          }, 2000)
        : undefined;
      try {
        await Promise.all(
          Array.from({ length: Math.min(CHECKS_AT_ONCE, queue.length) }, async () => {
            while (next < queue.length && !over()) {
              const at = next++;
              const key = queue[at]!;
              const ok = await held(key);
              if (at < first && ++firstChecks === first) firstSweepS ??= (now() - sweepStart) / 1000;
              if (ok) onOwners.add(key);
              else {
                await new Promise((r) => setTimeout(r, 200));
                queue.push(key);
              }
            }
          }),
        );
      } finally {
        clearInterval(shown);
      }
      // Past the limit it gives up: the time it returns, over the limit, says so.
      return (now() - lastHeal) / 1000;
    };
    // The keys acknowledged by the last heal, while the workload goes on (the newest keys' last
    // copies are always under way while it writes); then, once it stopped, all of them.
    const beforeHeal = ackedKeys.filter((k) => acked.get(k)!.at <= lastHeal).length;
    const keysOnOwners = await allOnOwners(beforeHeal, 60);
    running = false;
    await Promise.all(workers);
    const stillOff = ackedKeys.slice(0, beforeHeal).filter((k) => !onOwners.has(k));
    if (verbose)
      for (const key of stillOff.slice(0, 20))
        console.log(`# not on its owners: ${key} ${await whereIs(key)}`);
    // Every key acknowledged, the last ones included: readable, with the right bytes, from any node.
    // Then every key, the last ones included, given 90 s more: what is still off its owners is counted.
    await allOnOwners(ackedKeys.length, 90);
    const offOwners = ackedKeys.filter((k) => !onOwners.has(k)).length;
    checker.destroy();
    // What each store removed, by reason: evictions of owned copies would lose keys (see STORE_MIB).
    const removals = await Promise.all(
      liveNodes().map(async (n) => {
        const status = (await (await fetch(`${n.agent!.url}/v1/status`)).json()) as {
          counters?: { removals?: Record<string, number> };
        };
        return `${n.host.name} ${JSON.stringify(status.counters?.removals ?? {})}`;
      }),
    );
    console.log(`# removed from the stores (since each agent's last start): ${removals.join('; ')}`);
    let lost = 0;
    for (let i = 0; i < ackedKeys.length; i += 32) {
      await Promise.all(
        ackedKeys.slice(i, i + 32).map(async (key) => {
          const res = await fetch(`${pick(nodes).agent!.url}/v1/objects/${key}`);
          const body = new Uint8Array(await res.arrayBuffer());
          if (res.status !== 200) {
            lost++;
            console.log(`# LOST: ${key} (${res.status})`);
          } else if (sha(body) !== acked.get(key)!.sha) {
            corrupt++;
            console.log(`# CORRUPT at the end: ${key}`);
          }
        }),
      );
    }

    const counted = total.requests - total.excluded;
    const availability = counted === 0 ? 0 : (counted - total.failed) / counted;
    console.log('#');
    console.log(
      `# ${'fault'.padEnd(44)} ${'held s'.padStart(7)} ${'recover s'.padStart(9)} ${'requests'.padStart(8)} ${'failed'.padStart(6)} ${'left out'.padStart(8)}`,
    );
    const row = (f: string, h: string, r: string, t: Tally) =>
      console.log(
        `# ${f.padEnd(44)} ${h.padStart(7)} ${r.padStart(9)} ${String(t.requests).padStart(8)} ${String(t.failed).padStart(6)} ${String(t.excluded).padStart(8)}`,
      );
    row('(steady, before the faults)', '-', '-', steady);
    for (const r of results) row(r.fault, r.held_s.toFixed(1), r.recovery_s.toFixed(1), r.tally);
    console.log(`# failures by kind: ${JSON.stringify(total.reasons)}`);
    console.log(
      `# ${ackedKeys.length} writes acknowledged; after the last fault every one on its ${R} owners in ${round2(keysOnOwners)} s (a check of every key took ${round2(firstSweepS ?? 0)} s)${stillOff.length ? ` (${stillOff.length} not then)` : ''}; at the end ${offOwners} off their owners; lost ${lost}, corrupt bodies served ${corrupt}`,
    );
    console.log(
      '# goals: acked_lost = 0, corrupt_served = 0, availability >= 0.999, max_recovery_s <= 10, keys_on_owners_s <= 10',
    );
    console.log(
      JSON.stringify({
        bench: 'chaos',
        agent_build: buildOfAll(nodes.map((n) => n.agent?.child.pid)),
        faults: results.length,
        acked_lost: lost,
        corrupt_served: corrupt,
        availability: round(availability, 5),
        max_recovery_s: round2(Math.max(...results.map((r) => r.recovery_s))),
        keys_on_owners_s: round2(keysOnOwners),
        keys_check_s: round2(firstSweepS ?? 0),
        off_owners_at_end: offOwners,
        requests: total.requests,
        failed: total.failed,
        left_out: total.excluded,
        writes: ackedKeys.length,
      }),
    );
  } finally {
    // CHAOS_LOGS=dir: every agent's log (since its last start) there, one file per node.
    const logDir = process.env.CHAOS_LOGS;
    if (logDir) {
      await mkdir(logDir, { recursive: true });
      for (const n of nodes)
        if (n.agent) await writeFile(join(logDir, `${n.host.name}.log`), n.agent.logs.join('\n'));
      console.log(`# agent logs in ${logDir}`);
    }
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await Promise.all(nodes.flatMap((n) => (n.agent ? [n.agent.stop('SIGKILL')] : [])));
    await nats?.stop();
    lab.close();
    for (const m of mounts) execFileSync('umount', ['-l', m]);
    await rm(dir, { recursive: true, force: true });
  }
}

const round2 = (n: number) => round(n, 2);
