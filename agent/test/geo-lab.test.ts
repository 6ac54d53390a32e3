import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Placement } from '../src/overlay/placement.ts';
import { HOP_CLASSES, type HopClass } from '../src/domain.ts';
import { hopClass } from '../src/overlay/proximity.ts';
import type { GrpcPeer } from '../src/transport/peer-client.ts';
import { type AgentProcess, eventually, peersAlive } from '../harness/agent-process.ts';
import { testPeer } from '../harness/test-ca.ts';
import {
  type GeoLab,
  geoLabUnavailable,
  type LabHost,
  startGeoLab,
  startLabAgents,
} from '../harness/geo-lab.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';

const MiB = 2 ** 20;
const unavailable = natsUnavailable() ?? geoLabUnavailable();
if (unavailable) console.log(`# geo lab skipped: ${unavailable}`);

type Status = { cache: { entries: number }; counters: { bytesByHop: Record<HopClass, number> } };

/**
 * The geo lab: 12 agents on network namespaces in 3 regions x 3 zones (zone a of each region has two
 * nodes), 40 ms round trips between regions through user-space delay lines, nats-server on a host
 * of its own. Reads must come from the cheapest holder by topology.
 */
describe(
  'geo lab: 12 agents, 3 regions x 3 zones, on network namespaces',
  { skip: unavailable ?? false },
  () => {
    let dir: string;
    let lab: GeoLab;
    let nats: NatsServer;
    const agents: AgentProcess[] = [];
    const place = (h: LabHost) => ({ id: h.name, zone: h.zone, region: h.region });

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-geo-'));
      lab = await startGeoLab({ regions: 3, zones: ['a', 'a', 'b', 'c'], delayMs: 10 });
      nats = await startNatsServer(4222, { netns: lab.services.netns, host: lab.services.ip });
      agents.push(...(await startLabAgents(lab, { dir, mesh: 'geo', natsUrl: nats.url })));
      for (const agent of agents) await peersAlive(agent, lab.hosts.length - 1, 30_000);
    });
    after(async () => {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      await nats?.stop();
      lab?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('reads an object PUT in one region on every node, each from the cheapest holder', async () => {
      const body = randomBytes(8 * MiB);
      const put = await fetch(`${agents[0]!.url}/v1/objects/geo/one`, { method: 'PUT', body });
      assert.equal(put.status, 201);
      const status = async (i: number) => (await agents[i]!.status()) as unknown as Status;
      const holding = async () => {
        const found = new Set<number>();
        for (let i = 0; i < agents.length; i++) if ((await status(i)).cache.entries > 0) found.add(i);
        return found;
      };
      // The writer and the key's three owners (one per region, by the placement's spread) hold it, and
      // each owner knows of every other holder (their Holds reached it): replication is over.
      const key = 'geo/one';
      const owners = new Placement(lab.hosts.map((h) => ({ ...place(h), weight: 1 })))
        .owners(key, 3)
        .map((o) => lab.hosts.findIndex((h) => h.name === o.id));
      const expected = new Set([0, ...owners]);
      const ownerPeers: [number, GrpcPeer][] = [];
      for (const o of owners)
        ownerPeers.push([o, await testPeer(`${lab.hosts[o]!.ip}:${agents[o]!.grpcPort}`, { mesh: 'geo' })]);
      /** Whether every owner holds the object or lists `i` among its holders, for each of `holders`. */
      const ownersKnow = async (holders: Iterable<number>) => {
        for (const [o, peer] of ownerPeers) {
          const answer = await peer.getManifest(key).catch(() => undefined);
          const known = new Set(answer?.holders.map((h) => h.nodeId));
          if (answer?.holds) known.add(lab.hosts[o]!.name);
          for (const i of holders) if (!known.has(lab.hosts[i]!.name)) return false;
        }
        return true;
      };
      const tally: Record<string, number> = {};
      try {
        await eventually(
          async () => ((await ownersKnow(expected)) ? true : undefined),
          30_000,
          `the copies on ${[...expected].map((i) => lab.hosts[i]!.name).join(', ')}, known to the owners`,
        );
        assert.deepEqual(await holding(), expected, 'the writer and the owners hold it, and no one else');
        // Every other node reads in turn; each copy made is a holder for the next reader.
        for (let i = 1; i < agents.length; i++) {
          const holders = await holding();
          if (holders.has(i)) continue;
          const reader = lab.hosts[i]!;
          const cheapest =
            HOP_CLASSES[
              Math.min(
                ...[...holders].map((h) =>
                  HOP_CLASSES.indexOf(hopClass(place(reader), place(lab.hosts[h]!))),
                ),
              )
            ]!;
          const before = (await status(i)).counters.bytesByHop;
          const res = await fetch(`${agents[i]!.url}/v1/objects/geo/one`);
          assert.equal(res.status, 200);
          assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
          const after = (await status(i)).counters.bytesByHop;
          const moved = Object.fromEntries(HOP_CLASSES.map((c) => [c, after[c] - before[c]]));
          assert.equal(
            moved[cheapest],
            body.length,
            `${reader.name} (${reader.zone}) got every byte from a ${cheapest} holder: ${JSON.stringify(moved)}`,
          );
          tally[cheapest] = (tally[cheapest] ?? 0) + 1;
          // Its copy is committed and its Hold has reached the owners: the next reader can be sent to it.
          await eventually(
            async () => ((await ownersKnow([i])) ? true : undefined),
            10_000,
            `the owners to know ${reader.name} holds it`,
          );
        }
      } finally {
        for (const [, peer] of ownerPeers) peer.close();
      }
      console.log(`# geo lab reads by the cheapest class available: ${JSON.stringify(tally)}`);
    });
  },
);
