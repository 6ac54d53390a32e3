import assert from 'node:assert/strict';
import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
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
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { EventSigner } from '../src/security/event-signer.ts';
import type { NodeCredentials } from '../src/security/node-credentials.ts';
import { type ControlEvent, encodeEvent, revocationSignedBytes, subjectFor } from '@edgemesh/contracts';
import { createNodeKey, MeshCa } from '@edgemesh/identity';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { natsUnavailable, type NatsServer, startNatsServer } from '../harness/nats-server.ts';
import { createTestCa, sharedTestCa, type TestCa, testCredentials, testPeer } from '../harness/test-ca.ts';
import { GrpcPeer } from '../src/transport/peer-client.ts';
import { peerChannelCredentials } from '../src/security/grpc-credentials.ts';
import { type Manifest, parseManifest } from '../src/cache/manifest.ts';
import { rootDigest } from '../src/cache/chunking.ts';
import { NodeSigner } from '../src/security/node-signer.ts';
import { peerService, toWire } from '../src/transport/peer-service.ts';
import { startEvilPeer } from './support/evil-peer.ts';
import { isKey } from '../src/keys.ts';
import { Tombstones } from '../src/cache/tombstones.ts';
import { systemClock } from '../src/time/clock.ts';

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

/** Fails unless no attempt of any of `kinds` was accepted. */
function noneAccepted(kinds: Iterable<string>): void {
  for (const kind of kinds) assert.equal(tally.get(kind)?.accepted, 0, kind);
}

/** Tries, through `peer`, a read, a purge and a Release of `key`, and an exchange message from `from`: recorded under `kind`. */
async function tryEverything(kind: string, peer: GrpcPeer, key: string, from: string): Promise<void> {
  record(`${kind}: read`, await succeeded(peer.getManifest('asset/0')));
  record(`${kind}: purge`, await succeeded(peer.purge(key, Date.now(), undefined)));
  record(`${kind}: release`, await succeeded(peer.release([key], { nodeId: from, grpc: '127.0.0.1:1' })));
  record(
    `${kind}: exchange`,
    await succeeded(
      peer.deliver({ topic: 'orders', from, body: Buffer.from('x'), contentType: 'text/plain' }),
    ),
  );
}

/** Publishes `event` on the control plane as it is, signed by `signer` (in its headers) when given. */
function publish(nc: NatsConnection, event: ControlEvent, signer?: EventSigner): void {
  const data = encodeEvent(event);
  const h = natsHeaders();
  for (const [k, v] of Object.entries(signer?.sign(data) ?? {})) h.set(k, v);
  nc.publish(subjectFor(MESH, event.type), data, signer ? { headers: h } : {});
}

