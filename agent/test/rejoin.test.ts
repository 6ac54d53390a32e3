import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';

const KEYS = 20;
const unavailable = natsUnavailable();
if (unavailable) console.log(`# rejoin skipped: ${unavailable}`);

type Entries = { cache: { entries: number } };
type FromPeers = { counters: { bytesFromPeer: Record<string, number>; bytesFromPeers: number } };
type Members = { mesh: { members: { nodeId: string; grpc: string; state: string }[] } };

/**
 * A node that is gone long enough to be forgotten, then comes back at the same address with an empty
 * disk (a pod rescheduled onto the same host with an emptyDir): nothing tells its peers it restarted
 * (it is learned as a newcomer), and they recorded its address as holding their keys. Membership
 * tells the replicator to forget that address when it forgets the member (onMemberForgotten), so the
 * returning node is asked for its keys again.
 */
describe(
  'a member forgotten and back at the same address with an empty disk (2 agents, R = 2, W = 2)',
  { skip: unavailable ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    const agents: AgentProcess[] = [];
    const args = (i: number, store: string) => [
      ...['--node-id', `n${i}`, '--store.dir', join(dir, store), '--mesh', 'rejoin'],
      ...[
        '--control-plane.servers',
        nats.url,
        '--replication.factor',
        '2',
        '--replication.write-copies',
        '2',
      ],
      ...['--membership.probe-interval-ms', '200', '--membership.suspicion-timeout-ms', '600'],
      ...['--membership.dead-retention-ms', '5000'],
    ];

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-rejoin-'));
      nats = await startNatsServer();
      for (let i = 0; i < 2; i++) agents.push(await startAgentProcess(args(i, `n${i}`)));
      for (const agent of agents) await peersAlive(agent, 1);
    });
    after(async () => {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    it('is asked again for every key it owns', async () => {
      const keys = Array.from({ length: KEYS }, (_, i) => `rejoin/${i}`);
      for (const [i, key] of keys.entries()) {
        // The first through n1, which n0 then copies from it (a download, counted per peer).
        const res = await fetch(`${agents[i === 0 ? 1 : 0]!.url}/v1/objects/${key}`, {
          method: 'PUT',
          body: randomBytes(4096),
        });
        assert.equal(res.status, 201);
      }
      // Two nodes, R = 2, W = 2: the PUT answered once the other held a copy, and the writer recorded it there.
      const held = async () => ((await agents[1]!.status()) as unknown as Entries).cache.entries;
      assert.equal(await held(), KEYS);
      const fromPeers = async () => ((await agents[0]!.status()) as unknown as FromPeers).counters;
      const before = await fromPeers();
      assert.equal(
        before.bytesFromPeer.n1,
        4096,
        `n0 copied the one key written on n1 once, and counted it: ${JSON.stringify(before.bytesFromPeer)}`,
      );
      // First a move: restarted with its disk at another port (a pod at a new IP). The address it
      // left is forgotten, the member is not, and neither are its figures.
      await agents[1]!.stop('SIGKILL');
      agents[1] = await startAgentProcess(args(1, 'n1'));
      const movedTo = `127.0.0.1:${agents[1].grpcPort}`;
      await eventually(
        async () =>
          ((await agents[0]!.status()) as unknown as Members).mesh.members.some(
            (m) => m.nodeId === 'n1' && m.grpc === movedTo && m.state === 'alive',
          )
            ? true
            : undefined,
        20_000,
        'n1 alive at its new address',
      );
      assert.equal((await fromPeers()).bytesFromPeer.n1, 4096, 'a move keeps the member’s figures');
      const grpcPort = agents[1].grpcPort;
      await agents[1].stop('SIGKILL');
      await eventually(
        async () =>
          ((await agents[0]!.status()) as unknown as Members).mesh.members.length === 0 ? true : undefined,
        20_000,
        'n1 forgotten',
      );
      // Its own figures go with it (a mesh whose nodes come and go would fill the map); the total stays.
      const after = await fromPeers();
      assert.equal(after.bytesFromPeer.n1, undefined);
      assert.equal(after.bytesFromPeers, before.bytesFromPeers);
      // Back at the same address, with an empty disk: learned as a newcomer.
      agents[1] = await startAgentProcess([...args(1, 'n1-new'), '--grpc.port', String(grpcPort)]);
      // Counted in its status, not by reads: a read of a key it lacks would fetch it.
      await eventually(
        async () => ((await held()) === KEYS ? true : undefined),
        30_000,
        'every key copied to the returning n1',
      ).catch(async (error: unknown) => {
        throw new Error(`${(error as Error).message}: it holds ${await held()} of ${KEYS}`);
      });
    });
  },
);
