import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Server } from '@grpc/grpc-js';
import { digestOf } from '../cache/chunking.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import { GrpcPeer } from './peer-client.ts';
import { bindPeerServer, createPeerServer } from './peer-server.ts';
import { testCredentials } from '../../harness/test-ca.ts';
import {
  peerChannelCredentials,
  peerServerCredentials,
  unauthenticated,
} from '../security/grpc-credentials.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import { MAX_DIGESTS_PER_FETCH } from './peer-service.ts';
import { PeerError, type ReceivedChunk } from './peer-transport.ts';

const MiB = 2 ** 20;

async function drain(chunks: AsyncIterable<ReceivedChunk>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of chunks) out.push(c.data);
  return out;
}

describe('peer gRPC server and client', () => {
  let dir: string;
  let server: Server;
  let peer: GrpcPeer;
  const data = randomBytes(5 * MiB + 3);
  let chunks: readonly string[];
  let serverId: NodeCredentials;
  let clientId: NodeCredentials;
  let port: number;
  /** A peer server as node srv, with `options` added (its store, a replicate handler). */
  const serverOf = (options: Partial<Parameters<typeof createPeerServer>[0]>) =>
    createPeerServer({
      store: undefined as never,
      counters: new Counters(),
      node: { id: 'srv', zone: 'z', region: 'r' },
      logger: createLogger({ level: 'silent', nodeId: 'srv' }),
      flowControlWindow: 16 * MiB,
      authenticate: (call) => serverId.authenticate(call.getAuthContext().sslPeerCertificate),
      refuse: unauthenticated,
      ...options,
    });
  /** The client of node cli to srv at `port`, with control calls timing out after `timeoutMs`. */
  const clientTo = (at: number, timeoutMs = 2000) =>
    new GrpcPeer({
      id: 'srv',
      address: `127.0.0.1:${at}`,
      flowControlWindow: 16 * MiB,
      timeoutMs,
      credentials: (seen) => peerChannelCredentials(clientId, 'srv', seen),
    });

  before(async () => {
    [serverId, clientId] = await Promise.all([testCredentials('srv'), testCredentials('cli')]);
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-grpc-'));
    const store = await ObjectStore.open({
      dir,
      maxBytes: 64 * MiB,
      memoryBytes: 0,
      maxObjectBytes: 64 * MiB,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    chunks = (await store.put('k', [data], { size: data.length })).chunks;
    server = serverOf({ store });
    port = await bindPeerServer(server, '127.0.0.1', 0, peerServerCredentials(serverId));
    peer = clientTo(port);
  });
  after(async () => {
    peer.close();
    serverId.close();
    clientId.close();
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves manifests, chunks in order and pings', async () => {
    const answer = (await peer.getManifest('k'))!;
    assert.equal(answer.holds, true);
    const m = answer.manifest as { size: number; chunks: string[] };
    assert.equal(m.size, data.length);
    assert.deepEqual(m.chunks, chunks);
    const got = await drain(peer.fetchChunks(chunks, [4 * MiB, MiB + 3]));
    assert.deepEqual(Buffer.concat(got), data);
    const pong = await peer.ping();
    assert.deepEqual([pong.nodeId, pong.zone, pong.region], ['srv', 'z', 'r']);
  });

  it('says when a ping set up its connection (its round trip took the handshakes: no sample of the peer’s)', async () => {
    const client = clientTo(port);
    try {
      assert.equal((await client.ping()).connecting, true, 'the first ping of a new client');
      assert.equal((await client.ping()).connecting, undefined, 'the next, on the connection now up');
    } finally {
      client.close();
    }
  });

  it('tells a pinging member the incarnation it knows of it: of the node its certificate names, whatever it claims', async () => {
    const known: Record<string, number> = { cli: 42 * 1_000_000, mallory: 99 * 1_000_000 };
    const s = serverOf({ incarnationOf: (id) => known[id] });
    const at = await bindPeerServer(s, '127.0.0.1', 0, peerServerCredentials(serverId));
    const honest = clientTo(at);
    // cli's certificate, claiming to be mallory: the answer is about cli.
    const claiming = new GrpcPeer({
      id: 'srv',
      address: `127.0.0.1:${at}`,
      flowControlWindow: 16 * MiB,
      timeoutMs: 2000,
      from: 'mallory',
      credentials: (seen) => peerChannelCredentials(clientId, 'srv', seen),
    });
    try {
      assert.equal((await honest.ping()).yourIncarnation, 42 * 1_000_000);
      assert.equal((await claiming.ping()).yourIncarnation, 42 * 1_000_000);
      delete known.cli;
      assert.equal((await honest.ping()).yourIncarnation, undefined, 'none known: none said');
    } finally {
      honest.close();
      claiming.close();
      s.forceShutdown();
    }
  });

  it('waits for a Replicate as long as the caller’s signal allows, not the control-call timeout (a large copy over a slow link)', async () => {
    let copied = () => undefined as void;
    const slow = serverOf({
      // The copy ends when the test says so: after the client's 200 ms call timeout has passed.
      replicate: () => new Promise((resolve) => (copied = () => resolve('stored'))),
    });
    const slowPort = await bindPeerServer(slow, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(slowPort, 200);
    try {
      const manifest = { key: 'big', root: 'ab'.repeat(32) } as never;
      const answer = client.replicate(manifest, { nodeId: 'cli', grpc: 'x:1' }, AbortSignal.timeout(60_000));
      await new Promise((r) => setTimeout(r, 600)); // three times the call timeout
      copied();
      assert.deepEqual(await answer, {});
      // ...and the signal still ends it.
      const cancelled = new AbortController();
      const waiting = client.replicate(manifest, { nodeId: 'cli', grpc: 'x:1' }, cancelled.signal);
      cancelled.abort();
      await assert.rejects(waiting, /CANCELLED|Cancelled/);
      // One cancelled before it starts ends at once too.
      await assert.rejects(
        client.replicate(manifest, { nodeId: 'cli', grpc: 'x:1' }, cancelled.signal),
        /CANCELLED|Cancelled/,
      );
    } finally {
      client.close();
      slow.forceShutdown();
    }
  });

  it('answers not-found and invalid requests with errors, not crashes', async () => {
    assert.equal(await peer.getManifest('missing'), undefined);
    await assert.rejects(
      peer.getManifest('../etc/passwd'),
      (e) => e instanceof PeerError && /INVALID_ARGUMENT/.test(e.message),
    );
    const cases: [string[], number[], RegExp][] = [
      [[digestOf(Buffer.from('nope'))], [4], /NOT_FOUND/],
      [['abcd'], [1], /INVALID_ARGUMENT/],
      [Array(MAX_DIGESTS_PER_FETCH + 1).fill(chunks[0]), [], /INVALID_ARGUMENT/],
      [[chunks[0]!], [10], /unexpected piece/], // the client refuses more bytes than the manifest allows
    ];
    for (const [digests, lengths, pattern] of cases) {
      await assert.rejects(
        drain(peer.fetchChunks(digests, lengths)),
        (e) => e instanceof PeerError && pattern.test(e.message),
      );
    }
    assert.ok((await peer.ping()).rttMs >= 0, 'still serving');
  });

  it('carries chunk bodies on a connection of their own, not the one control calls use', async () => {
    // A TCP relay in front of the server counts the bytes each connection brings back.
    const connections: { down: number }[] = [];
    const sockets = new Set<Socket>();
    const relay = createServer((client) => {
      const counted = { down: 0 };
      connections.push(counted);
      const upstream = connect(port, '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => sockets.delete(s));
      }
      upstream.on('data', (b: Buffer) => (counted.down += b.length));
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    const throughRelay = () => clientTo((relay.address() as AddressInfo).port);
    const relayed = throughRelay();
    try {
      await relayed.ping();
      assert.equal(connections.length, 1, 'control calls open one connection');
      const got = await drain(relayed.fetchChunks(chunks, [4 * MiB, MiB + 3]));
      assert.deepEqual(Buffer.concat(got), data);
      await relayed.ping();
      assert.equal(connections.length, 2, 'chunks open a second one');
      assert.ok(
        connections[0]!.down < 256 * 1024,
        `control connection carried ${connections[0]!.down} bytes`,
      );
      assert.ok(connections[1]!.down >= data.length, `bulk connection carried ${connections[1]!.down} bytes`);
      // A closed transport (a member's replaced connection) opens no bulk connection afterwards.
      const closed = throughRelay();
      closed.close();
      await assert.rejects(drain(closed.fetchChunks(chunks, [4 * MiB, MiB + 3])), /closed/);
      assert.equal(connections.length, 2);
    } finally {
      relayed.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => relay.close(r));
    }
  });
});
