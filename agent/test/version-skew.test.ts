import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { subjects } from '@edgemesh/contracts';
import {
  type AgentProcess,
  type AgentStatus,
  eventually,
  startAgentProcess,
} from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';
import { testCredentials } from '../harness/test-ca.ts';
import { EventSigner } from '../src/security/event-signer.ts';

/**
 * Agents that advertise different protocol ranges (docs/upgrades.md) in one mesh, as a DaemonSet
 * rollout runs them: real agent processes, a real nats-server, gRPC over mTLS. One build stands in
 * for others through the test-only variable EDGEMESH_TEST_ONLY_PROTOCOL (agent/src/main.ts).
 */
const MESH = 'skew';
const TEST_PROTOCOL = 'EDGEMESH_TEST_ONLY_PROTOCOL';
const unavailable = natsUnavailable();

type Member = { nodeId: string; state: string; protocol?: string; refused?: string };
type SkewStatus = AgentStatus & {
  mesh: { protocol: string; members: Member[] };
  counters: AgentStatus['counters'] & {
    peersRefused: Record<string, number>;
    control: { dropped: Record<string, number> };
  };
};
const status = async (a: AgentProcess) => (await a.status()) as SkewStatus;
const memberAt = async (a: AgentProcess, nodeId: string) =>
  (await status(a)).mesh.members.find((m) => m.nodeId === nodeId);

