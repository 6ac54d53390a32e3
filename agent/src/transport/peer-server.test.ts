import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  makeGenericClientConstructor,
  type MethodDefinition,
  Server as GrpcServer,
  type Server,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { digestOf, MAX_CHUNKS, MAX_OBJECT_BYTES, MIN_CHUNK_SIZE } from '../cache/chunking.ts';
import { MAX_EXCHANGE_BYTES } from '../domain.ts';
import { MAX_NAMED_PEERS } from '../fetch/swarm.ts';
import { MAX_HOLDERS_PER_KEY } from '../overlay/holder-index.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey, MAX_KEY_LENGTH } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import { parseRange } from '@edgemesh/contracts';
import { GrpcPeer } from './peer-client.ts';
import {
  bindPeerServer,
  createPeerServer,
  REPLICATE_PER_CALLER,
  REPLICATE_QUEUE_PER_CALLER,
} from './peer-server.ts';
import { testCredentials } from '../../harness/test-ca.ts';
import {
  peerChannelCredentials,
  peerServerCredentials,
  unauthenticated,
} from '../security/grpc-credentials.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import {
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_DIGESTS_PER_FETCH,
  MAX_RELEASED_KEYS,
  peerService,
  type WireManifest,
} from './peer-service.ts';
import {
  NOT_FOUND,
  PeerBusyError,
  PeerError,
  PeerRefusedError,
  type ReceivedChunk,
} from './peer-transport.ts';
import { TooManyFetchesError } from '../fetch/fetch-limits.ts';

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

  it('leaves no listener on a call’s signal once the call is over (a timeout’s signal would keep the call alive)', async () => {
    const timeout = AbortSignal.timeout(60_000);
    const combined = AbortSignal.any([AbortSignal.timeout(60_000), new AbortController().signal]);
    assert.equal((await peer.getManifest('k', timeout))?.holds, true);
    await peer.ping(combined);
    await assert.rejects(peer.purge('k', Date.now(), undefined, timeout)); // refused: no purger here
    assert.equal(getEventListeners(timeout, 'abort').length, 0);
    assert.equal(getEventListeners(combined, 'abort').length, 0);
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

  it('tells the Replicate handler who asked: the node the caller’s certificate names, whatever source it names', async () => {
    const asked: string[] = [];
    const owner = serverOf({
      replicate: (_key, _root, _source, caller) => (asked.push(caller), Promise.resolve('stored')),
    });
    const ownerPort = await bindPeerServer(owner, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(ownerPort);
    try {
      const manifest = { key: 'k', root: 'ab'.repeat(32) } as never;
      await client.replicate(manifest, { nodeId: 'someone-else', grpc: 'x:1' }, AbortSignal.timeout(60_000));
      assert.deepEqual(asked, ['cli']);
    } finally {
      client.close();
      owner.forceShutdown();
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

  it('tells a FetchOrigin caller the owner is busy (PeerBusyError) when it runs as many origin fetches as it takes', async () => {
    const owner = serverOf({
      fetchOrigin: (key) =>
        key === 'busy/x'
          ? Promise.reject(new TooManyFetchesError('32 origin fetches are under way here'))
          : Promise.reject(new Error('the origin answered 500')),
    });
    const ownerPort = await bindPeerServer(owner, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(ownerPort);
    try {
      await assert.rejects(client.fetchOrigin('busy/x'), PeerBusyError);
      const failed = await client.fetchOrigin('broken/x').catch((error: unknown) => error);
      assert.ok(failed instanceof PeerError && !(failed instanceof PeerBusyError), 'a failure is no busy');
    } finally {
      client.close();
      owner.forceShutdown();
    }
  });

  it('runs at most REPLICATE_PER_CALLER copies of one caller at once, queues REPLICATE_QUEUE_PER_CALLER, refuses the rest', async () => {
    let running = 0;
    let most = 0;
    const release: (() => void)[] = [];
    const owner = serverOf({
      replicate: async () => {
        most = Math.max(most, ++running);
        await new Promise<void>((resolve) => release.push(resolve));
        running--;
        return 'stored';
      },
    });
    const ownerPort = await bindPeerServer(owner, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(ownerPort, 60_000);
    try {
      const manifest = (i: number) => ({ key: `k${i}`, root: 'ab'.repeat(32) }) as never;
      const asked = REPLICATE_PER_CALLER + REPLICATE_QUEUE_PER_CALLER + 3;
      const outcomes = Array.from({ length: asked }, (_, i) =>
        client.replicate(manifest(i), { nodeId: 'cli', grpc: 'x:1' }, AbortSignal.timeout(60_000)).then(
          () => 'stored',
          (error: Error) => (error instanceof PeerBusyError ? 'busy' : error.message),
        ),
      );
      // The three past the queue are refused at once; then every copy is let go as it starts.
      while (release.length < REPLICATE_PER_CALLER) await new Promise((r) => setImmediate(r));
      const settled = Promise.all(outcomes);
      let done = false;
      void settled.then(() => (done = true));
      while (!done) {
        release.splice(0).forEach((go) => go());
        await new Promise((r) => setImmediate(r));
      }
      const counts = (await settled).reduce<Record<string, number>>(
        (n, o) => ((n[o] = (n[o] ?? 0) + 1), n),
        {},
      );
      assert.deepEqual(counts, { stored: asked - 3, busy: 3 });
      assert.equal(most, REPLICATE_PER_CALLER, 'never more copies of one caller under way');
    } finally {
      client.close();
      owner.forceShutdown();
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

  /** A manifest as large as any a node makes: MAX_CHUNKS digests, every field at its longest. */
  const largestManifest = (): WireManifest => ({
    key: 'k'.repeat(MAX_KEY_LENGTH),
    size: MAX_OBJECT_BYTES,
    chunkSize: MIN_CHUNK_SIZE,
    chunks: Array<Buffer>(MAX_CHUNKS).fill(Buffer.alloc(32, 0xff)),
    root: Buffer.alloc(32, 0xff),
    createdAtMs: Number.MAX_SAFE_INTEGER,
    expiresAtMs: Number.MAX_SAFE_INTEGER,
    contentType: `application/${'x'.repeat(243)}`,
    signerCertificate: Buffer.alloc(6144, 0xff), // parseSignature's largest (8192 base64 characters)
    signature: Buffer.alloc(192, 0xff),
  });

  it('keeps every control message of the largest legitimate size within MAX_CONTROL_MESSAGE_BYTES', () => {
    const holder = { nodeId: 'n'.repeat(253), grpc: `${'h'.repeat(253)}:65535` };
    const holders = (n: number) => Array<typeof holder>(n).fill(holder);
    const signature = {
      certificate: Buffer.alloc(6144, 0xff),
      value: Buffer.alloc(192, 0xff),
      by: 'b'.repeat(320),
    };
    const manifest = largestManifest();
    const method = (name: string) => peerService[name] as MethodDefinition<unknown, unknown>;
    const sizes: Record<string, number> = {
      Hold: method('Hold').requestSerialize({ manifest, holder }).length,
      GetManifest: method('GetManifest').responseSerialize({
        manifest,
        holders: holders(MAX_HOLDERS_PER_KEY),
        holds: true,
        purgedAtMs: Number.MAX_SAFE_INTEGER,
        inProgress: true,
        purgeSignature: signature,
      }).length,
      'Watch (first event)': method('Watch').responseSerialize({
        head: {
          ...manifest,
          chunks: [],
          root: Buffer.alloc(0),
          signerCertificate: undefined,
          signature: undefined,
        },
        firstDigest: 0,
        digests: manifest.chunks,
        have: Array.from({ length: MAX_CHUNKS }, (_, i) => i),
        peers: holders(MAX_NAMED_PEERS),
      }).length,
      'Watch (last event)': method('Watch').responseSerialize({ manifest, peers: holders(MAX_NAMED_PEERS) })
        .length,
      Deliver: method('Deliver').requestSerialize({
        topic: 't'.repeat(128),
        fromNode: holder.nodeId,
        body: Buffer.alloc(MAX_EXCHANGE_BYTES),
        contentType: manifest.contentType,
      }).length,
      FetchChunks: method('FetchChunks').requestSerialize({
        digests: Array<Buffer>(MAX_DIGESTS_PER_FETCH).fill(Buffer.alloc(32)),
        fromNode: holder.nodeId,
      }).length,
      Release: method('Release').requestSerialize({
        holder,
        keys: Array<string>(MAX_RELEASED_KEYS).fill('k'.repeat(MAX_KEY_LENGTH)),
      }).length,
      Purge: method('Purge').requestSerialize({
        key: manifest.key,
        purgedAtMs: Number.MAX_SAFE_INTEGER,
        signature,
      }).length,
    };
    for (const [name, size] of Object.entries(sizes)) {
      assert.ok(size <= MAX_CONTROL_MESSAGE_BYTES, `${name}: ${size} bytes`);
    }
    assert.ok(sizes['Watch (first event)']! > 2 * MiB, 'the largest is as large as expected');
  });

  it('hands a Release to the index for the calling node, and refuses too many keys or a malformed one', async () => {
    const released: string[] = [];
    const releasing = serverOf({
      index: {
        lookup: () => undefined,
        record: () => undefined,
        release: (key, nodeId) => released.push(`${key}@${nodeId}`),
      },
    });
    const at = await bindPeerServer(releasing, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(at);
    const cli = { nodeId: 'cli', grpc: '127.0.0.1:1' };
    try {
      await client.release(['a/1', 'a/2'], cli);
      assert.deepEqual(released, ['a/1@cli', 'a/2@cli']);
      const refusals: [string[], { nodeId: string; grpc: string }, RegExp][] = [
        [Array<string>(MAX_RELEASED_KEYS + 1).fill('a/1'), cli, /INVALID_ARGUMENT.*at most 1024/],
        [['a/1', '../etc/passwd'], cli, /INVALID_ARGUMENT/],
        [['a/1'], { nodeId: 'someone-else', grpc: '127.0.0.1:1' }, /PERMISSION_DENIED/],
      ];
      for (const [keys, holder, pattern] of refusals)
        await assert.rejects(
          client.release(keys, holder),
          (e) => e instanceof PeerError && pattern.test(e.message),
        );
      assert.equal(released.length, 2, 'a refused call releases none of its keys');
    } finally {
      client.close();
      releasing.forceShutdown();
    }
  });

  it('ends a Watch of a key it is not getting empty, refuses it NOT_FOUND once its download found no one has it, UNAVAILABLE when it failed', async () => {
    const watching = serverOf({
      watch: (key, _from, stream) => {
        if (key === 'nobody/has') setImmediate(() => stream.gone(new Error('every holder let it go')));
        else if (key === 'origin/down') setImmediate(() => stream.fail(new Error('origin down')));
        else return false;
        stream.write({
          head: { key, size: 1, chunkSize: MIN_CHUNK_SIZE },
        });
        return true;
      },
    });
    const at = await bindPeerServer(watching, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(at);
    const watch = async (key: string) => {
      for await (const event of client.watch(key, undefined)) void event;
    };
    try {
      // Not getting it: ends at once, empty (no verdict on the object: it may not have begun, or failed).
      await watch('not/watched');
      await assert.rejects(
        watch('nobody/has'),
        (e) =>
          e instanceof PeerRefusedError &&
          e.code === NOT_FOUND &&
          /no one has nobody\/has: every holder let it go/.test(e.message),
      );
      await assert.rejects(
        watch('origin/down'),
        (e) => !(e instanceof PeerRefusedError) && /UNAVAILABLE.*origin down/.test((e as Error).message),
      );
    } finally {
      client.close();
      watching.forceShutdown();
    }
  });

  it('sends no Release to a peer that agreed on 1.0, and takes UNIMPLEMENTED from one without it as done', async () => {
    const released: string[] = [];
    const index = {
      lookup: () => undefined,
      record: () => undefined,
      release: (key: string) => released.push(key),
    };
    const old = serverOf({ index, protocol: parseRange('1.0-1.0')! });
    const bare = new GrpcServer();
    bare.addService(peerService, {}); // a build without Release (every call UNIMPLEMENTED)
    const [oldAt, bareAt] = await Promise.all([
      bindPeerServer(old, '127.0.0.1', 0, peerServerCredentials(serverId)),
      bindPeerServer(bare, '127.0.0.1', 0, peerServerCredentials(serverId)),
    ]);
    const [toOld, toBare] = [clientTo(oldAt), clientTo(bareAt)];
    const cli = { nodeId: 'cli', grpc: '127.0.0.1:1' };
    try {
      await toOld.ping(); // agrees on 1.0
      await toOld.release(['a/1'], cli);
      assert.deepEqual(released, [], 'not asked');
      await toBare.release(['a/1'], cli);
    } finally {
      toOld.close();
      toBare.close();
      old.forceShutdown();
      bare.forceShutdown();
    }
  });

  it('hands a purge to its handler with the calling node, as its certificate names it', async () => {
    const heard: unknown[][] = [];
    const purging = serverOf({
      purge: (...args) => (heard.push(args), Promise.resolve(true)),
    });
    const at = await bindPeerServer(purging, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(at);
    try {
      assert.equal(await client.purge('k', 1234, undefined), true);
      assert.deepEqual(heard, [['k', 1234, undefined, 'cli']]);
    } finally {
      client.close();
      purging.forceShutdown();
    }
  });

  it('refuses a request larger than MAX_CONTROL_MESSAGE_BYTES before any handler runs', async () => {
    let authenticated = 0;
    const strict = serverOf({
      authenticate: (call) => {
        authenticated++;
        return serverId.authenticate(call.getAuthContext().sslPeerCertificate);
      },
    });
    const at = await bindPeerServer(strict, '127.0.0.1', 0, peerServerCredentials(serverId));
    // A client with no limit of its own, sending 1-byte chunks' digests: 150,000 of them, 5 MiB.
    const Client = makeGenericClientConstructor(peerService, 'Peer');
    const client = new Client(
      `127.0.0.1:${at}`,
      peerChannelCredentials(clientId, 'srv', () => {}),
      {
        'grpc.ssl_target_name_override': 'node.edgemesh.p2p.dev',
        'grpc.max_send_message_length': -1,
      },
    ) as InstanceType<typeof Client> & Record<string, (...args: unknown[]) => unknown>;
    const hold = (manifest: WireManifest) =>
      new Promise<ServiceError | null>((resolve) => {
        client.Hold!(
          { manifest, holder: { nodeId: 'cli', grpc: 'x:1' } },
          { deadline: Date.now() + 20_000 },
          resolve,
        );
      });
    try {
      const flood = {
        ...largestManifest(),
        size: 150_000,
        chunkSize: 1,
        chunks: Array<Buffer>(150_000).fill(Buffer.alloc(32)),
      };
      const refused = await hold(flood);
      assert.equal(refused?.code, status.RESOURCE_EXHAUSTED, refused?.message);
      assert.equal(authenticated, 0, 'no handler ran');
      // The largest a node makes still gets to the handler (which finds its root wrong).
      const largest = await hold(largestManifest());
      assert.equal(largest?.code, status.INVALID_ARGUMENT, largest?.message);
      assert.equal(authenticated, 1);
    } finally {
      client.close();
      strict.forceShutdown();
    }
  });

  it('refuses a control answer larger than MAX_CONTROL_MESSAGE_BYTES', async () => {
    const liar = new GrpcServer({ 'grpc.max_send_message_length': -1 });
    liar.addService(peerService, {
      getManifest: (_call: unknown, callback: (error: null, answer: unknown) => void) =>
        callback(null, {
          manifest: { ...largestManifest(), chunks: Array<Buffer>(4 * MAX_CHUNKS).fill(Buffer.alloc(32)) },
          holds: true,
          holders: [],
        }),
    });
    const at = await bindPeerServer(liar, '127.0.0.1', 0, peerServerCredentials(serverId));
    const client = clientTo(at, 20_000);
    try {
      await assert.rejects(
        client.getManifest('k'),
        (e) => e instanceof PeerError && /RESOURCE_EXHAUSTED|larger than max/.test(e.message),
      );
    } finally {
      client.close();
      liar.forceShutdown();
    }
  });
});
