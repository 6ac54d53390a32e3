import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect, createServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import {
  type sendUnaryData,
  type Server,
  Server as GrpcServer,
  type ServerUnaryCall,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import { eventually } from '../../harness/agent-process.ts';
import { testCredentials } from '../../harness/test-ca.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import {
  peerChannelCredentials,
  peerServerCredentials,
  peerTlsOptions,
  unauthenticated,
} from '../security/grpc-credentials.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import { Revocations } from '../security/revocations.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import {
  BULK_ALPN,
  encodeRequest,
  FRAME,
  frameHeader,
  HEADER_BYTES,
  MAX_REQUEST_BYTES,
} from './bulk-wire.ts';
import { BulkChannel } from './bulk-client.ts';
import { listenPeer, MAX_CONNECTIONS_PER_PEER, type PeerPortLimits } from './bulk-server.ts';
import { GrpcPeer } from './peer-client.ts';
import { peerService } from './peer-service.ts';
import type { ChunkPiece } from './piece-codec.ts';
import { bindPeerServer, createPeerServer, listenPeerServer, type PeerServerOptions } from './peer-server.ts';
import { PeerBusyError, PeerError, type ReceivedChunk } from './peer-transport.ts';
import { UploadLimiter } from './upload-limiter.ts';

const MiB = 2 ** 20;

async function drain(chunks: AsyncIterable<ReceivedChunk>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of chunks) out.push(c.data);
  return out;
}

/** A fake holder's Ping: answers as node `srv`, echoing the caller's time. */
const pingBack = (call: ServerUnaryCall<{ sentAtMs: number }, unknown>, done: sendUnaryData<unknown>) =>
  done(null, { nodeId: 'srv', zone: 'z', region: 'r', sentAtMs: call.request.sentAtMs });

/**
 * Fetches one chunk of `length` from `peer` and cancels once it is handed over, as a download that
 * has all it needs does; expects the fetch to fail as `expected` says (the holder lies after it),
 * with only `handed` handed over. The stream must have let go of the caller's signal by the time
 * it hands over the last chunk (a cancel then cuts nothing: the call reads on to the holder's answer).
 */
async function cancelledAtTheLast(
  peer: GrpcPeer,
  digest: string,
  length: number,
  handed: Buffer,
  expected: RegExp,
): Promise<void> {
  const cancel = new AbortController();
  const got: Buffer[] = [];
  const listening: number[] = []; // the signal's listeners as each chunk is handed over
  await assert.rejects(
    async () => {
      for await (const chunk of peer.fetchChunks([digest], [length], cancel.signal)) {
        got.push(chunk.data);
        listening.push(getEventListeners(cancel.signal, 'abort').length);
        cancel.abort();
      }
    },
    (error: Error) => error instanceof PeerError && expected.test(error.message),
  );
  assert.deepEqual(got, [handed]);
  assert.deepEqual(listening, [0], 'the signal let go by the time the last chunk is handed over');
}

/** Reads everything a raw bulk connection gets until the server closes it or `until` holds. */
function readAll(socket: TLSSocket, until?: (got: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = () => resolve(Buffer.concat(parts));
    socket.on('data', (d: Buffer) => {
      parts.push(d);
      if (until?.(Buffer.concat(parts))) {
        socket.off('close', done);
        done();
      }
    });
    socket.once('close', done);
  });
}

