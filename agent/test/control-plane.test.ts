import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  type AgentProcess,
  type AgentStatus,
  eventually,
  startAgentProcess,
} from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';
import { Placement } from '../src/overlay/placement.ts';
import { createServingCertificate } from '@edgemesh/identity';
import {
  createNatsAuthKeys,
  meshNatsPermissions,
  natsServerConfig,
  natsUserCredentials,
} from '../../operator/src/nats/nats-auth.ts';

const MiB = 2 ** 20;
const MESH = 'itest';
const unavailable = natsUnavailable();

type MeshStatus = AgentStatus & {
  mesh: { controlPlane: string; members: { nodeId: string; state: string; grpc: string }[] };
  counters: AgentStatus['counters'] & {
    control: { bytesIn: number; bytesOut: number; dropped: Record<string, number> };
  };
};
const status = async (a: AgentProcess) => (await a.status()) as MeshStatus;
const aliveAt = async (a: AgentProcess) =>
  (await status(a)).mesh.members
    .filter((m) => m.state === 'alive')
    .map((m) => m.nodeId)
    .sort();

describe('agents on a real NATS control plane', { skip: unavailable ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  const agents: (AgentProcess | undefined)[] = [];
  const start = async (i: number) => {
    const agent = await startAgentProcess([
      ...['--node-id', `n${i}`, '--zone', `z${i % 3}`, '--region', 'r1', '--store.dir', join(dir, `n${i}`)],
      ...['--mesh', MESH, '--control-plane.servers', nats.url],
      ...[
        '--membership.probe-interval-ms',
        '200',
        '--membership.suspicion-timeout-ms',
        '600',
        '--membership.announce-interval-ms',
        '500',
      ],
    ]);
    agents[i] = agent;
    return agent;
  };
  const everyone = (except: number[] = []) =>
    agents.filter((a, i): a is AgentProcess => a !== undefined && !except.includes(i));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-control-'));
    nats = await startNatsServer();
    await Promise.all([0, 1, 2, 3, 4].map(start));
  });
  after(async () => {
    await Promise.all(everyone().map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('forms one membership from announcements alone, and fetches through it', async () => {
    for (const agent of everyone()) {
      const i = agents.indexOf(agent);
      const others = ['n0', 'n1', 'n2', 'n3', 'n4'].filter((n) => n !== `n${i}`);
      await eventually(
        async () => ((await aliveAt(agent)).join() === others.join() ? true : undefined),
        10_000,
        `n${i} sees all`,
      );
    }
    const body = randomBytes(9 * MiB);
    assert.equal(
      (await fetch(`${agents[0]!.url}/v1/objects/via/members`, { method: 'PUT', body })).status,
      201,
    );
    const res = await fetch(`${agents[3]!.url}/v1/objects/via/members`);
    assert.equal(res.headers.get('x-edgemesh-source'), 'peer');
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
  });

  it('reads from the cheapest holder: the same zone before another zone', async () => {
    // A key whose owners (R = 3, one per zone) include n3 but not the reader n0, both in zone z0.
    const placement = new Placement(
      [0, 1, 2, 3, 4].map((i) => ({ id: `n${i}`, zone: `z${i % 3}`, region: 'r1', weight: 1 })),
    );
    let key = '';
    for (let i = 0; !key; i++) {
      const owners = placement.owners(`geo/near/${i}`, 3).map((o) => o.id);
      if (owners.includes('n3') && !owners.includes('n0') && !owners.includes('n1')) key = `geo/near/${i}`;
    }
    const body = randomBytes(5 * MiB);
    assert.equal((await fetch(`${agents[1]!.url}/v1/objects/${key}`, { method: 'PUT', body })).status, 201);
    await eventually(async () => {
      const head = await fetch(`${agents[3]!.url}/v1/objects/${key}`, { method: 'HEAD' });
      return head.headers.get('x-edgemesh-source') === 'local' ? true : undefined;
    });
    const res = await fetch(`${agents[0]!.url}/v1/objects/${key}`);
    assert.equal(res.headers.get('x-edgemesh-source'), 'peer');
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    const from = (await status(agents[0]!)).counters.bytesFromPeer;
    assert.equal(from.n3, body.length, "served by n3, in the reader's zone");
    for (const other of ['n1', 'n2', 'n4'])
      assert.equal(from[other], undefined, `nothing from ${other}, in another zone`);
  });

  it('carries no object bytes: a 64 MiB transfer moves almost nothing on NATS', async () => {
    const before = await Promise.all(everyone().map(status));
    const body = randomBytes(64 * MiB);
    await fetch(`${agents[1]!.url}/v1/objects/big/one`, { method: 'PUT', body });
    const got = Buffer.from(await (await fetch(`${agents[2]!.url}/v1/objects/big/one`)).arrayBuffer());
    assert.deepEqual(got, body);
    const after = await Promise.all(everyone().map(status));
    const natsBytes = after.reduce(
      (sum, s, i) =>
        sum +
        s.counters.control.bytesIn +
        s.counters.control.bytesOut -
        before[i]!.counters.control.bytesIn -
        before[i]!.counters.control.bytesOut,
      0,
    );
    console.log(
      `# NATS bytes during a 64 MiB transfer, all agents, both ways: ${natsBytes} (${((natsBytes / body.length) * 100).toFixed(4)}%)`,
    );
    // Control chatter grows with time, not with object size; one leaked chunk alone would be 6%.
    assert.ok(natsBytes < 0.01 * body.length, `${natsBytes} bytes on NATS`);
  });

  it('shrugs off garbage and forged events: nothing crashes, nobody is misled', async () => {
    const nc: NatsConnection = await connect({ servers: nats.url });
    const subject = `edgemesh.${MESH}.members`;
    const victimGrpc = (await status(agents[1]!)).mesh.members.find((m) => m.nodeId === 'n0')!.grpc;
    const forged = (type: string, body: unknown) =>
      JSON.stringify({ v: 1, type, mesh: MESH, from: 'n2', sentAtMs: Date.now(), body });
    const member = (nodeId: string, grpc: string) => ({
      nodeId,
      zone: 'z0',
      region: 'r1',
      grpc,
      weight: 1,
      incarnation: 9e9,
    });
    for (const payload of [
      'garbage',
      '{"v":1}',
      '\u0000\u0001\u0002',
      'x'.repeat(70_000),
      forged('member.announce', { member: member('ghost', victimGrpc) }), // n0's address, another name
      forged('member.announce', { member: member('n1', '127.0.0.1:1') }), // n1 "moved" nowhere
      forged('member.suspect', { nodeId: 'n0', incarnation: 0 }),
      forged('member.leave', { nodeId: 'n4', incarnation: 0 }),
    ]) {
      nc.publish(subject, payload);
      nc.publish(`edgemesh.${MESH}.anything`, payload);
    }
    await nc.flush();
    await nc.close();
    // Every agent has dealt with all of it: the garbage counted, and the four forged events (twice
    // each: on two subjects) dropped unsigned before membership ever saw them.
    for (const agent of everyone()) {
      const i = agents.indexOf(agent);
      const s = await eventually(
        async () => {
          const now = await status(agent);
          const { dropped } = now.counters.control;
          return (dropped['not-json'] ?? 0) >= 1 &&
            (dropped.invalid ?? 0) >= 1 &&
            (dropped.unsigned ?? 0) >= 8
            ? now
            : undefined;
        },
        10_000,
        `n${i} dealt with the garbage and the forgeries`,
      );
      assert.ok(!s.mesh.members.some((m) => m.nodeId === 'ghost'), `n${i}: no ghost, not even unconfirmed`);
    }
    // The forged "n1 moved" and "n4 left" are checked by probes, and n1 and n4 answer where they are.
    for (const agent of everyone()) {
      const i = agents.indexOf(agent);
      const expected = ['n0', 'n1', 'n2', 'n3', 'n4'].filter((n) => n !== `n${i}`).join();
      await eventually(
        async () => ((await aliveAt(agent)).join() === expected ? true : undefined),
        10_000,
        `n${i} unmisled`,
      );
    }
    assert.equal((await fetch(`${agents[0]!.url}/healthz`)).status, 200);
  });

  it('stops choosing a killed agent within seconds everywhere', async () => {
    assert.equal(await agents[4]!.stop('SIGKILL'), 'SIGKILL');
    const started = Date.now();
    for (const agent of everyone([4])) {
      await eventually(
        async () => ((await aliveAt(agent)).includes('n4') ? undefined : true),
        10_000,
        'n4 dropped',
      );
    }
    console.log(
      `# a killed agent was dropped by every other agent in ${((Date.now() - started) / 1000).toFixed(2)} s`,
    );
    agents[4] = undefined;
  });

  it('keeps serving with NATS down, and reconverges when it returns', async () => {
    const port = nats.port;
    await nats.stop();
    const body = randomBytes(5 * MiB);
    assert.equal(
      (await fetch(`${agents[2]!.url}/v1/objects/while/down`, { method: 'PUT', body })).status,
      201,
    );
    const res = await fetch(`${agents[0]!.url}/v1/objects/while/down`);
    assert.equal(res.headers.get('x-edgemesh-source'), 'peer');
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    assert.deepEqual(await aliveAt(agents[0]!), ['n1', 'n2', 'n3'], 'membership kept');

    nats = await startNatsServer(port);
    for (const agent of everyone([4])) {
      await eventually(
        async () => ((await status(agent)).mesh.controlPlane === 'connected' ? true : undefined),
        15_000,
        'reconnect',
      );
    }
    await start(5); // a newcomer after the outage is learned by everyone
    for (const agent of everyone([4, 5])) {
      await eventually(
        async () => ((await aliveAt(agent)).includes('n5') ? true : undefined),
        10_000,
        'n5 learned',
      );
    }
    assert.deepEqual(await aliveAt(agents[5]!), ['n0', 'n1', 'n2', 'n3']);
  });
});

/**
 * The bundled NATS as the operator configures it (operator/src/nats) and the chart runs it (TLS with
 * a certificate of the operator's): each agent connects with its mesh's credentials file, checking
 * the server by the certificate it is given. Credentials of another mesh reach nothing of this one;
 * none reach nothing.
 */
describe('agents on a NATS that wants credentials', { skip: unavailable ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  const agents: AgentProcess[] = [];
  let named: AgentProcess[] = [];
  const start = async (id: string, creds: string | undefined) => {
    const args = [
      ...['--node-id', id, '--store.dir', join(dir, id), '--mesh', MESH],
      ...['--control-plane.servers', `nats://localhost:${nats.port}`],
      ...['--control-plane.ca-file', join(dir, 'tls.crt'), '--membership.announce-interval-ms', '300'],
    ];
    if (creds) {
      await writeFile(join(dir, `${id}.creds`), creds, { mode: 0o600 });
      args.push('--control-plane.credentials-file', join(dir, `${id}.creds`));
    }
    const agent = await startAgentProcess(args);
    agents.push(agent);
    return agent;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-control-creds-'));
    const keys = createNatsAuthKeys();
    await writeFile(join(dir, 'nats.conf'), await natsServerConfig(keys));
    const tls = await createServingCertificate(['localhost']);
    await writeFile(join(dir, 'tls.crt'), tls.certPem);
    await writeFile(join(dir, 'tls.key'), tls.keyPem);
    nats = await startNatsServer(undefined, {
      config: join(dir, 'nats.conf'),
      args: ['--tls', '--tlscert', join(dir, 'tls.crt'), '--tlskey', join(dir, 'tls.key')],
    });
    const user = async (mesh: string) =>
      (await natsUserCredentials(keys, mesh, meshNatsPermissions(mesh), 3600)).creds;
    named = await Promise.all([
      start('n0', await user(MESH)),
      start('n1', await user(MESH)),
      start('other', await user('other')),
      start('nobody', undefined),
    ]);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('agents of the mesh meet; one with another mesh’s credentials or none is neither heard nor hears', async () => {
    const [n0, n1, other, nobody] = named as [AgentProcess, AgentProcess, AgentProcess, AgentProcess];
    await eventually(
      async () => ((await aliveAt(n0)).join() === 'n1' ? true : undefined),
      10_000,
      'n0 sees n1',
    );
    await eventually(
      async () => ((await aliveAt(n1)).join() === 'n0' ? true : undefined),
      10_000,
      'n1 sees n0',
    );
    // The intruder with another mesh's user is connected, refused this mesh's subjects, and has
    // announced itself several times since (every announce refused by the server).
    await eventually(
      () =>
        Promise.resolve(other.logs.some((l) => l.includes('NATS refused this mesh’s subjects')) || undefined),
      10_000,
      'the refusal',
    );
    const sent = (await status(other)).counters.control.bytesOut;
    await eventually(
      async () => ((await status(other)).counters.control.bytesOut > sent * 2 + 1 ? true : undefined),
      10_000,
      'more announces',
    );
    assert.equal((await status(nobody)).mesh.controlPlane, 'connecting', 'no credentials: never connected');
    assert.deepEqual(await aliveAt(n0), ['n1']);
    assert.deepEqual(await aliveAt(n1), ['n0']);
    assert.deepEqual(await aliveAt(other), [], 'it heard nobody');
    assert.deepEqual(await aliveAt(nobody), []);
  });
});
