import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';
import { Placement } from '../src/overlay/placement.ts';

const KiB = 1024;
const OBJECTS = 200;
const unavailable = natsUnavailable();

describe(
  'replication and repair (R = 3, W = 2): 9 agents in 3 regions x 3 zones on a real NATS control plane',
  { skip: unavailable ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    const agents = new Map<number, AgentProcess>();
    const bodies = new Map<string, Buffer>();
    /** The gRPC ports of the agents killed, to bring them back at the same address. */
    const gone = new Map<number, number>();

    /** How many live agents hold `key` themselves. */
    const holders = async (key: string) => {
      let n = 0;
      for (const agent of agents.values()) {
        const res = await fetch(`${agent.url}/v1/objects/${key}`, { method: 'HEAD' });
        if (res.headers.get('x-edgemesh-source') === 'local') n++;
      }
      return n;
    };

    /** Where the agents place keys: the same placement over the same nine nodes. */
    const placement = new Placement(
      Array.from({ length: 9 }, (_, i) => ({
        id: `n${i}`,
        zone: `r${Math.floor(i / 3)}z${i % 3}`,
        region: `r${Math.floor(i / 3)}`,
        weight: 1,
      })),
    );
    /** Whether each of `key`'s R owners holds it itself (HEAD: no bytes move). */
    const onOwners = async (key: string) => {
      for (const owner of placement.owners(key, 3)) {
        const agent = agents.get(Number(owner.id.slice(1)));
        if (!agent) return undefined;
        const res = await fetch(`${agent.url}/v1/objects/${key}`, { method: 'HEAD' });
        if (res.headers.get('x-edgemesh-source') !== 'local') return undefined;
      }
      return true;
    };

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-replication-'));
      nats = await startNatsServer();
      for (let i = 0; i < 9; i++) agents.set(i, await startAgentProcess(argsOf(i)));
      for (const agent of agents.values()) {
        await peersAlive(agent, 8);
      }
    });
    /** Agent n`i`'s flags (a restart adds the gRPC port it had, to come back at the same address). */
    const argsOf = (i: number) => [
      ...[
        '--node-id',
        `n${i}`,
        '--zone',
        `r${Math.floor(i / 3)}z${i % 3}`,
        '--region',
        `r${Math.floor(i / 3)}`,
        '--store.dir',
        join(dir, `n${i}`),
      ],
      ...[
        '--mesh',
        'repl',
        '--control-plane.servers',
        nats.url,
        '--replication.factor',
        '3',
        '--replication.write-copies',
        '2',
      ],
      ...['--membership.probe-interval-ms', '200', '--membership.suspicion-timeout-ms', '600'],
    ];
    after(async () => {
      await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    it('answers a PUT once two copies exist, and places three', async () => {
      for (let i = 0; i < OBJECTS; i++) {
        const key = `replicated/${i}`;
        const body = randomBytes(16 * KiB + i);
        bodies.set(key, body);
        const res = await fetch(`${agents.get(0)!.url}/v1/objects/${key}`, { method: 'PUT', body });
        assert.equal(res.status, 201);
        assert.ok(
          Number(res.headers.get('x-edgemesh-copies')) >= 2,
          `${key}: ${res.headers.get('x-edgemesh-copies')} copies`,
        );
      }
      for (const key of bodies.keys()) {
        await eventually(
          async () => ((await holders(key)) >= 3 ? true : undefined),
          10_000,
          `${key} on 3 nodes`,
        );
      }
    });

    it('loses nothing when two owners in different zones die, and repair restores three copies', async () => {
      // n1 (zone r0z1) and n5 (zone r1z2): with 9 nodes and R = 3, each owns about a third of the keys.
      const owned = async (i: number) => {
        let n = 0;
        for (const key of bodies.keys()) {
          const res = await fetch(`${agents.get(i)!.url}/v1/objects/${key}`, { method: 'HEAD' });
          if (res.headers.get('x-edgemesh-source') === 'local') n++;
        }
        return n;
      };
      const lost = (await owned(1)) + (await owned(5));
      console.log(`# killing n1 and n5 with SIGKILL: they held ${lost} copies of ${OBJECTS} objects`);
      assert.ok(lost > OBJECTS / 3, 'the two held many copies');
      for (const i of [1, 5]) {
        gone.set(i, agents.get(i)!.grpcPort);
        await agents.get(i)!.stop('SIGKILL');
        agents.delete(i);
      }
      // Right away, every key is still found by every live agent (HEAD locates without copying).
      for (const key of bodies.keys()) {
        for (const agent of agents.values()) {
          assert.equal(
            (await fetch(`${agent.url}/v1/objects/${key}`, { method: 'HEAD' })).status,
            200,
            `${key} found`,
          );
        }
      }
      // Counted with HEAD, which moves no bytes: the third copies must come from repair, not reads.
      for (const key of bodies.keys()) {
        await eventually(
          async () => ((await holders(key)) >= 3 ? true : undefined),
          30_000,
          `${key} repaired`,
        );
      }
      for (const [key, body] of bodies) {
        for (const agent of agents.values()) {
          const res = await fetch(`${agent.url}/v1/objects/${key}`);
          assert.equal(res.status, 200, `${key} readable`);
          assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
        }
      }
    });

    it('brings the killed agents back at the same address: alive again everywhere, and every key, written while they were away too, on its owners', async () => {
      const killed = new Map<number, number>([
        [1, gone.get(1)!],
        [5, gone.get(5)!],
      ]);
      // Written while they are away: some of these they own.
      const away: string[] = [];
      for (let i = 0; i < 30; i++) {
        const key = `while-away/${i}`;
        const body = randomBytes(8 * KiB + i);
        bodies.set(key, body);
        away.push(key);
        const res = await fetch(`${agents.get(0)!.url}/v1/objects/${key}`, { method: 'PUT', body });
        assert.equal(res.status, 201);
      }
      const others = [...agents.values()];
      for (const [i, grpcPort] of killed) {
        const agent = await startAgentProcess([...argsOf(i), '--grpc.port', String(grpcPort)]);
        const ready = Date.now();
        agents.set(i, agent);
        await Promise.all(
          others.map((other) =>
            eventually(
              async () =>
                (
                  (await other.status()) as unknown as {
                    mesh: { members: { nodeId: string; state: string }[] };
                  }
                ).mesh.members.some((m) => m.nodeId === `n${i}` && m.state === 'alive')
                  ? true
                  : undefined,
              10_000,
              `n${i} alive again`,
            ),
          ),
        );
        console.log(
          `# n${i} back at the same address: alive at every other agent ${Date.now() - ready} ms after it was ready`,
        );
      }
      const start = Date.now();
      for (const key of bodies.keys())
        await eventually(() => onOwners(key), 30_000, `${key} on its 3 owners`);
      const local = async (i: number) => {
        let n = 0;
        for (const key of away) {
          const res = await fetch(`${agents.get(i)!.url}/v1/objects/${key}`, { method: 'HEAD' });
          if (res.headers.get('x-edgemesh-source') === 'local') n++;
        }
        return n;
      };
      const got = [await local(1), await local(5)];
      console.log(
        `# every key on its 3 owners ${Date.now() - start} ms after both were back; of the 30 written while away, n1 holds ${got[0]}, n5 ${got[1]}`,
      );
      assert.ok(got[0]! > 0 && got[1]! > 0, 'the returning owners got the keys written while they were away');
    });
  },
);
