import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { type AddressInfo, connect as netConnect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type ChannelCredentials,
  credentials,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { peerService } from '../src/transport/peer-service.ts';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { encodeEvent, subjectFor } from '@edgemesh/contracts';
import { createNodeKey, MeshCa } from '@edgemesh/identity';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { natsUnavailable, type NatsServer, startNatsServer } from '../harness/nats-server.ts';
import { createTestCa, sharedTestCa, type TestCa, testCredentials } from '../harness/test-ca.ts';
import { GrpcPeer } from '../src/transport/peer-client.ts';
import { peerChannelCredentials } from '../src/security/grpc-credentials.ts';
import { parseManifest } from '../src/cache/manifest.ts';
import { isKey } from '../src/keys.ts';

const MiB = 2 ** 20;
const MESH = 'trust';
const REPS = 10;
const NODES = ['node-a', 'node-b', 'node-c'];
const missing = natsUnavailable();

/** Attempts and acceptances of one kind of attack, printed at the end. */
const tally = new Map<string, { attempts: number; accepted: number }>();
function record(kind: string, accepted: boolean): void {
  const t = tally.get(kind) ?? { attempts: 0, accepted: 0 };
  t.attempts++;
  if (accepted) t.accepted++;
  tally.set(kind, t);
}

/** Whether a call went through: true when it resolved, false when the peer refused it. */
const succeeded = (p: Promise<unknown>) =>
  p.then(
    () => true,
    () => false,
  );

/** Reads a stream to its end. */
async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const item of stream) void item;
}

/** A gRPC client of `address` with whatever credentials an attacker has. */
const attacker = (address: string, creds: ChannelCredentials) =>
  new GrpcPeer({
    id: 'attacker',
    address,
    flowControlWindow: MiB,
    timeoutMs: 2000,
    from: 'node-a',
    credentials: () => creds,
  });

/**
 * A TLS client's credentials with `key`/`cert`, trusting the mesh's CA (its certificate is public)
 * for the server, so that only the server's checks can stop it.
 */
const tlsAs = (ca: TestCa, key?: string, cert?: string) =>
  credentials.createSsl(
    Buffer.from(ca.material.certPem),
    key ? Buffer.from(key) : null,
    cert ? Buffer.from(cert) : null,
    { checkServerIdentity: () => undefined },
  );

