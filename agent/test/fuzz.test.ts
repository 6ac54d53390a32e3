import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, type MethodDefinition, status as grpcStatus } from '@grpc/grpc-js';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { encodeEvent, subjectFor, type ControlEvent } from '@edgemesh/contracts';
import fc from 'fast-check';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';
import { fuzzSetting } from '../harness/fuzz.ts';
import { collectGarbage, INSPECT } from '../harness/inspector.ts';
import { natsUnavailable, type NatsServer, startNatsServer } from '../harness/nats-server.ts';
import { testCredentials } from '../harness/test-ca.ts';
import { EventSigner } from '../src/security/event-signer.ts';
import { peerChannelCredentials, peerTlsOptions } from '../src/security/grpc-credentials.ts';
import { BULK_ALPN, encodeRequest, FRAME } from '../src/transport/bulk-wire.ts';
import { peerService, type WireManifest, type WireManifestAnswer } from '../src/transport/peer-service.ts';
import { AGENT_MALLOC_ENV, AGENT_NODE_FLAGS } from '../src/node-flags.ts';
import type { NodeCredentials } from '../src/security/node-credentials.ts';

/** Cases per surface; the seed is fixed, so CI runs the same cases every time. */
const RUNS = fuzzSetting('FUZZ_RUNS', 10_000, 1);
const SEED = fuzzSetting('FUZZ_SEED', 20_261_130);
/** Messages of a server stream (other than a watch) read before it is cancelled. */
const STREAM_READ = 256;
const MESH = 'fuzz';
/**
 * What the agent may keep over the second half of a surface's cases (see stillWell): this much per
 * case, and SECOND_HALF_SLACK whatever the count (what a collection leaves differs by that much
 * between two readings of an idle agent; FUZZ_RUNS=300 failed without it).
 */
const PER_CASE_BYTES = 64;
const SECOND_HALF_SLACK = 512 * 2 ** 10;
const missing = natsUnavailable();

/** What the HTTP API may answer (docs/agent.md); anything else, a 500 above all, is a failure. */
const HTTP_DOCUMENTED = new Set([
  200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 409, 411, 413, 416, 429, 502, 503,
]);

/** `body` behind a bulk-stream length prefix. */
function frame(body: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

/** A bulk-stream connection to the agent's peer port as the node `as`. */
function bulkConnection(port: number, as: NodeCredentials): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      ...peerTlsOptions(as, undefined),
      host: '127.0.0.1',
      port,
      ALPNProtocols: [BULK_ALPN],
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

type BulkOutcome =
  { kind: 'end' } | { kind: 'error'; code: number; message: string } | { kind: 'closed' } | { kind: 'hang' };

/**
 * Sends `bytes` on a bulk connection (then ends the client's side when `last`) and reads the answer:
 * frames up to END or an error frame, or the connection closing; 'hang' when none comes in 10 s.
 */
function bulkExchange(socket: TLSSocket, bytes: Buffer, last: boolean): Promise<BulkOutcome> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const finish = (outcome: BulkOutcome) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(outcome);
    };
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      while (got.length >= 9) {
        const type = got.readUInt8(0);
        const length = got.readUInt32BE(5);
        if (got.length < 9 + length) return;
        const body = got.subarray(9, 9 + length);
        got = got.subarray(9 + length);
        if (type === FRAME.END) return finish({ kind: 'end' });
        if (type === FRAME.ERROR) {
          const e = JSON.parse(body.toString()) as { code: number; message: string };
          return finish({ kind: 'error', code: e.code, message: e.message });
        }
      }
    };
    const onClose = () => finish({ kind: 'closed' });
    const timer = setTimeout(() => finish({ kind: 'hang' }), 10_000);
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', () => {});
    if (last) socket.end(bytes);
    else socket.write(bytes);
  });
}