describe('agents of different protocol versions in one mesh', { skip: unavailable ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  /** n0: 1.0 (as this build was); n1: one minor newer, still speaking 1.0; n2: 1.2 only; n3: major 2. */
  const agents: Record<string, AgentProcess> = {};
  const start = async (node: string, protocol?: string, extra: string[] = []) => {
    agents[node] = await startAgentProcess(
      [
        ...['--node-id', node, '--zone', 'z1', '--region', 'r1', '--store.dir', join(dir, node)],
        ...['--mesh', MESH, '--control-plane.servers', nats.url],
        ...['--membership.probe-interval-ms', '200', '--membership.announce-interval-ms', '500'],
        ...extra,
      ],
      undefined,
      protocol ? { env: { [TEST_PROTOCOL]: protocol } } : {},
    );
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-skew-'));
    nats = await startNatsServer();
    await Promise.all([start('n0', '1.0-1.0'), start('n1', '1.0-1.1'), start('n2', '1.2-1.2')]);
    // Major 2 hears no 1.x event (nor they its): it is given n0 as a static peer, so it calls n0.
    await start('n3', '2.0-2.0', ['--peers', `127.0.0.1:${agents.n0!.grpcPort}`]);
  });
  after(async () => {
    await Promise.all(Object.values(agents).map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('one minor apart: members of each other at the version both speak; a PUT on one is read on the other', async () => {
    assert.equal((await status(agents.n0!)).mesh.protocol, '1.0-1.0');
    assert.equal((await status(agents.n1!)).mesh.protocol, '1.0-1.1');
    // n0 learned n1 only from n1's announcements, which are of 1.1 (a newer minor): taken, not dropped.
    for (const [self, other] of [
      ['n0', 'n1'],
      ['n1', 'n0'],
    ] as const) {
      const m = await eventually(
        async () => {
          const found = await memberAt(agents[self]!, other);
          return found?.state === 'alive' ? found : undefined;
        },
        15_000,
        `${other} alive at ${self}`,
      );
      assert.equal(m.protocol, '1.0', `${self} and ${other} agreed on 1.0`);
    }
    for (const [writer, reader] of [
      ['n1', 'n0'],
      ['n0', 'n1'],
    ] as const) {
      const body = randomBytes(3 * 2 ** 20 + 5);
      const key = `skew/${writer}-to-${reader}`;
      const put = await fetch(`${agents[writer]!.url}/v1/objects/${key}`, { method: 'PUT', body });
      assert.equal(put.status, 201);
      const got = await fetch(`${agents[reader]!.url}/v1/objects/${key}`);
      assert.equal(got.status, 200);
      // From the writer, over gRPC: on a read (peer) or by the write's replication (local).
      assert.notEqual(got.headers.get('x-edgemesh-source'), 'origin');
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(body), `${key} byte-identical`);
      const fromWriter = (await status(agents[reader]!)).counters.bytesFromPeer[writer] ?? 0;
      assert.ok(fromWriter >= body.length, `${reader} got ${fromWriter} bytes from ${writer}`);
    }
  });

  it('no version in common (same major): heard of, refused with the reason, counted, never a member', async () => {
    // n2's 1.2 events are a newer minor for n0, so n0 learns of n2; n2 refuses n0's calls (1.0).
    const m = await eventually(
      async () => {
        const found = await memberAt(agents.n0!, 'n2');
        return found?.refused ? found : undefined;
      },
      15_000,
      'n2 refused at n0',
    );
    assert.match(m.refused!, /protocol: it speaks 1\.2-1\.2, this node 1\.0-1\.0: no version in common/);
    assert.notEqual(m.state, 'alive');
    assert.ok(((await status(agents.n0!)).counters.peersRefused.protocol ?? 0) >= 1);
    assert.ok(((await status(agents.n2!)).counters.peersRefused.protocol ?? 0) >= 1);
    // n0's events are older than n2's min: dropped by n2 and counted.
    assert.ok(((await status(agents.n2!)).counters.control.dropped['unsupported-version'] ?? 0) >= 1);
    assert.ok(
      agents.n0!.logs.some((l) => l.includes('no protocol version in common')),
      'n0 logs the refusal',
    );
    // Still not a member a moment later; n1 never took it either.
    await new Promise((r) => setTimeout(r, 1000));
    assert.notEqual((await memberAt(agents.n0!, 'n2'))?.state, 'alive');
    assert.notEqual((await memberAt(agents.n1!, 'n2'))?.state, 'alive');
  });

  it('another major: its calls and its events are refused on both sides, and nobody crashes', async () => {
    await eventually(
      async () => (((await status(agents.n3!)).counters.peersRefused.protocol ?? 0) >= 1 ? true : undefined),
      15_000,
      'n3 refusing n0',
    );
    const n3 = await status(agents.n3!);
    assert.equal(n3.peers.alive, 0, 'its static peer n0 is not up for it');
    assert.ok((n3.counters.control.dropped['unsupported-version'] ?? 0) >= 1, 'the 1.x events dropped');
    const n0 = await status(agents.n0!);
    assert.ok((n0.counters.control.dropped['unsupported-version'] ?? 0) >= 1, 'its 2.0 events dropped');
    assert.equal(
      n0.mesh.members.find((m) => m.nodeId === 'n3'),
      undefined,
    );
    assert.ok(
      agents.n3!.logs.some((l) => l.includes('it speaks 1.0-1.0, this node 2.0-2.0: no version in common')),
      'n3 logs why',
    );
    for (const [node, agent] of Object.entries(agents)) {
      assert.equal(agent.child.exitCode, null, `${node} still runs`);
      assert.equal((await fetch(`${agent.url}/healthz`)).status, 200, `${node} healthy`);
    }
  });

  it('takes a newer minor’s event with fields it does not know; drops another major’s', async () => {
    const nc: NatsConnection = await connect({ servers: nats.url });
    const signerOf = async (node: string) => new EventSigner(await testCredentials(node, { mesh: MESH }));
    const announce = (node: string, version: Record<string, number>, extra: Record<string, unknown>) => ({
      ...version,
      type: 'member.announce',
      mesh: MESH,
      from: node,
      sentAtMs: Date.now(),
      body: {
        member: {
          nodeId: node,
          zone: 'z1',
          region: 'r1',
          grpc: '127.0.0.1:9',
          weight: 1,
          incarnation: 0,
          ...extra,
        },
        ...extra,
      },
      ...extra,
    });
    const publish = async (event: unknown, node: string) => {
      const data = Buffer.from(JSON.stringify(event));
      const h = natsHeaders();
      for (const [k, v] of Object.entries((await signerOf(node)).sign(data))) h.set(k, v);
      nc.publish(subjects(MESH).members, data, { headers: h });
    };
    const dropped = (await status(agents.n0!)).counters.control.dropped['unsupported-version'] ?? 0;
    await publish(announce('n8', { v: 1, minor: 4 }, { battery: 0.3, flags: ['new'] }), 'n8');
    await publish(announce('n9', { v: 3 }, {}), 'n9');
    await nc.flush();
    await nc.close();
    // n8 is learned (and then probed: nothing answers at its address, so it stays unconfirmed).
    await eventually(async () => memberAt(agents.n0!, 'n8'), 10_000, 'n8 learned at n0');
    await eventually(
      async () =>
        ((await status(agents.n0!)).counters.control.dropped['unsupported-version'] ?? 0) > dropped
          ? true
          : undefined,
      10_000,
      'the major-3 event counted as dropped',
    );
    assert.equal(await memberAt(agents.n0!, 'n9'), undefined);
  });
});