/** The announce an agent sends of itself: `nodeId` at `grpc`. */
const announceOf = (nodeId: string, grpc: string, incarnation: number): ControlEvent => ({
  v: 1,
  type: 'member.announce',
  mesh: MESH,
  from: nodeId,
  sentAtMs: Date.now(),
  body: { member: { nodeId, zone: 'z', region: 'r', grpc, weight: 1000, incarnation } },
});

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
        for (let i = 0; i < REPS; i++) await tryEverything(kind, peer, 'asset/1', 'node-a');
      } finally {
        peer.close();
      }
    }
    noneAccepted([...tally.keys()].filter((kind) => kind.includes(':')));
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
          'claimed releaser',
          await succeeded(peer.release(['asset/0'], { nodeId: 'node-a', grpc: '127.0.0.1:1' })),
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
    noneAccepted([
      'claimed sender of an exchange message',
      'claimed holder',
      'claimed releaser',
      'claimed requester of chunks',
      'claimed watcher',
    ]);
    const status = (await (await fetch(`${agents[1]!.url}/v1/status`)).json()) as {
      counters: { peersRefused: Record<string, number> };
    };
    assert.ok((status.counters.peersRefused.claim ?? 0) >= 5 * REPS, 'every forged claim counted');
  });

  it('admits no member on a forged announce: signed by the node it announces, which proves its id over mTLS', async () => {
    // A fake agent that answers Ping as whichever node was last announced at its address (behind a
    // TCP proxy), with a valid certificate of the mesh for mallory or one of another CA.
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const foreignCa = await createTestCa(MESH);
    const foreign = await testCredentials('mallory', { ca: foreignCa, mesh: MESH });
    const malloryEvents = new EventSigner(mallory);
    const foreignEvents = new EventSigner(foreign);
    const kinds: [string, NodeCredentials, (which: number) => string, EventSigner | undefined][] = [
      ['forged announce, unsigned', mallory, (i) => (i === 0 ? 'node-b' : 'ghost'), undefined],
      [
        'forged announce, signed by a mesh node for another id',
        mallory,
        (i) => (i === 0 ? 'node-b' : 'ghost'),
        malloryEvents,
      ],
      ['forged announce, signed by another CA’s node', foreign, () => 'mallory', foreignEvents],
      ['announce of a mesh node at an address that cannot prove it', foreign, () => 'mallory', malloryEvents],
    ];
    for (const [kind, identity, claim, signer] of kinds) {
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
          for (const which of claim(0) === claim(1) ? [0] : [0, 1]) {
            const nodeId = claim(which) === 'ghost' ? `ghost-${i}` : claim(which);
            claimed = nodeId;
            const state = async (agent: AgentProcess) => {
              const s = (await (await fetch(`${agent.url}/v1/status`)).json()) as {
                counters: { control: { dropped: Record<string, number> } };
                mesh: { members: { nodeId: string; grpc: string; state: string }[] };
              };
              return {
                refused: Object.values(s.counters.control.dropped).reduce((a, b) => a + b, 0),
                admitted: s.mesh.members.some((m) => m.grpc === address && m.state === 'alive'),
              };
            };
            const before = await Promise.all(agents.map(state));
            publish(nc, announceOf(nodeId, address, Math.floor(Date.now() / 1000) + 10 + i), signer);
            // Each agent decides (an agent ignores claims to be itself): it admits the claimed
            // member, or drops the announce (counted, whatever the reason).
            const admitted = await Promise.all(
              agents.map((agent, n) =>
                NODES[n] === nodeId
                  ? Promise.resolve(undefined)
                  : eventually(
                      async () => {
                        const now = await state(agent);
                        if (now.admitted) return true;
                        return now.refused > before[n]!.refused ? false : undefined;
                      },
                      10_000,
                      `${nodeId}'s announce decided`,
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
    noneAccepted(kinds.map(([kind]) => kind));
    // The real node-b is still a member everywhere, at its own address.
    for (const agent of [agents[0]!, agents[2]!]) await peersAlive(agent, 2);
  });

  it('applies no forged purge from NATS: unsigned, a stranger’s, in another’s name, or from the future', async () => {
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const foreignCa = await createTestCa(MESH);
    const foreign = await testCredentials('node-a', { ca: foreignCa, mesh: MESH });
    const otherMesh = await testCredentials('node-a', { mesh: 'other' });
    const as = (id: NodeCredentials) => new EventSigner(id);
    const YEAR_2100 = Date.UTC(2100, 0, 1);
    const kinds: [string, { signer?: EventSigner; from: string; sentAtMs?: number; purgedAtMs?: number }][] =
      [
        ['forged purge on NATS, unsigned', { from: 'node-a' }],
        ['forged purge on NATS, signed by another CA’s node', { signer: as(foreign), from: 'node-a' }],
        ['forged purge on NATS, signed by another mesh’s node', { signer: as(otherMesh), from: 'node-a' }],
        ['forged purge on NATS, a mesh node in another’s name', { signer: as(mallory), from: 'node-a' }],
        [
          'future-dated purge on NATS (purged in 2100)',
          { signer: as(mallory), from: 'mallory', purgedAtMs: YEAR_2100 },
        ],
        [
          'future-dated purge on NATS (sent in 2100)',
          { signer: as(mallory), from: 'mallory', sentAtMs: YEAR_2100 },
        ],
      ];
    const state = async (agent: AgentProcess) => {
      const s = (await (await fetch(`${agent.url}/v1/status`)).json()) as {
        counters: { control: { dropped: Record<string, number> }; removals: Record<string, number> };
      };
      return {
        dropped: Object.values(s.counters.control.dropped).reduce((a, b) => a + b, 0),
        deleted: s.counters.removals.deleted ?? 0,
      };
    };
    try {
      for (const [kind, forged] of kinds)
        for (let i = 0; i < REPS; i++) {
          const before = await Promise.all(agents.map(state));
          const now = Date.now();
          publish(
            nc,
            {
              v: 1,
              type: 'object.purge',
              mesh: MESH,
              from: forged.from,
              sentAtMs: forged.sentAtMs ?? now,
              body: { key: `asset/${i % objects.size}`, purgedAtMs: forged.purgedAtMs ?? now },
            },
            forged.signer,
          );
          const applied = await Promise.all(
            agents.map((agent, n) =>
              eventually(
                async () => {
                  const after = await state(agent);
                  if (after.deleted > before[n]!.deleted) return true;
                  return after.dropped > before[n]!.dropped ? false : undefined;
                },
                10_000,
                `${kind} decided`,
              ),
            ),
          );
          for (const a of applied) record(kind, a);
        }
    } finally {
      for (const id of [mallory, foreign, otherMesh]) id.close();
    }
    noneAccepted(kinds.map(([kind]) => kind));
  });

  it('exiles no node on one node’s word, or on unsigned or stranger’s reports; heeds two nodes’ signed reports, and forgets them', async () => {
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const trent = await testCredentials('trent', { mesh: MESH });
    const foreign = await testCredentials('eve', { ca: await createTestCa(MESH), mesh: MESH });
    const report = (from: string, distrusted: string[], signer?: EventSigner) =>
      publish(
        nc,
        {
          v: 1,
          type: 'node.stats',
          mesh: MESH,
          from,
          sentAtMs: Date.now(),
          body: { hits: 0, misses: 0, bytesFromPeers: 0, bytesFromOrigin: 0, startedAtMs: 1, distrusted },
        },
        signer,
      );
    type Seen = {
      mesh: { reportedDistrusted: Record<string, number> };
      counters: { control: { dropped: Record<string, number> } };
    };
    const seen = async (agent: AgentProcess) =>
      (await (await fetch(`${agent.url}/v1/status`)).json()) as Seen;
    const dropped = async (agent: AgentProcess) =>
      Object.values((await seen(agent)).counters.control.dropped).reduce((a, b) => a + b, 0);
    const [a] = agents as [AgentProcess];
    /** How many peers agent a does not fetch from (distrusted on its own word or its peers'). */
    const distrusted = async () =>
      Number(
        /^edgemesh_peers_distrusted(?:\{[^}]*\})? (\d+)/m.exec(
          await (await fetch(`${a.url}/metrics`)).text(),
        )?.[1],
      );
    try {
      for (let i = 0; i < REPS; i++) {
        // Unsigned, and signed by another CA's node: dropped before anyone reads them.
        for (const [kind, send] of [
          ['hearsay: unsigned report', () => report('mallory', ['node-b'])],
          ['hearsay: a stranger’s report', () => report('eve', ['node-b'], new EventSigner(foreign))],
        ] as const) {
          const count = async () => (await seen(a)).mesh.reportedDistrusted['node-b'] ?? 0;
          const [before, reports] = [await dropped(a), await count()];
          send();
          await eventually(async () => ((await dropped(a)) > before ? true : undefined), 10_000, kind);
          record(kind, (await count()) > reports);
        }
        // One mesh node's signed word: heard, and not enough.
        report('mallory', ['node-b', 'node-c'], new EventSigner(mallory));
        await eventually(
          async () => ((await seen(a)).mesh.reportedDistrusted['node-b'] === 1 ? true : undefined),
          10_000,
          'the report heard',
        );
        record('hearsay: one node’s word', (await distrusted()) > 0);
      }
      // A second node's signed report: node-b is avoided; withdrawn, it is trusted again.
      report('trent', ['node-b'], new EventSigner(trent));
      await eventually(
        async () => ((await seen(a)).mesh.reportedDistrusted['node-b'] === 2 ? true : undefined),
        10_000,
        'two reports',
      );
      assert.equal(await distrusted(), 1, 'node-b distrusted');
      report('trent', [], new EventSigner(trent));
      await eventually(
        async () => ((await seen(a)).mesh.reportedDistrusted['node-b'] === 1 ? true : undefined),
        10_000,
        'withdrawn',
      );
      assert.equal(await distrusted(), 0);
      report('mallory', [], new EventSigner(mallory));
    } finally {
      for (const id of [mallory, trent, foreign]) id.close();
    }
    noneAccepted(['hearsay: unsigned report', 'hearsay: a stranger’s report', 'hearsay: one node’s word']);
  });

  it('serves and stores nothing from a manifest no node of the mesh vouches for', async () => {
    // A node of the mesh (mallory) that a reader has as a static peer serves, for keys no one else
    // has, forged but self-consistent objects whose manifests are unsigned, signed by another CA's
    // node, by another mesh's node, or carry a genuine signature taken from a real object.
    const genuine = (await (
      await testPeer(`127.0.0.1:${agents[0]!.grpcPort}`, { mesh: MESH })
    ).getManifest('asset/0'))!;
    const realSignature = parseManifest(genuine.manifest, isKey).signature!;
    const foreignCa = await createTestCa(MESH);
    const strangers = {
      'another CA’s node': await testCredentials('node-a', { ca: foreignCa, mesh: MESH }),
      'another mesh’s node': await testCredentials('node-a', { mesh: 'other' }),
    };
    const evil = await startEvilPeer({
      manifest: undefined,
      chunks: new Map(),
      nodeId: 'mallory',
      mesh: MESH,
    });
    const reader = await startAgentProcess([
      ...['--node-id', 'reader', '--mesh', MESH, '--store.dir', join(dir, 'reader')],
      ...['--peers', evil.address],
    ]);
    try {
      const forged = (key: string) => {
        const body = randomBytes(64 * 1024 + 1);
        const digest = createHash('sha256').update(body).digest('hex');
        const chunkSize = 4 * MiB;
        const manifest = {
          key,
          size: body.length,
          chunkSize,
          chunks: [digest],
          root: rootDigest(body.length, chunkSize, [digest]),
          createdAtMs: Date.now(),
        };
        return { manifest, chunks: new Map([[digest, body]]) };
      };
      const kinds: [string, (m: ReturnType<typeof forged>['manifest']) => Manifest][] = [
        ['forged manifest, unsigned', (m) => m],
        [
          'forged manifest, a genuine signature of another object',
          (m) => ({ ...m, signature: realSignature }),
        ],
        ...Object.entries(strangers).map(
          ([who, id]) =>
            [
              `forged manifest, signed by ${who}`,
              (m: Manifest) => ({ ...m, signature: new NodeSigner(id).sign(m) }),
            ] as [string, (m: Manifest) => Manifest],
        ),
      ];
      for (const [kind, sign] of kinds)
        for (let i = 0; i < REPS; i++) {
          const key = `forged/${tally.size}/${i}`;
          const { manifest, chunks } = forged(key);
          evil.serve(toWire(sign(manifest)), chunks);
          const res = await fetch(`${reader.url}/v1/objects/${key}`);
          await res.arrayBuffer();
          record(kind, res.status === 200);
        }
      const status = await reader.status();
      assert.equal(status.cache.entries, 0, 'nothing stored');
      assert.equal(evil.served(), 0, 'not one chunk even asked for');
    } finally {
      await reader.stop();
      evil.close();
      for (const id of Object.values(strangers)) id.close();
    }
    noneAccepted([...tally.keys()].filter((kind) => kind.startsWith('forged manifest')));
  });

  it('copies nothing from a source that is not a confirmed member, and indexes no unsigned Hold', async () => {
    const target = `127.0.0.1:${agents[1]!.grpcPort}`;
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const peer = new GrpcPeer({
      id: 'node-b',
      address: target,
      flowControlWindow: MiB,
      timeoutMs: 5000,
      from: 'mallory',
      credentials: (seen) => peerChannelCredentials(mallory, 'node-b', seen),
    });
    const evil = await startEvilPeer({
      manifest: undefined,
      chunks: new Map(),
      nodeId: 'mallory',
      mesh: MESH,
    });
    try {
      const real = parseManifest((await peer.getManifest('asset/2'))!.manifest, isKey);
      for (let i = 0; i < REPS; i++) {
        for (const nodeId of ['mallory', 'node-a']) {
          record(
            'Replicate naming a forged source',
            await succeeded(peer.replicate(real, { nodeId, grpc: evil.address })),
          );
        }
        const unsigned: Manifest = { ...real, createdAtMs: real.createdAtMs + 1 };
        delete (unsigned as { signature?: unknown }).signature;
        record(
          'Hold with an unsigned manifest',
          await succeeded(peer.hold(unsigned, { nodeId: 'mallory', grpc: evil.address })),
        );
      }
    } finally {
      peer.close();
      evil.close();
      mallory.close();
    }
    noneAccepted(['Replicate naming a forged source', 'Hold with an unsigned manifest']);
  });

  it('drops no copy on a member’s word that it was purged: a "purged" answer needs a signed purge', async () => {
    // mallory joins as a real member (its own announce, signed; its own certificate at its address),
    // with a large weight so that it owns most keys, and answers every GetManifest and Replicate with
    // "purged just now", unsigned.
    const evil = await startEvilPeer({
      manifest: undefined,
      chunks: new Map(),
      nodeId: 'mallory',
      mesh: MESH,
      claimPurged: true,
    });
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const state = async (agent: AgentProcess) => {
      const s = (await (await fetch(`${agent.url}/v1/status`)).json()) as {
        counters: { peersRefused: Record<string, number>; removals: Record<string, number> };
        mesh: { members: { nodeId: string; state: string }[] };
      };
      return {
        refused: s.counters.peersRefused.purge ?? 0,
        deleted: s.counters.removals.deleted ?? 0,
        malloryAlive: s.mesh.members.some((m) => m.nodeId === 'mallory' && m.state === 'alive'),
      };
    };
    const before = await Promise.all(agents.map(state));
    const announce = () =>
      publish(
        nc,
        // Above the lives claimed for mallory by the tests before (at most now + 10 + REPS): an older
        // own announcement does not move a member already known (a replay of where it was).
        announceOf('mallory', evil.address, Math.floor(Date.now() / 1000) + 1000),
        new EventSigner(mallory),
      );
    try {
      announce();
      // Every agent admits mallory and, in the repair that follows, hears "purged" from it.
      await Promise.all(
        agents.map((agent, n) =>
          eventually(
            async () => {
              const now = await state(agent);
              return now.malloryAlive && now.refused >= before[n]!.refused + 3 ? true : undefined;
            },
            20_000,
            'mallory admitted and its "purged" answers refused',
          ),
        ),
      );
      const after = await Promise.all(agents.map(state));
      for (const [n, a] of after.entries()) {
        for (let i = 0; i < a.refused - before[n]!.refused; i++)
          record('a member answering "purged" (unsigned)', false);
        for (let i = 0; i < a.deleted - before[n]!.deleted; i++)
          record('a member answering "purged" (unsigned)', true);
      }
    } finally {
      evil.close();
      mallory.close();
    }
    noneAccepted(['a member answering "purged" (unsigned)']);
  });

  it('tells no member but a purge’s signer whether it held the key: a signed purge replayed over gRPC', async () => {
    // The signer's DELETE asks the key's owners over gRPC whether they had it. Anyone else sending
    // the same signed purge (a member replaying it) has it applied, but must learn nothing from the
    // answer: the node named by the caller's certificate has to be the node the signature names.
    const target = `127.0.0.1:${agents[1]!.grpcPort}`;
    const nodeA = await testCredentials('node-a', { mesh: MESH });
    const mallory = await testCredentials('mallory', { mesh: MESH });
    const as = (id: NodeCredentials, from: string) =>
      new GrpcPeer({
        id: 'node-b',
        address: target,
        flowControlWindow: MiB,
        timeoutMs: 2000,
        from,
        credentials: (seen) => peerChannelCredentials(id, 'node-b', seen),
      });
    const fromA = as(nodeA, 'node-a');
    const fromMallory = as(mallory, 'mallory');
    const holds = async (key: string) => (await fromA.getManifest(key))?.holds === true;
    try {
      for (let i = 0; i < REPS; i++) {
        const key = `secret/${i}`;
        const put = await fetch(`${agents[0]!.url}/v1/objects/${key}`, {
          method: 'PUT',
          body: randomBytes(1000),
        });
        assert.equal(put.status, 201);
        assert.ok(await holds(key), 'node-b holds a copy (3 write copies on 3 nodes)');
        // A purge signed by node-a, as its DELETE would send it; mallory's delivery comes first on
        // even rounds, second on odd ones.
        const purgedAtMs = Date.now();
        const signature = new NodeSigner(nodeA).signPurge(key, purgedAtMs);
        const first = i % 2 === 0 ? fromMallory : fromA;
        const second = first === fromA ? fromMallory : fromA;
        const answers = new Map([
          [first, await first.purge(key, purgedAtMs, signature)],
          [second, await second.purge(key, purgedAtMs, signature)],
        ]);
        assert.equal(await holds(key), false, 'purged, whoever delivered it');
        record('whether a node held a key, learned by replaying a signed purge', answers.get(fromMallory)!);
        assert.equal(answers.get(fromA), true, 'the signer hears that node-b had it');
      }
    } finally {
      fromA.close();
      fromMallory.close();
      nodeA.close();
      mallory.close();
    }
    noneAccepted(['whether a node held a key, learned by replaying a signed purge']);
  });

  it('refuses a revoked node everywhere within seconds of the CA-signed revocation, and no forged one', async () => {
    const trudy = await testCredentials('trudy', { mesh: MESH });
    const peers = agents.map(
      (a) =>
        new GrpcPeer({
          id: 'agent',
          address: `127.0.0.1:${a.grpcPort}`,
          flowControlWindow: MiB,
          timeoutMs: 2000,
          from: 'trudy',
          credentials: (seen) => peerChannelCredentials(trudy, undefined, seen),
        }),
    );
    const revoke = (nodes: string[], key: string) => {
      const issuedAtMs = Date.now();
      const signature = sign('sha256', revocationSignedBytes(MESH, nodes, issuedAtMs), createPrivateKey(key));
      publish(nc, {
        v: 1,
        type: 'mesh.revocations',
        mesh: MESH,
        from: 'operator',
        sentAtMs: issuedAtMs,
        body: { nodes, issuedAtMs, signature: signature.toString('base64') },
      });
    };
    try {
      // Before: trudy, a node of the mesh, is served by every agent.
      for (const peer of peers) assert.equal((await peer.getManifest('asset/0'))?.holds, true);
      // A list signed by another CA changes nothing.
      const foreignCa = await createTestCa(MESH);
      revoke(['trudy'], foreignCa.material.keyPem);
      await Promise.all(
        agents.map((agent) =>
          eventually(
            async () =>
              (
                (await agent.status()) as unknown as {
                  counters: { control: { dropped: Record<string, number> } };
                }
              ).counters.control.dropped['revocations-bad-signature']
                ? true
                : undefined,
            10_000,
            'the forged list dropped',
          ),
        ),
      );
      for (const peer of peers)
        record('a revocation list signed by another CA', !(await succeeded(peer.getManifest('asset/0'))));
      // The mesh CA revokes trudy: every agent refuses it, on the connections it already has.
      const started = performance.now();
      revoke(['trudy'], ca.material.keyPem);
      await Promise.all(
        peers.map((peer) =>
          eventually(
            async () => ((await succeeded(peer.getManifest('asset/0'))) ? undefined : true),
            10_000,
            'refused',
          ),
        ),
      );
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `# a revoked node was refused by all ${agents.length} agents ${seconds.toFixed(2)} s after the revocation`,
      );
      for (let i = 0; i < REPS; i++)
        for (const peer of peers) await tryEverything('a revoked node', peer, 'asset/0', 'trudy');
    } finally {
      for (const peer of peers) peer.close();
      trudy.close();
    }
    noneAccepted([
      'a revocation list signed by another CA',
      'a revoked node: read',
      'a revoked node: purge',
      'a revoked node: release',
      'a revoked node: exchange',
    ]);
  });

  it('serves local clients only with a valid token, only what their rules give; queued messages go to their receiver', async () => {
    const tokens = {
      writer: 'writer-token-0123456789',
      reader: 'reader-token-0123456789',
      receiver: 'receiver-token-0123456789',
      other: 'other-workload-token-0123',
    };
    await writeFile(
      join(dir, 'tokens.yaml'),
      `tokens:\n${Object.entries(tokens)
        .map(([name, token]) => `  - { name: ${name}, token: ${token} }`)
        .join('\n')}\n`,
    );
    await writeFile(
      join(dir, 'access.yaml'),
      JSON.stringify({
        access: {
          tokensFile: join(dir, 'tokens.yaml'),
          rules: [
            {
              subjects: ['token:writer'],
              verbs: ['read', 'write', 'purge', 'send'],
              prefixes: ['team-a/', 'orders'],
            },
            { subjects: ['token:reader'], verbs: ['read'], prefixes: ['team-a/'] },
            { subjects: ['token:receiver'], verbs: ['receive'], prefixes: ['orders'] },
            { subjects: ['token:other'], verbs: ['receive'], prefixes: ['other'] },
          ],
        },
      }),
    );
    const guarded = await startAgentProcess([
      ...['--node-id', 'guarded', '--store.dir', join(dir, 'guarded'), '--config', join(dir, 'access.yaml')],
      ...['--access.anonymous', 'none', '--access.public-metrics', 'false'],
    ]);
    const as = (who?: keyof typeof tokens, token = who && tokens[who]) =>
      token ? { Authorization: `Bearer ${token}` } : ({} as Record<string, string>);
    const call = async (method: string, path: string, headers: Record<string, string>, body?: string) => {
      const res = await fetch(`${guarded.url}${path}`, { method, headers, ...(body ? { body } : {}) });
      await res.body?.cancel(); // the status is the answer (a granted receive would stream on)
      return res.status;
    };
    try {
      // Controls: the writer writes and reads; the reader reads, and sees the metrics.
      assert.equal(await call('PUT', '/v1/objects/team-a/doc', as('writer'), 'secret'), 201);
      assert.equal(await call('GET', '/metrics', as('reader')), 200);
      assert.equal(await call('GET', '/v1/objects/team-a/doc', as('reader')), 200);
      // A message for `orders` waits in the node's queue (no one listening yet).
      assert.equal(await call('POST', '/v1/exchange/guarded/orders', as('writer'), 'order-1'), 202);
      const attempts: [string, string, string, Record<string, string>, string?][] = [
        ['an unauthenticated client', 'GET', '/v1/objects/team-a/doc', as()],
        ['an unauthenticated client', 'PUT', '/v1/objects/team-a/doc', as(), 'forged'],
        ['an unauthenticated client', 'DELETE', '/v1/objects/team-a/doc', as()],
        ['an unauthenticated client', 'GET', '/v1/status', as()],
        ['an unauthenticated client', 'GET', '/metrics', as()], // access.publicMetrics: false
        [
          'a client with a wrong token',
          'GET',
          '/v1/objects/team-a/doc',
          as(undefined, 'wrong-token-0123456789'),
        ],
        [
          'a client with a wrong token',
          'DELETE',
          '/v1/objects/team-a/doc',
          as(undefined, 'wrong-token-0123456789'),
        ],
        ['an unauthorised client', 'PUT', '/v1/objects/team-a/doc', as('reader'), 'forged'],
        ['an unauthorised client', 'DELETE', '/v1/objects/team-a/doc', as('reader')],
        ['an unauthorised client', 'PUT', '/v1/objects/team-b/doc', as('writer'), 'x'],
        ['an unauthorised client', 'GET', '/v1/objects/team-a/doc', as('other')],
        ['an unauthorised client', 'POST', '/v1/exchange/guarded/orders', as('reader'), 'forged order'],
      ];
      for (let i = 0; i < REPS; i++)
        for (const [kind, method, path, headers, body] of attempts) {
          const status = await call(method, path, headers, body);
          record(kind, status < 400);
        }
      // Another workload asks for the queued order: refused; its receiver gets it, and only that one.
      for (let i = 0; i < REPS; i++)
        record(
          'another workload taking a queued exchange message',
          (await call('GET', '/v1/exchange/orders', as('other'))) < 400,
        );
      const stream = await fetch(`${guarded.url}/v1/exchange/orders`, { headers: as('receiver') });
      assert.equal(stream.status, 200);
      const reader = stream.body!.getReader();
      const chunk = await Promise.race([
        reader.read(),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('the receiver never got its queued message')), 5000).unref(),
        ),
      ]);
      const first = JSON.parse(Buffer.from(chunk.value).toString().split('\n')[0]!) as { body: string };
      assert.equal(Buffer.from(first.body, 'base64').toString(), 'order-1');
      await reader.cancel();
      assert.equal(await call('GET', '/v1/objects/team-a/doc', as('reader')), 200, 'still there, unchanged');
      // The writer purges it: the signed purge names the client that asked for it.
      assert.equal(await call('DELETE', '/v1/objects/team-a/doc', as('writer')), 204);
      const tombstones = await Tombstones.open(join(dir, 'guarded'), systemClock);
      assert.equal(tombstones.signatureOf('team-a/doc')?.by, 'token:writer');
      const status = await (await fetch(`${guarded.url}/v1/status`, { headers: as('writer') })).json();
      console.log(
        `# local clients refused: ${JSON.stringify((status as { counters: { clientsRefused: unknown } }).counters.clientsRefused)}`,
      );
    } finally {
      await guarded.stop();
    }
    noneAccepted([
      'an unauthenticated client',
      'a client with a wrong token',
      'an unauthorised client',
      'another workload taking a queued exchange message',
    ]);
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