/** One request over a fresh connection: its status, the body read up to 64 KiB then dropped. */
function send(
  port: number,
  r: { method: string; path: string; headers: Record<string, string>; body: Uint8Array },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: r.method, path: r.path, headers: r.headers, agent: false },
      (res) => {
        let seen = 0;
        res.on('data', (part: Buffer) => {
          seen += part.length;
          if (seen > 65_536) res.destroy(); // a large object or a stream: the status is what counts
        });
        res.on('close', () => resolve(res.statusCode ?? 0));
        // A stream (an exchange receiver) has its status at once: no need to wait for its end.
        if (res.headers['content-type']?.startsWith('application/x-ndjson')) res.destroy();
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`${r.method} ${r.path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end(r.body.length > 0 ? r.body : undefined);
  });
}

const token = fc.stringMatching(/^[A-Za-z0-9._~%-]{0,24}$/);
const oddSegment = fc.oneof(
  token,
  fc.constantFrom('..', '.', '%2e%2e', '%2F', '%00', '%ff', '%', '~', 'a%2Fb', '', '%F0%9F%98%80'),
  fc.string({ maxLength: 40 }).map((s) => encodeURIComponent(s)),
);
const httpRequest = fc.record({
  method: fc.constantFrom('GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND'),
  path: fc.oneof(
    fc.tuple(fc.array(oddSegment, { minLength: 1, maxLength: 4 })).map(([s]) => `/v1/objects/${s.join('/')}`),
    fc.tuple(oddSegment, oddSegment).map(([t, topic]) => `/v1/exchange/${t}/${topic}`),
    oddSegment.map((topic) => `/v1/exchange/${topic}`),
    fc.constantFrom(
      '/v1/status',
      '/healthz',
      '/readyz',
      '/metrics',
      '/',
      '/v1',
      '/v1/objects',
      '/v1/objects/',
    ),
    fc.array(oddSegment, { maxLength: 5 }).map((s) => `/${s.join('/')}`),
  ),
  headers: fc.record(
    {
      range: fc.oneof(
        fc.string({ maxLength: 30 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')),
        fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => `bytes=${a}-${b}`),
        fc.constantFrom('bytes=-5', 'bytes=0-', 'bytes=5-1', 'bytes=0-0,2-3', 'items=1-2'),
      ),
      'content-type': fc.constantFrom('text/plain', 'application/json', '', 'x/y; charset=utf-8', '\u0020'),
      'if-none-match': fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\x21-\x7e]/g, '')),
      'x-edgemesh-ttl': fc.oneof(
        fc.integer().map(String),
        fc.constantFrom('NaN', '1e309', '-0', '', '60', '0', '86400', '9007199254740993', ' 5', '5s'),
      ),
    },
    { requiredKeys: [] },
  ),
  body: fc.uint8Array({ maxLength: 2048 }),
  // Mostly none (the agent lets anonymous clients in here), so that requests reach the handlers.
  authorization: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 9 },
    { arbitrary: fc.constantFrom('Bearer x', 'Bearer ', 'Basic Zm9vOmJhcg==', 'garbage'), weight: 1 },
  ),
});

describe(
  `fuzzing with fast-check (seed ${SEED}, ${RUNS} cases per surface)`,
  { skip: missing ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    let nc: NatsConnection;
    let agent: AgentProcess;
    let fuzzer: NodeCredentials;
    /** The digests of the chunks the agent holds. */
    const held: string[] = [];
    const counts: Record<string, Record<string, number>> = {};
    const count = (surface: string, outcome: string | number) => {
      const c = (counts[surface] ??= {});
      c[outcome] = (c[outcome] ?? 0) + 1;
    };
    /** The agent's memory after a full garbage collection, once started and after each surface. */
    const memory = async () => {
      type Process = { process: { rssBytes: number; externalBytes: number } };
      const before = ((await agent.status()) as unknown as Process).process;
      const heap = await collectGarbage(agent.logs);
      const { process: p } = (await agent.status()) as unknown as Process;
      return {
        live: heap.usedBytes - heap.codeBytes,
        code: heap.codeBytes,
        heap: heap.totalBytes,
        native: p.externalBytes,
        rss: p.rssBytes,
        rssBefore: before.rssBytes,
      };
    };
    type Memory = Awaited<ReturnType<typeof memory>>;
    /** What the agent held before the surface now fuzzed (at start, then after each surface), and halfway through it. */
    let last: Memory;
    let half: Memory | undefined;
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    /** Halfway through a surface's cases: what the agent holds once it has seen each kind of them. */
    const halfway = async (surface: string) => {
      half = await memory();
      console.log(
        `# fuzz ${surface}, halfway: live heap ${mib(half.live)} and code ${mib(half.code)}, external ${mib(half.native)}, RSS ${mib(half.rss)}`,
      );
    };
    /**
     * The agent still answers, and keeps no more than it must of what a surface sent it. Measured
     * after a full garbage collection (harness/inspector.ts): before one, RSS counts garbage V8 has
     * not yet collected, as much as the machine's speed and load leave (240-290 MiB after the gRPC
     * surface here, 2 cores, with or without a CPU hog; 538 MiB on a CI machine that ran it in half
     * the time). The live heap leaves out V8's code (compiled code and bytecode, which grew 4.6 ->
     * 7.3 MiB over the four surfaces here and shrinks as bytecode ages: how much depends on timing).
     * Each surface sends half its cases of every kind, then the other half. Over the first the agent
     * fills what it keeps by design (members, tombstones, objects put, a client's rate limit); over
     * the second, what it keeps of each case shows, and may be at most PER_CASE_BYTES per case of
     * that half (5,000 to 50,000 cases) and SECOND_HALF_SLACK. Over a whole surface, live heap and
     * Buffers may grow by 4 MiB. Here the second halves grew the live heap by -0.1 to 0.1 MiB and
     * external memory by at most 0.1, the whole surfaces by at most 0.8 and 0.1. A Ping handler
     * keeping 1.4 KB per call failed it: a 175-number array grew the live heap 7.5 MiB over the
     * gRPC surface, a Buffer external memory 6.8 (3.4 and 3.3 over its second half, under that
     * half's 3.55 MiB: the 4 MiB caught them). By arithmetic, the 4 MiB
     * fail a leak of 90 bytes on every call that reaches a handler (about 47,500; the others
     * are undecodable). A leak only on a path few cases reach (a PUT that stores: 4 of the HTTP
     * surface's 10,000; a GET that finds: 155) is below what this can see; the soak is the test for
     * those (docs/benchmarks.md). RSS after the collection stays under 512 MiB (113-158 MiB here):
     * memory neither V8 nor Buffers hold (OpenSSL's, nghttp2's) is bounded only that loosely here.
     */
    const stillWell = async (surface: string, cases: number) => {
      assert.equal((await fetch(`${agent.url}/healthz`)).status, 200, `alive after ${surface}`);
      const m = await memory();
      const h = half ?? last;
      const told = `after ${surface}: live heap ${mib(m.live)} (before it ${mib(last.live)}, halfway ${mib(h.live)}) and code ${mib(m.code)} (before it ${mib(last.code)}), V8 heap ${mib(m.heap)}, external ${mib(m.native)} (before it ${mib(last.native)}, halfway ${mib(h.native)}), RSS ${mib(m.rss)} (${mib(m.rssBefore)} before the collection)`;
      console.log(
        `# fuzz ${surface}: ${Object.values(counts[surface] ?? {}).reduce((a, n) => a + n, 0)} cases, outcomes ${JSON.stringify(counts[surface])}; ${told}`,
      );
      const secondHalf = cases - Math.floor(cases / 2);
      const allowed = SECOND_HALF_SLACK + secondHalf * PER_CASE_BYTES;
      assert.ok(m.live - h.live < allowed, `live heap grew over the second half ${told}`);
      assert.ok(m.native - h.native < allowed, `external memory grew over the second half ${told}`);
      assert.ok(m.live - last.live < 4 * 2 ** 20, `live heap grew ${told}`);
      assert.ok(m.native - last.native < 4 * 2 ** 20, `external memory grew ${told}`);
      assert.ok(m.rss < 512 * 2 ** 20, `RSS ${told}`);
      last = m;
      half = undefined;
    };

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-fuzz-'));
      nats = await startNatsServer();
      nc = await connect({ servers: nats.url });
      fuzzer = await testCredentials('fuzzer', { mesh: MESH });
      agent = await startAgentProcess(
        [
          ...['--node-id', 'a', '--mesh', MESH, '--store.dir', dir, '--control-plane.servers', nats.url],
          ...['--log.level', 'info'],
        ],
        undefined,
        { nodeFlags: [...AGENT_NODE_FLAGS, INSPECT], env: { ...AGENT_MALLOC_ENV } },
      );
      // Something to find: objects under a few of the keys the fuzzer may hit.
      for (const key of ['a', 'a/b', 'x']) {
        await fetch(`${agent.url}/v1/objects/${key}`, { method: 'PUT', body: key });
        held.push(createHash('sha256').update(key).digest('hex')); // its one chunk
      }
      last = await memory();
    });
    after(async () => {
      fuzzer?.close();
      await agent?.stop();
      await nc?.close();
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    it('the HTTP API answers every request with a documented status, never a 500, and stays up', async () => {
      // Half the cases, then the other half (a seed of its own each).
      for (const [h, runs] of [Math.floor(RUNS / 2), RUNS - Math.floor(RUNS / 2)].entries()) {
        if (h === 1) await halfway('http');
        await fc.assert(
          fc.asyncProperty(httpRequest, async (r) => {
            const headers = r.authorization ? { ...r.headers, authorization: r.authorization } : r.headers;
            const status = await send(agent.httpPort, { ...r, headers });
            count('http', status);
            return HTTP_DOCUMENTED.has(status);
          }),
          { seed: SEED + h, numRuns: runs },
        );
      }
      await stillWell('http', RUNS);
    });

    it('every gRPC method answers random bytes and random messages with a status (RUNS cases each), and stays up', async () => {
      const client = new Client(`127.0.0.1:${agent.grpcPort}`, peerChannelCredentials(fuzzer, undefined));
      const methods = Object.values(peerService) as MethodDefinition<unknown, unknown>[];
      const raw = (b: Buffer) => b;
      /**
       * The codes a refusal may carry; UNKNOWN (a handler that threw) and a hang (DEADLINE_EXCEEDED)
       * are failures. CANCELLED only for a server stream this test cancelled once it was answered
       * (a watch, or a stream past STREAM_READ messages).
       */
      const documented = new Set([
        grpcStatus.OK,
        grpcStatus.INVALID_ARGUMENT,
        grpcStatus.NOT_FOUND,
        grpcStatus.PERMISSION_DENIED,
        grpcStatus.FAILED_PRECONDITION,
        grpcStatus.RESOURCE_EXHAUSTED,
        grpcStatus.UNAVAILABLE,
        grpcStatus.ABORTED,
        grpcStatus.OUT_OF_RANGE,
        grpcStatus.UNAUTHENTICATED,
        grpcStatus.CANCELLED,
        // Not INTERNAL: grpc-js's own answer to bytes that are no message of the method's type is let
        // through below; from a handler, INTERNAL is an error garbage should not reach.
      ]);
      const call = (method: MethodDefinition<unknown, unknown>, body: Buffer) =>
        new Promise<{ code: number; details: string; cancelledHere?: boolean }>((resolve) => {
          const deadline = Date.now() + 5000;
          if (method.responseStream) {
            const stream = client.makeServerStreamRequest(method.path, raw, raw, body, { deadline });
            // A watch never ends by itself: once it opens (its headers, or a first message) it is
            // answered, and cancelled. Any other stream is read to its end (at most STREAM_READ
            // messages), so a handler that fails after its first message shows. One refused ends with
            // its status; one that does not end before the deadline hangs: DEADLINE_EXCEEDED, a failure.
            let messages = 0;
            let cancelledHere = false;
            const cancel = () => {
              cancelledHere = true;
              stream.cancel();
            };
            if (method.path.endsWith('/Watch')) stream.on('metadata', cancel);
            stream.on('data', () => {
              if (method.path.endsWith('/Watch') || ++messages >= STREAM_READ) cancel();
            });
            stream.on('status', (s: { code: number; details: string }) => resolve({ ...s, cancelledHere }));
            stream.on('error', () => undefined);
          } else {
            client.makeUnaryRequest(method.path, raw, raw, body, { deadline }, (error) =>
              resolve(
                error ? { code: error.code, details: error.details } : { code: grpcStatus.OK, details: '' },
              ),
            );
          }
        });
      const holder = fc.record({
        nodeId: fc.constantFrom('fuzzer', 'a', 'x', ''),
        grpc: fc.constantFrom('127.0.0.1:1', 'a:1', ''),
      });
      // The manifests of what the agent holds, as its GetManifest gives them: HoldRequest's manifest is
      // one of them, or one with a field changed (another key, size, root, chunks, times, signature).
      const getManifest = peerService.GetManifest as MethodDefinition<unknown, WireManifestAnswer>;
      const manifests: WireManifest[] = [];
      for (const key of ['a', 'a/b', 'x']) {
        const answer = await new Promise<WireManifestAnswer | undefined>((resolve) =>
          client.makeUnaryRequest(
            getManifest.path,
            getManifest.requestSerialize,
            getManifest.responseDeserialize,
            { key },
            (error, value) => resolve(error ? undefined : value),
          ),
        );
        if (answer?.manifest) manifests.push(answer.manifest);
      }
      assert.equal(manifests.length, 3, 'the manifests of the objects put before');
      const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b));
      const changed: { [K in keyof WireManifest]-?: fc.Arbitrary<WireManifest[K]> } = {
        key: fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('a', 'a/b', 'x')),
        size: fc.oneof(fc.nat(), fc.constant(2 ** 53 - 1)),
        chunkSize: fc.oneof(fc.nat(), fc.constant(2 ** 31)),
        chunks: fc.array(bytes32, { maxLength: 4 }),
        root: bytes32,
        createdAtMs: fc.oneof(fc.nat(), fc.constant(4_102_444_800_000)),
        expiresAtMs: fc.nat(),
        contentType: fc.string({ maxLength: 20 }),
        signerCertificate: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
        signature: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      };
      const manifest = fc.oneof(
        fc.constantFrom(...manifests),
        fc
          .tuple(
            fc.constantFrom(...manifests),
            fc.constantFrom(...(Object.keys(changed) as (keyof WireManifest)[])),
          )
          .chain(([m, field]) =>
            (changed[field] as fc.Arbitrary<unknown>).map((v) => ({ ...m, [field]: v })),
          ),
      );
      const message = fc.oneof(
        fc.uint8Array({ maxLength: 512 }).map((b) => ({ bytes: Buffer.from(b) })),
        fc.anything({ maxDepth: 2 }).map((value) => ({ value })),
        fc
          .record({
            key: fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('a', 'a/b', 'x', 'nothing-here')),
            // Random bytes, and the chunks the agent holds: a FetchChunks of those streams them.
            digests: fc.array(
              fc.oneof(
                fc.uint8Array({ minLength: 0, maxLength: 40 }).map((b) => Buffer.from(b)),
                fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b)),
                fc.constantFrom(...held).map((hex) => Buffer.from(hex, 'hex')),
              ),
              { maxLength: 8 },
            ),
            fromNode: fc.constantFrom('fuzzer', 'a', 'someone-else', ''),
            // Holders (WatchRequest.from, HoldRequest.holder, ReplicateRequest.source).
            from: fc.option(holder, { nil: undefined }),
            holder: fc.option(holder, { nil: undefined }),
            source: fc.option(holder, { nil: undefined }),
            // ReplicateRequest's root; HoldRequest's manifest.
            root: fc.oneof(bytes32, fc.constantFrom(...manifests.map((m) => m.root))),
            manifest: fc.option(manifest, { nil: undefined }),
            topic: fc.string({ maxLength: 20 }),
            body: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
            purgedAtMs: fc.oneof(fc.nat(), fc.constant(4_102_444_800_000)),
            nodeId: fc.constantFrom('fuzzer', 'a', 'x'),
            target: fc.constantFrom('127.0.0.1:1', 'a:1', ''),
          })
          .map((value) => ({ value })),
      );
      // RUNS cases for each method (a seed of its own), 16 calls in flight at a time: the first half
      // of every method's, then the second.
      const failures: string[] = [];
      /** Methods whose handler answered at least once (not only grpc-js's "undecodable"). */
      const reached = new Set<string>();
      const sampled = methods.map((_, i) => fc.sample(message, { seed: SEED + i, numRuns: RUNS }));
      const halves = [
        [0, Math.floor(RUNS / 2)],
        [Math.floor(RUNS / 2), RUNS],
      ] as const;
      for (const [h, [from, to]] of halves.entries()) {
        if (h === 1) await halfway('grpc');
        for (const [i, method] of methods.entries()) {
          const cases = sampled[i]!.slice(from, to);
          let next = 0;
          const worker = async () => {
            while (next < cases.length) {
              const m = cases[next++]!;
              let body: Buffer;
              if ('bytes' in m) body = m.bytes;
              else
                try {
                  body = method.requestSerialize(m.value);
                } catch {
                  body = Buffer.from(JSON.stringify(m.value) ?? '');
                }
              const { code, details, cancelledHere } = await call(method, body);
              // INTERNAL only as grpc-js's own answer to bytes that are no message of the method's type.
              const undecodable =
                code === Number(grpcStatus.INTERNAL) && /^Error deserializing request/.test(details);
              if (!undecodable) reached.add(method.path);
              count(
                'grpc',
                `${method.path.split('/').pop()}:${undecodable ? 'undecodable' : grpcStatus[code]}`,
              );
              // A server stream cut by this test's cancel (once answered) ends CANCELLED; nothing else may.
              const documentedAnswer =
                undecodable ||
                (documented.has(code) && (code !== Number(grpcStatus.CANCELLED) || cancelledHere === true));
              if (!documentedAnswer && failures.length < 5)
                failures.push(
                  `${method.path}: ${grpcStatus[code]} ${details} for ${body.toString('hex').slice(0, 200)}`,
                );
            }
          };
          await Promise.all(Array.from({ length: 16 }, worker));
        }
      }
      assert.deepEqual(failures, [], 'every answer a documented status');
      // A method whose every case was "undecodable" tested nothing (its decoding broken, say).
      assert.deepEqual(
        methods.map((m) => m.path).filter((p) => !reached.has(p)),
        [],
        'every method answered by its handler',
      );
      client.close();
      await stillWell('grpc', RUNS * methods.length);
    });

    it('the bulk stream answers random bytes and random requests with frames or a closed connection (RUNS cases), and stays up', async () => {
      const cases = fc.sample(
        fc.oneof(
          // Bytes that may be anything (a length prefix of any size): sent, then the client's side ends.
          fc.uint8Array({ maxLength: 600 }).map((b) => ({ raw: Buffer.from(b) })),
          // A frame whose body is any JSON value.
          fc
            .anything({ maxDepth: 2 })
            .map((value) => ({ raw: frame(Buffer.from(JSON.stringify(value) ?? '')) })),
          // Requests of the right shape with odd digests and claims: answered on a kept connection.
          fc
            .record({
              digests: fc.array(
                fc.oneof(
                  fc.constantFrom(...held),
                  fc.stringMatching(/^[0-9a-f]{64}$/),
                  fc.string({ maxLength: 70 }),
                ),
                { maxLength: 6 },
              ),
              from: fc.constantFrom('fuzzer', 'a', ''),
              meta: fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ maxLength: 40 }), { maxKeys: 3 }),
            })
            .map((request) => ({ request })),
        ),
        { seed: SEED + 100, numRuns: RUNS },
      );
      /** The statuses an error frame may carry (a refusal); INTERNAL or UNKNOWN would be a failure. */
      const documented = new Set<number>([
        grpcStatus.INVALID_ARGUMENT,
        grpcStatus.NOT_FOUND,
        grpcStatus.PERMISSION_DENIED,
        grpcStatus.RESOURCE_EXHAUSTED,
        grpcStatus.FAILED_PRECONDITION, // a protocol range in common with none of this node's
      ]);
      const failures: string[] = [];
      let next = 0;
      let end = Math.floor(cases.length / 2); // the first half, then the rest
      const worker = async () => {
        let socket: TLSSocket | undefined;
        while (next < end) {
          const c = cases[next++]!;
          socket ??= await bulkConnection(agent.grpcPort, fuzzer);
          const outcome = await bulkExchange(
            socket,
            'raw' in c ? c.raw : encodeRequest(c.request),
            'raw' in c,
          );
          count('bulk', outcome.kind === 'error' ? `error:${grpcStatus[outcome.code]}` : outcome.kind);
          if (outcome.kind === 'hang' || (outcome.kind === 'error' && !documented.has(outcome.code)))
            if (failures.length < 5)
              failures.push(`${JSON.stringify(outcome)} for ${JSON.stringify(c).slice(0, 200)}`);
          if ('raw' in c || (outcome.kind !== 'end' && outcome.kind !== 'error')) {
            socket.destroy();
            socket = undefined;
          }
        }
        socket?.destroy();
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      await halfway('bulk');
      end = cases.length;
      await Promise.all(Array.from({ length: 16 }, worker));
      assert.deepEqual(failures, [], 'every answer frames or a closed connection, in time');
      assert.ok((counts.bulk?.end ?? 0) > 0, 'some requests were answered in full');
      await stillWell('bulk', cases.length);
    });

    it('every control-plane event type, random and signed by a node of the mesh (RUNS cases each), is acted on or dropped, never a crash', async () => {
      const signer = new EventSigner(fuzzer);
      const nodeId = fc.oneof(fc.constantFrom('fuzzer', 'a', 'b', ''), fc.string({ maxLength: 300 }));
      const member = fc.record({
        nodeId,
        zone: fc.string({ maxLength: 70 }),
        region: fc.string({ maxLength: 70 }),
        grpc: fc.oneof(fc.constantFrom('127.0.0.1:1', '[::1]:7481', 'a:b', ''), fc.string({ maxLength: 40 })),
        weight: fc.oneof(fc.integer(), fc.double()),
        incarnation: fc.oneof(fc.nat(), fc.double()),
        coordinate: fc.option(
          fc.record({
            vec: fc.array(fc.double(), { maxLength: 9 }),
            height: fc.double(),
            error: fc.double(),
          }),
          { nil: undefined },
        ),
      });
      const count_ = fc.oneof(fc.nat(), fc.double());
      // Each type with a body of its own shape (its values random, often out of bounds), or anything:
      // RUNS cases for each.
      const types = [
        fc.record({ type: fc.constant('member.announce'), body: fc.record({ member }) }),
        fc.record({
          type: fc.constantFrom('member.leave', 'member.suspect'),
          body: fc.record({ nodeId, incarnation: count_ }),
        }),
        fc.record({
          type: fc.constant('object.purge'),
          body: fc.record({
            key: fc.oneof(fc.constantFrom('a', 'a/b', 'x', '../x'), fc.string({ maxLength: 600 })),
            purgedAtMs: fc.oneof(
              fc.nat(),
              fc.double(),
              fc.constant(4_102_444_800_000),
              fc.constant(Date.now()),
            ),
          }),
        }),
        fc.record({
          type: fc.constant('node.stats'),
          body: fc.record({
            hits: fc.nat(),
            misses: fc.nat(),
            bytesFromPeers: fc.nat(),
            bytesFromOrigin: fc.nat(),
            startedAtMs: fc.nat(),
            distrusted: fc.array(nodeId, { maxLength: 80 }),
          }),
        }),
        fc.record({
          type: fc.constant('mesh.revocations'),
          body: fc.record({
            nodes: fc.array(nodeId, { maxLength: 20 }),
            issuedAtMs: fc.nat(),
            signature: fc.base64String(),
          }),
        }),
        fc.record({
          type: fc.constant('members.snapshot'),
          body: fc.record({ members: fc.array(member, { maxLength: 5 }) }),
        }),
        fc.record({ type: fc.string({ maxLength: 20 }), body: fc.anything({ maxDepth: 2 }) }),
      ];
      const eventOf = (typed: (typeof types)[number]) =>
        fc.record({
          typed,
          from: fc.constantFrom('fuzzer', 'fuzzer', 'a', 'someone'),
          sentAtMs: fc.oneof(
            { arbitrary: fc.constant(null), weight: 4 },
            { arbitrary: fc.constantFrom(0, -1, 4_102_444_800_000), weight: 1 },
          ),
          signed: fc.boolean(),
          garbage: fc.oneof(
            { arbitrary: fc.constant(undefined), weight: 9 },
            { arbitrary: fc.uint8Array({ maxLength: 256 }), weight: 1 },
          ),
        });
      // Every event reached the agent and was dealt with: its control counters account for them all.
      // Checked after each type, which also keeps the agent from falling RUNS x types behind.
      let seen = 0;
      // A minute, or more for a hunt's larger counts (FUZZ_RUNS): 6 ms per event of the batch.
      const takenIn = (total: number, batch: number) =>
        eventually(
          async () => {
            const s = (await agent.status()) as unknown as { counters: { control: { messagesIn?: number } } };
            seen = s.counters.control.messagesIn ?? 0;
            return seen >= total ? true : undefined;
          },
          Math.max(60_000, 6 * batch),
          'every fuzzed event taken in',
        ).catch(() => assert.fail(`the agent took in ${seen} of the ${total} events`));
      // Half the cases of every type (a seed of its own for each half), then the other half.
      const halfRuns = [Math.floor(RUNS / 2), RUNS - Math.floor(RUNS / 2)];
      let published = 0;
      for (const [h, runs] of halfRuns.entries()) {
        if (h === 1) await halfway('nats');
        for (const [i, typed] of types.entries()) {
          await fc.assert(
            fc.asyncProperty(eventOf(typed), async (e) => {
              await Promise.resolve();
              const now = Date.now();
              let data: Uint8Array;
              if (e.garbage) {
                data = e.garbage;
                count('nats', 'garbage');
              } else {
                const shaped = {
                  v: 1,
                  type: e.typed.type,
                  mesh: MESH,
                  from: e.from,
                  sentAtMs: e.sentAtMs ?? now,
                  body: e.typed.body,
                };
                try {
                  data = encodeEvent(shaped as ControlEvent); // a valid event, its values random
                  count('nats', `valid:${e.typed.type}`);
                } catch {
                  data = Buffer.from(JSON.stringify(shaped));
                  count('nats', 'invalid');
                }
              }
              const h = natsHeaders();
              if (e.signed) for (const [k, v] of Object.entries(signer.sign(data))) h.set(k, v);
              const subject = ['member.announce', 'node.stats', 'object.purge'].includes(e.typed.type)
                ? subjectFor(MESH, e.typed.type as 'node.stats')
                : `edgemesh.${MESH}.members`;
              nc.publish(subject, data, { headers: h });
              return true;
            }),
            { seed: SEED + 200 + 100 * h + i, numRuns: runs },
          );
          await nc.flush();
          await takenIn((published += runs), runs);
        }
      }
      await stillWell('nats', RUNS * types.length);
    });
  },
);