describe('the bulk stream (chunk bodies over mutual TLS beside gRPC, on one port)', () => {
  let dir: string;
  let store: ObjectStore;
  let serverId: NodeCredentials;
  let clientId: NodeCredentials;
  let otherMesh: NodeCredentials;
  const data = randomBytes(9 * MiB + 5);
  let chunks: readonly string[];
  const lengths = [4 * MiB, 4 * MiB, MiB + 5];
  const counters = new Counters();
  let listener: { port: number; close(): void };
  let opts: PeerServerOptions;
  /** The server's revocation list (a test revokes `cli`, and lifts it again). */
  const revocations = new Revocations();

  const peerTo = (port: number, bulk = true, timeoutMs = 5000) =>
    new GrpcPeer({
      id: 'srv',
      address: `127.0.0.1:${port}`,
      flowControlWindow: 16 * MiB,
      timeoutMs,
      from: 'cli',
      credentials: (seen) => peerChannelCredentials(clientId, 'srv', seen),
      ...(bulk ? { bulkTls: () => peerTlsOptions(clientId, 'srv') } : {}),
    });
  const raw = (port: number, id = clientId): Promise<TLSSocket> =>
    new Promise((resolve, reject) => {
      const socket = connect({
        ...peerTlsOptions(id, 'srv'),
        host: '127.0.0.1',
        port,
        ALPNProtocols: [BULK_ALPN],
      });
      socket.once('secureConnect', () => resolve(socket));
      socket.once('error', reject);
    });

  before(async () => {
    [serverId, clientId] = await Promise.all([
      testCredentials('srv', { revocations }),
      testCredentials('cli'),
    ]);
    otherMesh = await testCredentials('cli', { mesh: 'other' });
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-bulk-'));
    store = await ObjectStore.open({
      dir,
      maxBytes: 64 * MiB,
      memoryBytes: 0,
      maxObjectBytes: 64 * MiB,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    chunks = (await store.put('k', [data], { size: data.length })).chunks;
    opts = {
      store,
      counters,
      node: { id: 'srv', zone: 'z', region: 'r' },
      logger: createLogger({ level: 'silent', nodeId: 'srv' }),
      flowControlWindow: 16 * MiB,
      authenticate: (call) => serverId.identify(call.getAuthContext().sslPeerCertificate),
      refuse: unauthenticated,
    };
    listener = await listenPeerServer(createPeerServer(opts), opts, '127.0.0.1', 0, serverId);
  });
  after(async () => {
    listener.close();
    serverId.close();
    clientId.close();
    otherMesh.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('carries chunks whole and in order, and gRPC calls on the same port', async () => {
    const peer = peerTo(listener.port);
    try {
      const sentBefore = counters.bytesToPeers;
      const handshakesBefore = counters.peerHandshakes;
      const received: ReceivedChunk[] = [];
      for await (const chunk of peer.fetchChunks(chunks, lengths)) received.push(chunk);
      // Hashed on arrival: each says what it hashes to (the caller compares it with what it asked).
      assert.deepEqual(
        received.map((c) => c.digest),
        chunks,
      );
      const got = received.map((c) => c.data);
      assert.deepEqual(
        got.map((c) => c.length),
        lengths,
      );
      assert.deepEqual(Buffer.concat(got), data);
      assert.equal(peer.chunkPath, 'bulk');
      assert.equal(counters.bytesToPeers - sentBefore, data.length);
      // The connection is kept for the next request.
      assert.deepEqual(
        Buffer.concat(await drain(peer.fetchChunks([chunks[2]!], [MiB + 5]))),
        data.subarray(8 * MiB),
      );
      assert.equal((await peer.ping()).nodeId, 'srv');
      assert.equal(((await peer.getManifest('k'))!.manifest as { size: number }).size, data.length);
      // One bulk connection (kept for the second request) and one gRPC connection.
      assert.equal(counters.peerHandshakes - handshakesBefore, 2);
    } finally {
      peer.close();
    }
  });

  it('keeps the connection for the next request when the caller cancels once every chunk is in, as a download does', async () => {
    const peer = peerTo(listener.port);
    try {
      const handshakesBefore = counters.peerHandshakes;
      // As a download does: it has every chunk it needs, cancels what it asked, reads on.
      const cancel = new AbortController();
      const got: Buffer[] = [];
      for await (const chunk of peer.fetchChunks([chunks[2]!], [MiB + 5], cancel.signal)) {
        got.push(chunk.data);
        cancel.abort();
      }
      assert.deepEqual(Buffer.concat(got), data.subarray(8 * MiB));
      assert.deepEqual(
        Buffer.concat(await drain(peer.fetchChunks([chunks[0]!], [4 * MiB]))),
        data.subarray(0, 4 * MiB),
      );
      assert.equal(counters.peerHandshakes - handshakesBefore, 1, 'one connection for both requests');
      // One that stops before the last chunk leaves bytes in flight: that connection is closed.
      for await (const chunk of peer.fetchChunks(chunks, lengths)) {
        assert.ok(chunk);
        break;
      }
      await drain(peer.fetchChunks([chunks[2]!], [MiB + 5]));
      assert.equal(counters.peerHandshakes - handshakesBefore, 2);
    } finally {
      peer.close();
    }
  });

  it('receives into the caller’s buffers, and gives back those of chunks it never handed over once the connection is closed', async () => {
    const peer = peerTo(listener.port);
    try {
      const taken: Buffer[] = [];
      const given: Buffer[] = [];
      const cancel = new AbortController();
      let allBack!: () => void;
      const back = new Promise<void>((resolve) => (allBack = resolve));
      const into = {
        take: (size: number) => {
          taken.push(Buffer.alloc(size));
          if (taken.length === 2) setImmediate(() => cancel.abort()); // cancelled while chunk 1 arrives
          return taken.at(-1);
        },
        giveBack: (bytes: Buffer) => {
          given.push(bytes);
          allBack();
        },
      };
      const received: Buffer[] = [];
      await assert.rejects(async () => {
        for await (const chunk of peer.fetchChunks(chunks, lengths, cancel.signal, into))
          received.push(chunk.data);
      }, PeerError);
      await back;
      for (const data of received)
        assert.ok(
          taken.some((b) => b.buffer === data.buffer),
          'each chunk handed over is in a buffer of the caller',
        );
      assert.ok(given.length > 0);
      for (const bytes of given) {
        assert.ok(
          taken.some((b) => b.buffer === bytes.buffer),
          'what it gives back is the caller’s',
        );
        assert.ok(!received.some((r) => r.buffer === bytes.buffer), 'and was never handed over');
      }
      assert.equal(received.length + given.length, taken.length, 'every buffer taken is accounted for');
    } finally {
      peer.close();
    }
  });

  it('reads the chunks it sends from disk into two buffers it reuses, not a new one per chunk', async (t) => {
    const peer = peerTo(listener.port);
    try {
      await drain(peer.fetchChunks([chunks[2]!], [MiB + 5])); // the connection, made beforehand
      // Eight chunks of one answer, each read from disk (no hot tier here), none picked for the
      // sampled re-hash (one send in SEND_SAMPLE, by Math.random: a re-hashed chunk is read anew).
      const order = [0, 1, 2, 0, 1, 1, 0, 2];
      t.mock.method(Math, 'random', () => 0.5);
      const reads = t.mock.method(store, 'chunkToSend');
      const big = (calls: { arguments: unknown[] }[]) => calls.filter((c) => Number(c.arguments[0]) >= MiB);
      const slow = t.mock.method(Buffer, 'allocUnsafeSlow');
      const unsafe = t.mock.method(Buffer, 'allocUnsafe');
      const received = await drain(
        peer.fetchChunks(
          order.map((i) => chunks[i]!),
          order.map((i) => lengths[i]!),
        ),
      );
      assert.equal(reads.mock.callCount(), order.length);
      const at = [0, 4 * MiB, 8 * MiB];
      received.forEach((got, n) => {
        const i = order[n]!;
        assert.ok(got.equals(data.subarray(at[i], at[i]! + lengths[i]!)), `chunk ${n} (${i}) intact`);
      });
      // The client makes a buffer per chunk it receives (it keeps them); the server two in all.
      const made = big(slow.mock.calls).length + big(unsafe.mock.calls).length;
      assert.ok(made <= order.length + 2, `${made} chunk-sized buffers made for ${order.length} chunks`);
    } finally {
      peer.close();
    }
  });

  it('never reads a chunk into a buffer whose bytes still wait to be sent, when the client reads slowly', async (t) => {
    // Chunks of 30 KiB (files: over the 16 KiB kept in the database, under the socket's 64 KiB
    // high-water mark, so a send does not wait for the socket to drain): while the client does not
    // read, the answer's writes queue up, and each buffer comes back only once its write is done.
    t.mock.method(Math, 'random', () => 0.5); // no sampled re-hash: every chunk read into a spare
    const bodies = Array.from({ length: 400 }, () => randomBytes(30 * 1024));
    const digests: string[] = [];
    for (const [i, b] of bodies.entries())
      digests.push((await store.put(`small-${i}`, [b], { size: b.length })).chunks[0]!);
    await store.flush();
    const socket = await raw(listener.port);
    try {
      const sent = counters.bytesToPeers;
      socket.pause();
      socket.write(encodeRequest({ digests, from: 'cli', meta: {} }));
      // Not read until the server is well into the answer (the rest of it queues behind a full pipe).
      await eventually(
        () => Promise.resolve(counters.bytesToPeers - sent >= 64 * 30 * 1024 || undefined),
        10_000,
        'the server sending',
      );
      const total = bodies.length * (HEADER_BYTES + 30 * 1024) + HEADER_BYTES;
      const reading = readAll(socket, (all) => all.length >= total);
      socket.resume(); // paused by hand: a data listener alone does not resume it
      const got = await reading;
      let at = 0;
      for (const [i, body] of bodies.entries()) {
        at += HEADER_BYTES;
        assert.ok(got.subarray(at, at + body.length).equals(body), `chunk ${i} as stored`);
        at += body.length;
      }
    } finally {
      socket.destroy();
      for (let i = 0; i < bodies.length; i++) await store.delete(`small-${i}`);
    }
  });

  it('closes a kept connection on which the server sends a byte outside an answer', async () => {
    // A server that answers every request, and on cue sends a stale answer on an idle connection.
    const sockets: TLSSocket[] = [];
    let answers = 0;
    const answer = (n: number) =>
      Buffer.concat([frameHeader(FRAME.DATA, 0, 4), Buffer.from(`ans${n}`), frameHeader(FRAME.END, 0, 0)]);
    const server = createServer(
      {
        cert: serverId.certPem,
        key: serverId.keyPem,
        ca: serverId.bundlePem,
        requestCert: true,
        ALPNProtocols: [BULK_ALPN],
      },
      (socket) => {
        sockets.push(socket);
        socket.on('error', () => {});
        socket.on('data', () => socket.write(answer(++answers)));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const channel = new BulkChannel({
      id: 'srv',
      address: `127.0.0.1:${port}`,
      timeoutMs: 5000,
      tls: () => peerTlsOptions(clientId, 'srv'),
    });
    const get = async () => {
      const got: string[] = [];
      for await (const c of channel.fetch(['00'.repeat(32)], [4], 'cli', {})) got.push(c.data.toString());
      return got.join();
    };
    try {
      assert.equal(await get(), 'ans1');
      const kept = sockets[0]!;
      const closed = new Promise((resolve) => kept.once('close', resolve));
      kept.write(answer(1)); // while the client keeps the connection idle
      await closed; // the client closed it (without reading while idle, the bytes would wait)
      assert.equal(await get(), 'ans2', 'the next request on a new connection, with its own answer');
      assert.equal(sockets.length, 2);
    } finally {
      channel.close();
      server.close();
    }
  });

  it('is what a client speaking only the bulk protocol gets: frames, then END', async () => {
    const socket = await raw(listener.port);
    const request = encodeRequest({ digests: [chunks[2]!], from: 'cli', meta: {} });
    const total = HEADER_BYTES + MiB + 5 + HEADER_BYTES;
    const reading = readAll(socket, (got) => got.length >= total);
    socket.write(request);
    const got = await reading;
    socket.destroy();
    assert.equal(got.readUInt8(0), FRAME.DATA);
    assert.equal(got.readUInt32BE(1), 0);
    assert.equal(got.readUInt32BE(5), MiB + 5);
    assert.deepEqual(got.subarray(HEADER_BYTES, HEADER_BYTES + MiB + 5), data.subarray(8 * MiB));
    assert.equal(got.readUInt8(HEADER_BYTES + MiB + 5), FRAME.END);
  });

  it('answers bad requests with an error frame and stays up', async () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]), /not JSON/],
      [encodeRequest({ digests: ['zz'], from: 'cli', meta: {} }), /32 bytes/],
      [encodeRequest({ digests: ['00'.repeat(32)], from: 'cli', meta: {} }), /no chunk/],
      [encodeRequest({ digests: [chunks[0]!], from: 'mallory', meta: {} }), /not the caller/],
      [
        (() => {
          const b = Buffer.alloc(4);
          b.writeUInt32BE(MAX_REQUEST_BYTES + 1);
          return b;
        })(),
        /a request of/,
      ],
    ];
    for (const [request, expected] of cases) {
      const socket = await raw(listener.port);
      const reading = readAll(
        socket,
        (got) => got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5),
      );
      socket.write(request);
      const got = await reading;
      socket.destroy();
      assert.equal(got.readUInt8(0), FRAME.ERROR, `an error frame for ${expected}`);
      const error = JSON.parse(got.subarray(HEADER_BYTES, HEADER_BYTES + got.readUInt32BE(5)).toString()) as {
        message: string;
      };
      assert.match(error.message, expected);
    }
    // Still serving.
    const peer = peerTo(listener.port);
    try {
      assert.equal((await drain(peer.fetchChunks([chunks[2]!], [MiB + 5])))[0]!.length, MiB + 5);
    } finally {
      peer.close();
    }
  });

  it('refuses a connection without a certificate of this mesh', async () => {
    await assert.rejects(
      new Promise<void>((resolve, reject) => {
        const socket = connect({
          host: '127.0.0.1',
          port: listener.port,
          ALPNProtocols: [BULK_ALPN],
          ca: clientId.bundlePem,
          servername: 'node.edgemesh.p2p.dev',
          checkServerIdentity: () => undefined,
        });
        socket.once('error', reject);
        socket.on('data', () => {});
        socket.once('close', () => reject(new Error('closed')));
        socket.once('secureConnect', () =>
          socket.write(encodeRequest({ digests: [chunks[0]!], from: '', meta: {} })),
        );
        setTimeout(resolve, 60_000).unref();
      }),
    );
  });

  it('closes a connection whose certificate names a node of another mesh, with UNAUTHENTICATED', async () => {
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = connect({
        ...peerTlsOptions(otherMesh, undefined),
        checkServerIdentity: () => undefined, // this client takes any server: the server must refuse it
        host: '127.0.0.1',
        port: listener.port,
        ALPNProtocols: [BULK_ALPN],
      });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    const got = await readAll(socket);
    assert.equal(got.readUInt8(0), FRAME.ERROR);
    assert.match(got.subarray(HEADER_BYTES).toString(), /"code":16.*mesh/);
  });

  it('throws PeerError at a peer that lies about a chunk’s length, and at one that goes quiet', async () => {
    const liar = await fakeBulkServer(serverId, (socket) => {
      socket.write(Buffer.concat([frameHeader(FRAME.DATA, 0, 7), Buffer.alloc(7)]));
    });
    const quiet = await fakeBulkServer(serverId, () => {});
    const address = (s: TlsServer) => (s.address() as { port: number }).port;
    const a = peerTo(address(liar));
    const b = peerTo(address(quiet), true, 300);
    try {
      await assert.rejects(
        drain(a.fetchChunks([chunks[0]!], [4 * MiB])),
        (e: Error) => e instanceof PeerError && /7 bytes, not/.test(e.message),
      );
      await assert.rejects(
        drain(b.fetchChunks([chunks[0]!], [4 * MiB])),
        (e: Error) => e instanceof PeerError && /stalled/.test(e.message),
      );
    } finally {
      a.close();
      b.close();
      liar.close();
      quiet.close();
    }
  });

  /** `wrong` heartbeats for chunk 3 when 0 is expected, `flood` heartbeats without end: both fail as PeerError. */
  const heartbeatLiesRefused = async (wrong: GrpcPeer, flood: GrpcPeer) => {
    await assert.rejects(
      drain(wrong.fetchChunks([chunks[0]!], [4 * MiB])),
      (e: Error) => e instanceof PeerError && /heartbeat for chunk 3 \(expected 0\)/.test(e.message),
    );
    await assert.rejects(
      drain(flood.fetchChunks([chunks[0]!], [4 * MiB])),
      (e: Error) =>
        e instanceof PeerError && !(e instanceof PeerBusyError) && /heartbeats in/.test(e.message),
    );
  };

  it('throws PeerError at once at a peer that heartbeats after the last chunk, its caller having cancelled', async () => {
    // Each heartbeat would re-arm the call's quiet deadline: a call its consumer (a download that has
    // every chunk) cancelled would be held for as long as the peer went on.
    const body = Buffer.alloc(1000, 7);
    const liar = await fakeBulkServer(serverId, (socket) => {
      socket.write(Buffer.concat([frameHeader(FRAME.DATA, 0, body.length), body]));
      const beat = setInterval(() => socket.write(frameHeader(FRAME.WAIT, 1, 0)), 100);
      socket.once('close', () => clearInterval(beat));
    });
    const peer = peerTo((liar.address() as { port: number }).port, true, 60_000);
    try {
      const cancel = new AbortController();
      await assert.rejects(
        async () => {
          for await (const chunk of peer.fetchChunks(['00'.repeat(32)], [body.length], cancel.signal)) {
            assert.deepEqual(chunk.data, body);
            cancel.abort();
          }
        },
        (error: Error) =>
          error instanceof PeerError && /a heartbeat after the last chunk/.test(error.message),
      );
    } finally {
      peer.close();
      liar.close();
    }
  });

  it('lets a holder cancelled at its last chunk hold the call no longer than the quiet deadline, and hands over nothing it was not asked for', async () => {
    // Found by an outsider's attack (helper-140): a holder that has sent the one chunk asked for, its
    // caller having cancelled, then withholds its END, or trickles an ERROR a byte at a time (no whole
    // frame: nothing re-arms the deadline), or sends a chunk not asked for.
    const body = Buffer.alloc(1000, 7);
    const one = Buffer.concat([frameHeader(FRAME.DATA, 0, body.length), body]);
    const withhold = await fakeBulkServer(serverId, (socket) => socket.write(one));
    const trickle = await fakeBulkServer(serverId, (socket) => {
      socket.write(one);
      const rest = Buffer.concat([frameHeader(FRAME.ERROR, 0, 200), Buffer.alloc(200, 32)]);
      let sent = 0;
      const drip = setInterval(() => {
        if (socket.destroyed || sent >= rest.length) return clearInterval(drip);
        socket.write(rest.subarray(sent, ++sent));
      }, 200);
      socket.once('close', () => clearInterval(drip));
    });
    const extra = await fakeBulkServer(serverId, (socket) =>
      socket.write(
        Buffer.concat([one, frameHeader(FRAME.DATA, 1, body.length), body, frameHeader(FRAME.END, 0, 0)]),
      ),
    );
    const peers: GrpcPeer[] = [];
    const lying = async (server: TlsServer, expected: RegExp) => {
      const peer = peerTo((server.address() as { port: number }).port, true, 1000);
      peers.push(peer);
      await cancelledAtTheLast(peer, '00'.repeat(32), body.length, body, expected);
    };
    try {
      await lying(withhold, /stalled/);
      await lying(trickle, /stalled/);
      await lying(extra, /not asked for/);
    } finally {
      for (const peer of peers) peer.close();
      withhold.close();
      trickle.close();
      extra.close();
    }
  });

  it('throws PeerError at a peer whose heartbeats name another chunk, or come as a flood', async () => {
    const wrong = await fakeBulkServer(serverId, (socket) => {
      socket.write(frameHeader(FRAME.WAIT, 3, 0));
    });
    // An honest holder heartbeats once a second; this one never stops (only the client closes).
    const flood = await fakeBulkServer(serverId, (socket) => {
      const beat = frameHeader(FRAME.WAIT, 0, 0);
      const more = () => {
        while (!socket.destroyed && socket.write(beat));
        if (!socket.destroyed) socket.once('drain', more);
      };
      more();
    });
    const address = (s: TlsServer) => (s.address() as { port: number }).port;
    const a = peerTo(address(wrong));
    const b = peerTo(address(flood));
    try {
      await heartbeatLiesRefused(a, b);
    } finally {
      a.close();
      b.close();
      wrong.close();
      flood.close();
    }
  });

  it(
    'throws PeerError at a gRPC FetchChunks whose heartbeats name another chunk, come as a flood, or that trickles a chunk',
    { timeout: 30_000 },
    async () => {
      const fake = async (write: (call: ServerWritableStream<unknown, ChunkPiece>) => void) => {
        const server = new GrpcServer();
        server.addService(peerService, {
          FetchChunks: write,
          // (A ping sets up the connection first, so a stall is the stream's, not the handshakes'.)
          Ping: pingBack,
        });
        const port = await bindPeerServer(server, '127.0.0.1', 0, peerServerCredentials(serverId));
        return { server, port };
      };
      const wrong = await fake((call) => call.write({ index: 3, data: Buffer.alloc(0) }));
      const flood = await fake((call) => {
        let open = true;
        call.on('cancelled', () => (open = false));
        const more = () => {
          while (open && call.write({ index: 0, data: Buffer.alloc(0) }));
          if (open) call.once('drain', more);
        };
        more();
      });
      // A byte at a time, each well within the client's timeout (2 s), for ever.
      const trickle = await fake((call) => {
        const timer = setInterval(() => call.write({ index: 0, data: Buffer.alloc(1) }), 500);
        call.on('cancelled', () => clearInterval(timer));
        call.on('close', () => clearInterval(timer));
      });
      const a = peerTo(wrong.port, false);
      const b = peerTo(flood.port, false);
      const c = peerTo(trickle.port, false, 2000);
      try {
        await heartbeatLiesRefused(a, b);
        await c.ping(undefined, 20_000); // (the handshakes may take seconds on a loaded machine)
        await assert.rejects(
          drain(c.fetchChunks([chunks[0]!], [4 * MiB])),
          (e: Error) => e instanceof PeerError && /stalled/.test(e.message),
        );
      } finally {
        a.close();
        b.close();
        c.close();
        wrong.server.forceShutdown();
        flood.server.forceShutdown();
        trickle.server.forceShutdown();
      }
    },
  );

  it('finishes a gRPC FetchChunks the caller cancels once every chunk is in, as a download does', async () => {
    // The holder has sent the last chunk and not yet its status: the caller, which has all it needs,
    // cancels. The call reads on to the status (so the batch is recorded and the holder credited)
    // rather than failing as cancelled; a cancel before the last chunk still cuts it.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let calls = 0;
    const server = new GrpcServer();
    server.addService(peerService, {
      // Both chunks, then the status: for the first call once released, for the second never.
      FetchChunks: (call: ServerWritableStream<unknown, ChunkPiece>) => {
        call.write({ index: 0, data: data.subarray(0, MiB) });
        call.write({ index: 1, data: data.subarray(MiB, 2 * MiB) });
        if (++calls === 1) void released.then(() => call.end());
      },
      Ping: pingBack,
    });
    const port = await bindPeerServer(server, '127.0.0.1', 0, peerServerCredentials(serverId));
    const peer = peerTo(port, false);
    try {
      const cancel = new AbortController();
      const got: Buffer[] = [];
      for await (const chunk of peer.fetchChunks([chunks[0]!, chunks[1]!], [MiB, MiB], cancel.signal)) {
        got.push(chunk.data);
        if (got.length === 2) {
          cancel.abort();
          release();
        }
      }
      assert.deepEqual(Buffer.concat(got), data.subarray(0, 2 * MiB));
      // Cancelled after the first of the two chunks: cut, and said so.
      const early = new AbortController();
      await assert.rejects(
        async () => {
          for await (const chunk of peer.fetchChunks([chunks[0]!, chunks[1]!], [MiB, MiB], early.signal)) {
            assert.ok(chunk);
            early.abort();
          }
        },
        (e: Error) => e instanceof PeerError && /FetchChunks cancelled$/.test(e.message),
      );
      // A holder that never sends its status holds the cancelled call no longer than the quiet
      // deadline: it ends as stalled, after every chunk was handed over.
      const slow = peerTo(port, false, 2000);
      try {
        await slow.ping(undefined, 20_000); // (the handshakes may take seconds on a loaded machine)
        const late = new AbortController();
        const handed: Buffer[] = [];
        await assert.rejects(
          async () => {
            for await (const chunk of slow.fetchChunks([chunks[0]!, chunks[1]!], [MiB, MiB], late.signal)) {
              handed.push(chunk.data);
              if (handed.length === 2) late.abort();
            }
          },
          (e: Error) => e instanceof PeerError && /stalled/.test(e.message),
        );
        assert.equal(handed.length, 2);
      } finally {
        slow.close();
      }
    } finally {
      peer.close();
      server.forceShutdown();
    }
  });

  it('refuses a gRPC FetchChunks holder cancelled at its last chunk that then heartbeats or sends a piece not asked for, and hands over only the chunk asked for', async () => {
    // The gRPC path's counterpart of the bulk stream's test above: after the last chunk the cancel
    // cuts nothing, so what the holder sends next is read, and a lie there is refused, not trusted.
    const server = new GrpcServer();
    server.addService(peerService, {
      FetchChunks: (call: ServerWritableStream<{ digests: Buffer[] }, ChunkPiece>) => {
        call.write({ index: 0, data: data.subarray(0, MiB) });
        // Which lie: the digest asked for says (the first chunk's: a heartbeat; else a piece).
        const lie = call.request.digests[0]!.equals(Buffer.from(chunks[0]!, 'hex'))
          ? { index: 1, data: Buffer.alloc(0) }
          : { index: 1, data: data.subarray(MiB, 2 * MiB) };
        call.write(lie);
        // (No status: only the client ends the call.)
      },
      Ping: pingBack,
    });
    const port = await bindPeerServer(server, '127.0.0.1', 0, peerServerCredentials(serverId));
    const peer = peerTo(port, false);
    try {
      const first = data.subarray(0, MiB);
      await cancelledAtTheLast(peer, chunks[0]!, MiB, first, /a heartbeat after the last chunk/);
      await cancelledAtTheLast(peer, chunks[1]!, MiB, first, /unexpected piece for chunk 1/);
    } finally {
      peer.close();
      server.forceShutdown();
    }
  });

  it('says busy as FetchChunks does (PeerBusyError) when too many wait', { timeout: 30_000 }, async () => {
    const limiter = new UploadLimiter(1, 1);
    const busyOpts = { ...opts, upload: { limiter, groupOf: () => 'z' } };
    const busy = await listenPeerServer(createPeerServer(busyOpts), busyOpts, '127.0.0.1', 0, serverId);
    // One request streams, two wait (heartbeats), the fourth is refused.
    const peers = [0, 1, 2, 3].map(() => peerTo(busy.port));
    const abort = new AbortController();
    try {
      const fetches = peers.map((p) => drain(p.fetchChunks([chunks[0]!], [4 * MiB], abort.signal)));
      // One of them is refused as busy (the test times out otherwise); none fails another way.
      const refused = await new Promise((resolve, reject) => {
        for (const f of fetches)
          f.catch((e: unknown) => (e instanceof PeerBusyError ? resolve(e) : reject(e as Error)));
      });
      assert.match((refused as Error).message, /upload busy/);
      abort.abort();
      await Promise.allSettled(fetches);
    } finally {
      for (const p of peers) p.close();
      limiter.close();
      busy.close();
    }
  });

  it('keeps a request waiting for the upload budget alive with heartbeats, past the client’s timeout', async () => {
    // The first chunk goes at once; the second waits about 2.5 s for the budget, while the client
    // abandons a peer quiet for 1.5 s: only the heartbeats (one a second) keep the request alive.
    const limiter = new UploadLimiter((MiB + 5) / 2.5, 1);
    const slowOpts = { ...opts, upload: { limiter, groupOf: () => 'z' } };
    const slow = await listenPeerServer(createPeerServer(slowOpts), slowOpts, '127.0.0.1', 0, serverId);
    const peer = peerTo(slow.port, true, 1500);
    try {
      const got = await drain(peer.fetchChunks([chunks[2]!, chunks[2]!], [MiB + 5, MiB + 5]));
      assert.equal(got.length, 2);
      assert.equal(peer.chunkPath, 'bulk');
    } finally {
      peer.close();
      limiter.close();
      slow.close();
    }
  });

  it('checks each request on an open connection: a node revoked since is refused at its next request', async () => {
    const socket = await raw(listener.port);
    const ask = async () => {
      const reading = readAll(
        socket,
        (got) => got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5),
      );
      socket.write(encodeRequest({ digests: ['00'.repeat(32)], from: 'cli', meta: {} }));
      return reading;
    };
    try {
      assert.match((await ask()).subarray(HEADER_BYTES).toString(), /no chunk/, 'served while not revoked');
      revocations.replace(['cli']);
      const refused = await ask();
      assert.equal(refused.readUInt8(0), FRAME.ERROR);
      assert.match(refused.subarray(HEADER_BYTES).toString(), /"code":16.*revoked/);
    } finally {
      revocations.replace([]);
      socket.destroy();
    }
  });

  it('refuses a caller whose protocol range has no version in common (FAILED_PRECONDITION)', async () => {
    const socket = await raw(listener.port);
    const reading = readAll(
      socket,
      (got) => got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5),
    );
    socket.write(
      encodeRequest({ digests: [chunks[2]!], from: 'cli', meta: { 'edgemesh-protocol': '99.0-99.0' } }),
    );
    const got = await reading;
    socket.destroy();
    assert.equal(got.readUInt8(0), FRAME.ERROR);
    assert.match(got.subarray(HEADER_BYTES).toString(), /"code":9.*no version in common/);
  });

  it('closes a gRPC (h2) connection of a certificate not of this mesh, and one node’s past MAX_CONNECTIONS_PER_PEER', async () => {
    /** A TLS connection speaking h2 as `id`; resolves once gRPC answered its preface (SETTINGS). */
    const h2 = (id: NodeCredentials) =>
      new Promise<TLSSocket>((resolve, reject) => {
        const socket = connect({
          ...peerTlsOptions(id, undefined),
          checkServerIdentity: () => undefined,
          host: '127.0.0.1',
          port: listener.port,
          ALPNProtocols: ['h2'],
        });
        socket.once('error', reject);
        socket.once('close', () => reject(new Error('closed')));
        socket.once('secureConnect', () => {
          // The client preface and an empty SETTINGS frame: the server's own SETTINGS answer.
          socket.write(
            Buffer.concat([
              Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
              Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
            ]),
          );
        });
        socket.once('data', () => resolve(socket));
      });
    await assert.rejects(h2(otherMesh), /closed|ECONNRESET/, 'another mesh’s node holds no gRPC connection');
    const sockets: TLSSocket[] = [];
    try {
      for (let i = 0; i < MAX_CONNECTIONS_PER_PEER; i++) sockets.push(await h2(clientId));
      await assert.rejects(h2(clientId), /closed|ECONNRESET/, 'one more of the same node is closed');
      assert.ok(
        sockets.every((socket) => !socket.destroyed),
        'the first ones stay',
      );
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });

  it('takes at most MAX_CONNECTIONS_PER_PEER connections of one node at once, and says busy to more', async () => {
    const sockets = await Promise.all(
      Array.from({ length: MAX_CONNECTIONS_PER_PEER }, async () => {
        const socket = await raw(listener.port);
        // Each answers a request, so the server has it counted.
        const reading = readAll(
          socket,
          (got) => got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5),
        );
        socket.write(encodeRequest({ digests: ['00'.repeat(32)], from: 'cli', meta: {} }));
        await reading;
        return socket;
      }),
    );
    try {
      const extra = await raw(listener.port);
      const got = await readAll(extra);
      assert.equal(got.readUInt8(0), FRAME.ERROR);
      assert.match(got.subarray(HEADER_BYTES).toString(), /"code":8.*bulk connections open/);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });

  it(
    'destroys a connection it refuses (not of this mesh, or one too many) once its error frame is out, though the client never closes it',
    { timeout: 20_000 },
    async () => {
      /** The server's side of each bulk connection, as authenticate sees it (at its first request too). */
      const served = new Set<TLSSocket>();
      let refuse = false;
      const own = await listenPeer({
        grpc: new GrpcServer(),
        host: '127.0.0.1',
        port: 0,
        node: serverId,
        logger: opts.logger,
        maxConnectionAgeMs: 60_000,
        authenticate: (socket) => {
          served.add(socket);
          if (refuse) throw new Error('not a node of this mesh');
          return 'cli';
        },
        answer: (_caller, _request, sink) => Promise.resolve(sink.end()),
      });
      /** A client that reads but never closes: the server's end alone would leave it open. */
      const stubborn = (): Promise<TLSSocket> =>
        new Promise((resolve, reject) => {
          const socket = connect({
            ...peerTlsOptions(clientId, 'srv'),
            socket: tcpConnect({ host: '127.0.0.1', port: own.port, allowHalfOpen: true }),
            ALPNProtocols: [BULK_ALPN],
          });
          socket.once('secureConnect', () => resolve(socket));
          socket.once('error', reject);
        });
      const frame = (got: Buffer) =>
        got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5);
      const gone = (socket: TLSSocket) =>
        new Promise((resolve) => (socket.destroyed ? resolve(true) : socket.once('close', resolve)));
      const clients: TLSSocket[] = [];
      try {
        // Refused by authentication.
        refuse = true;
        const refused = await stubborn();
        clients.push(refused);
        const got = await readAll(refused, frame);
        assert.match(got.subarray(HEADER_BYTES).toString(), /"code":16/);
        assert.equal(refused.allowHalfOpen, true, 'the client keeps its side open');
        await gone([...served].at(-1)!);
        // Refused for one connection too many.
        refuse = false;
        for (let i = 0; i < MAX_CONNECTIONS_PER_PEER; i++) {
          const socket = await stubborn();
          clients.push(socket);
          const answered = readAll(socket, frame);
          socket.write(encodeRequest({ digests: [], from: 'cli', meta: {} }));
          assert.equal((await answered).readUInt8(0), FRAME.END);
        }
        const extra = await stubborn();
        clients.push(extra);
        assert.match((await readAll(extra, frame)).subarray(HEADER_BYTES).toString(), /"code":8/);
        await gone([...served].at(-1)!);
        assert.equal(served.size, MAX_CONNECTIONS_PER_PEER + 2);
        assert.ok(
          [...served].slice(1, -1).every((s) => !s.destroyed),
          'the connections it took stay open',
        );
      } finally {
        for (const socket of clients) socket.destroy();
        own.close();
      }
    },
  );

  /** A peer port of its own with `limits`, answering every bulk request with END. */
  const portWith = (limits: Partial<PeerPortLimits>) =>
    listenPeer({
      grpc: new GrpcServer(),
      host: '127.0.0.1',
      port: 0,
      node: serverId,
      logger: opts.logger,
      maxConnectionAgeMs: 60_000,
      authenticate: () => 'cli',
      answer: (_caller, _request, sink) => Promise.resolve(sink.end()),
      limits,
    });
  /** A TCP connection that never starts its TLS handshake. */
  const silent = (port: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const socket = tcpConnect({ host: '127.0.0.1', port });
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
    });
  const closed = (socket: Socket) =>
    new Promise((resolve) => (socket.closed ? resolve(true) : socket.once('close', resolve)));

  it('closes a connection whose TLS handshake does not end in time', { timeout: 15_000 }, async () => {
    const own = await portWith({ handshakeTimeoutMs: 200 });
    const socket = await silent(own.port);
    try {
      socket.on('error', () => {});
      await closed(socket);
    } finally {
      socket.destroy();
      own.close();
    }
  });

  it(
    'closes connections beyond the handshakes in progress allowed, over all and from one address, and takes more once those end',
    { timeout: 15_000 },
    async () => {
      for (const limits of [{ maxHandshakes: 2 }, { maxHandshakesPerAddress: 2 }]) {
        const own = await portWith({ handshakeTimeoutMs: 60_000, ...limits });
        // Connections whose handshake is over (answered: over on the server's side too) take no place.
        const done = [await raw(own.port), await raw(own.port)];
        for (const socket of done) {
          const answered = readAll(socket, (got) => got.length >= HEADER_BYTES);
          socket.write(encodeRequest({ digests: [], from: 'cli', meta: {} }));
          await answered;
        }
        const stuck = [await silent(own.port), await silent(own.port)];
        try {
          const extra = await silent(own.port);
          extra.on('error', () => {});
          await closed(extra);
          // A handshake that ends frees its place: a node's connection works meanwhile.
          for (const socket of stuck) socket.destroy();
          const socket = await eventually(() => raw(own.port).catch(() => undefined), 5000, 'a connection');
          const answered = readAll(socket, (got) => got.length >= HEADER_BYTES);
          socket.write(encodeRequest({ digests: [], from: 'cli', meta: {} }));
          assert.equal((await answered).readUInt8(0), FRAME.END, JSON.stringify(limits));
          socket.destroy();
        } finally {
          for (const socket of [...done, ...stuck]) socket.destroy();
          own.close();
        }
      }
    },
  );

  it('is taken as busy by a client it turns away before the handshake (PeerBusyError: not a failure of the peer)', async () => {
    const own = await portWith({ maxHandshakes: 0 });
    const channel = new BulkChannel({
      id: 'srv',
      address: `127.0.0.1:${own.port}`,
      timeoutMs: 5000,
      tls: () => peerTlsOptions(clientId, 'srv'),
    });
    try {
      await assert.rejects(
        (async () => {
          for await (const chunk of channel.fetch(['00'.repeat(32)], [4], 'cli', {})) void chunk;
        })(),
        (error: Error) => error instanceof PeerBusyError && /turned away/.test(error.message),
      );
    } finally {
      channel.close();
      own.close();
    }
  });

  it('closes a gRPC connection on which no call comes', { timeout: 15_000 }, async () => {
    const idleOpts = { ...opts, connectionIdleMs: 200 };
    const own = await listenPeerServer(createPeerServer(idleOpts), idleOpts, '127.0.0.1', 0, serverId);
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = connect({
        ...peerTlsOptions(clientId, 'srv'),
        host: '127.0.0.1',
        port: own.port,
        ALPNProtocols: ['h2'],
      });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    try {
      assert.equal(socket.alpnProtocol, 'h2');
      socket.on('error', () => {});
      socket.resume(); // the server's SETTINGS, then its GOAWAY
      await closed(socket);
    } finally {
      socket.destroy();
      own.close();
    }
  });

  // Without the close, the connection would only go at the server's 60 s idle timeout.
  it('closes its open bulk connections when it stops', { timeout: 15_000 }, async () => {
    const own = await listenPeerServer(createPeerServer(opts), opts, '127.0.0.1', 0, serverId);
    const socket = await raw(own.port);
    socket.on('error', () => {});
    // An answer first: the server has taken the connection (its handshake is over on both sides).
    const answered = readAll(
      socket,
      (got) => got.length >= HEADER_BYTES && got.length >= HEADER_BYTES + got.readUInt32BE(5),
    );
    socket.write(encodeRequest({ digests: ['00'.repeat(32)], from: 'cli', meta: {} }));
    await answered;
    const closed = new Promise((resolve) => socket.once('close', resolve));
    own.close();
    await closed;
  });

  it('falls back to FetchChunks with a peer that does not speak it (a build from before)', async () => {
    const old: Server = createPeerServer(opts);
    const port = await bindPeerServer(old, '127.0.0.1', 0, peerServerCredentials(serverId));
    const peer = peerTo(port);
    try {
      assert.deepEqual(Buffer.concat(await drain(peer.fetchChunks(chunks, lengths))), data);
      assert.equal(peer.chunkPath, 'grpc');
      assert.deepEqual(Buffer.concat(await drain(peer.fetchChunks(chunks, lengths))), data);
    } finally {
      peer.close();
      old.forceShutdown();
    }
  });
});

/** A TLS server that speaks the bulk protocol as `answer` says: a lying or silent peer. */
async function fakeBulkServer(id: NodeCredentials, answer: (socket: TLSSocket) => void): Promise<TlsServer> {
  const server = createServer(
    { cert: id.certPem, key: id.keyPem, ca: id.bundlePem, requestCert: true, ALPNProtocols: [BULK_ALPN] },
    (socket) => {
      socket.on('error', () => {});
      socket.once('data', () => answer(socket));
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}