describe('trust: attacks on the agents of a mesh, with real processes', { skip: missing }, () => {
  let dir: string;
  let nats: NatsServer;
  let nc: NatsConnection;
  let ca: TestCa;
  const agents: AgentProcess[] = [];
  const objects = new Map<string, string>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-attacks-'));
    ca = await sharedTestCa();
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    for (const id of NODES)
      agents.push(
        await startAgentProcess([
          ...['--node-id', id, '--mesh', MESH, '--store.dir', join(dir, id)],
          ...['--control-plane.servers', nats.url, '--replication.factor', '3'],
          ...['--replication.write-copies', '3'],
        ]),
      );
    await Promise.all(agents.map((a) => peersAlive(a, 2)));
    for (let i = 0; i < 5; i++) {
      const body = randomBytes(MiB + i);
      const key = `asset/${i}`;
      const res = await fetch(`${agents[0]!.url}/v1/objects/${key}`, { method: 'PUT', body });
      assert.equal(res.status, 201);
      objects.set(key, createHash('sha256').update(body).digest('hex'));
    }
  });

  after(async () => {
    const lines = [...tally].map(([kind, t]) => `#   ${kind}: ${t.accepted} of ${t.attempts} accepted`);
    const total = [...tally.values()].reduce((s, t) => ({ a: s.a + t.attempts, x: s.x + t.accepted }), {
      a: 0,
      x: 0,
    });
    console.log(`# attack suite: ${total.x} accepted of ${total.a} attempts\n${lines.join('\n')}`);
    await Promise.all(agents.map((a) => a.stop()));
    await nc?.close();
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses every connection without a valid certificate of this mesh, for the node it claims', async () => {
    const target = `127.0.0.1:${agents[1]!.grpcPort}`;
    const now = Date.now();
    const foreignCa = await createTestCa(MESH); // another mesh's CA (same name, other key)
    const foreign = await testCredentials('node-a', { ca: foreignCa, mesh: MESH });
    const otherMesh = await testCredentials('node-a', { mesh: 'other' }); // our CA, another mesh
    const expiredKey = await createNodeKey('node-a');
    const expiredCert = await (
      await MeshCa.load(ca.material)
    ).issue({
      csrPem: expiredKey.csrPem,
      mesh: { namespace: 'local', name: MESH },
      node: 'node-a',
      ttlMs: 3600_000,
      now: new Date(now - 2 * 3600_000),
    });
    // A certificate signed by its own key (no CA at all) naming node-a.
    const selfSigned = await createTestCa(MESH);
    const selfKey = await createNodeKey('node-a');
    const selfCert = await (
      await MeshCa.load(selfSigned.material)
    ).issue({ csrPem: selfKey.csrPem, mesh: { namespace: 'local', name: MESH }, node: 'node-a' });
    const kinds: [string, ChannelCredentials][] = [
      ['plaintext', credentials.createInsecure()],
      ['TLS, no client certificate', tlsAs(ca)],
      [
        'a certificate from a CA not the mesh’s',
        tlsAs(ca, selfKey.keyPem, `${selfCert}\n${selfSigned.material.certPem}`),
      ],
      ['another mesh’s certificate (its own CA)', tlsAs(ca, foreign.keyPem, foreign.certPem)],
      ['another mesh’s certificate (same CA)', tlsAs(ca, otherMesh.keyPem, otherMesh.certPem)],
      ['an expired certificate', tlsAs(ca, expiredKey.keyPem, expiredCert)],
    ];
    for (const [kind, creds] of kinds) {
      const peer = attacker(target, creds);
      try {
        for (let i = 0; i < REPS; i++) {
          record(`${kind}: read`, await succeeded(peer.getManifest('asset/0')));
          record(`${kind}: purge`, await succeeded(peer.purge('asset/1', Date.now())));
          record(
            `${kind}: exchange`,
            await succeeded(
              peer.deliver({
                topic: 'orders',
                from: 'node-a',
                body: Buffer.from('x'),
                contentType: 'text/plain',
              }),
            ),
          );
        }
      } finally {
        peer.close();
      }
    }
    for (const [kind, t] of tally) if (kind.includes(':')) assert.equal(t.accepted, 0, kind);
    // The same client with a valid certificate of the mesh gets through: the refusals were the server's.
    const valid = await testCredentials('mallory', { mesh: MESH });
    const control = attacker(target, tlsAs(ca, valid.keyPem, valid.certPem));
    assert.equal((await control.getManifest('asset/0'))?.holds, true);
    control.close();
    valid.close();
    foreign.close();
    otherMesh.close();
  });

  it('refuses a node of the mesh that claims to be another node', async () => {
    const target = `127.0.0.1:${agents[1]!.grpcPort}`;
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const peer = new GrpcPeer({
      id: 'node-b',
      address: target,
      flowControlWindow: MiB,
      timeoutMs: 2000,
      from: 'node-a', // the claim: chunk requests say they come from node-a
      credentials: (seen) => peerChannelCredentials(mallory, 'node-b', seen),
    });
    const manifest = parseManifest((await peer.getManifest('asset/0'))!.manifest, isKey);
    try {
      for (let i = 0; i < REPS; i++) {
        record(
          'claimed sender of an exchange message',
          await succeeded(
            peer.deliver({
              topic: 'orders',
              from: 'node-a',
              body: Buffer.from('x'),
              contentType: 'text/plain',
            }),
          ),
        );
        record(
          'claimed holder',
          await succeeded(peer.hold(manifest, { nodeId: 'node-a', grpc: '127.0.0.1:1' })),
        );
        record(
          'claimed requester of chunks',
          await succeeded(drain(peer.fetchChunks(manifest.chunks.slice(0, 1), [manifest.size]))),
        );
        record(
          'claimed watcher',
          await succeeded(drain(peer.watch('asset/0', { nodeId: 'node-a', grpc: '127.0.0.1:1' }))),
        );
      }
      // The same node, speaking for itself, is served: the refusals were about the claims.
      assert.equal((await peer.getManifest('asset/0'))?.holds, true);
      await peer.deliver({
        topic: 'orders',
        from: 'mallory',
        body: Buffer.from('x'),
        contentType: 'text/plain',
      });
    } finally {
      peer.close();
      mallory.close();
    }
    for (const kind of [
      'claimed sender of an exchange message',
      'claimed holder',
      'claimed requester of chunks',
      'claimed watcher',
    ])
      assert.equal(tally.get(kind)?.accepted, 0, kind);
    const status = (await (await fetch(`${agents[1]!.url}/v1/status`)).json()) as {
      counters: { peersRefused: Record<string, number> };
    };
    assert.ok((status.counters.peersRefused.claim ?? 0) >= 4 * REPS, 'every forged claim counted');
  });

  it('admits no member on a forged announce: the address must prove the node id over mTLS', async () => {
    // A fake agent that answers Ping as whichever node was last announced at its address (behind a
    // TCP proxy, so that its address is new to the agents each time); its certificate is a valid one of the mesh for
    // another node (mallory), then one of another CA for the very id it claims.
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const foreignCa = await createTestCa(MESH);
    const foreign = await testCredentials('node-b', { ca: foreignCa, mesh: MESH });
    for (const [kind, identity] of [
      ['forged announce, a mesh node’s certificate for another id', mallory],
      ['forged announce, another CA’s certificate for the id', foreign],
    ] as const) {
      let claimed = 'node-b';
      const fake = new Server();
      fake.addService(peerService, {
        ping(call: ServerUnaryCall<{ sentAtMs: number }, unknown>, cb: sendUnaryData<unknown>) {
          cb(null, { nodeId: claimed, zone: 'z', region: 'r', sentAtMs: call.request.sentAtMs });
        },
      });
      const fakePort = await new Promise<number>((resolve, reject) =>
        fake.bindAsync(
          '127.0.0.1:0',
          ServerCredentials.createSsl(
            null,
            [{ private_key: Buffer.from(identity.keyPem), cert_chain: Buffer.from(identity.certPem) }],
            false,
          ),
          (e, p) => (e ? reject(e) : resolve(p)),
        ),
      );
      const proxy = createNetServer((socket) => {
        const upstream = netConnect(fakePort, '127.0.0.1');
        socket.pipe(upstream).pipe(socket);
        socket.on('error', () => upstream.destroy());
        upstream.on('error', () => socket.destroy());
      });
      proxy.listen(0, '127.0.0.1');
      await once(proxy, 'listening');
      const address = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      try {
        for (let i = 0; i < REPS; i++) {
          for (const nodeId of ['node-b', `ghost-${i}`]) {
            claimed = nodeId;
            const dropped = async (agent: AgentProcess) => {
              const s = (await (await fetch(`${agent.url}/v1/status`)).json()) as {
                counters: { control: { dropped: Record<string, number> } };
                mesh: { members: { nodeId: string; grpc: string; state: string }[] };
              };
              const d = s.counters.control.dropped;
              return {
                refused: (d['unverified-move'] ?? 0) + (d['unproven-member'] ?? 0),
                admitted: s.mesh.members.some((m) => m.grpc === address && m.state === 'alive'),
              };
            };
            const before = await Promise.all(agents.map(dropped));
            nc.publish(
              subjectFor(MESH, 'member.announce'),
              encodeEvent({
                v: 1,
                type: 'member.announce',
                mesh: MESH,
                from: nodeId,
                sentAtMs: Date.now(),
                body: {
                  member: {
                    nodeId,
                    zone: 'z',
                    region: 'r',
                    grpc: address,
                    weight: 1000,
                    incarnation: Math.floor(Date.now() / 1000) + 10 + i,
                  },
                },
              }),
            );
            // Each agent decides (node-b ignores claims to be itself): it admits the claimed member,
            // or counts the claim as unproven.
            const admitted = await Promise.all(
              agents.map((agent, n) =>
                NODES[n] === nodeId
                  ? Promise.resolve(undefined)
                  : eventually(
                      async () => {
                        const now = await dropped(agent);
                        if (now.admitted) return true;
                        return now.refused > before[n]!.refused ? false : undefined;
                      },
                      10_000,
                      `${nodeId}'s claim decided`,
                    ),
              ),
            );
            for (const a of admitted) if (a !== undefined) record(kind, a);
          }
        }
      } finally {
        proxy.close();
        fake.forceShutdown();
      }
    }
    mallory.close();
    foreign.close();
    for (const kind of tally.keys())
      if (kind.startsWith('forged announce')) assert.equal(tally.get(kind)!.accepted, 0, kind);
    // The real node-b is still a member everywhere, at its own address.
    for (const agent of [agents[0]!, agents[2]!]) await peersAlive(agent, 2);
  });

  it('lost and altered nothing', async () => {
    let intact = 0;
    for (const agent of agents)
      for (const [key, digest] of objects) {
        const res = await fetch(`${agent.url}/v1/objects/${key}`);
        const body = Buffer.from(await res.arrayBuffer());
        if (res.status === 200 && createHash('sha256').update(body).digest('hex') === digest) intact++;
      }
    console.log(
      `# objects intact after the attacks: ${intact} of ${agents.length * objects.size} copies read`,
    );
    assert.equal(intact, agents.length * objects.size);
  });
});
