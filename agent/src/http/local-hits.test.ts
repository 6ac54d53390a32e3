import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../../harness/agent-process.ts';
import { sharedTestCa } from '../../harness/test-ca.ts';
import { type Agent, startAgent } from '../agent.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { parseConfig } from '../config/load.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { FakeClock, systemClock } from '../time/clock.ts';
import { AccessControl, type AccessConfig } from './access.ts';
import { withLocalHits } from './local-hits.ts';
import { OBJECTS_ROUTE } from './objects.ts';

const MiB = 2 ** 20;
const logger = createLogger({ level: 'silent', nodeId: 'test' });
const WRITER = 'writer-token-0123456789';
const READER = 'reader-token-0123456789';
const TOKENS = `tokens:\n  - { name: writer, token: ${WRITER} }\n  - { name: reader, token: ${READER} }\n`;
/** The writer may do anything; the reader may read `pub/` only; anonymous clients nothing. */
const RULES: AccessConfig['rules'] = [
  { subjects: ['token:writer'], verbs: ['read', 'write', 'purge'], prefixes: [''] },
  { subjects: ['token:reader'], verbs: ['read'], prefixes: ['pub/'] },
];
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A request with its path sent exactly as given (a URL would normalise `..` away). */
function call(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<Answer> {
  const { hostname, port } = new URL(url);
  const path = url.slice(url.indexOf('/', 'http://'.length));
  return new Promise((resolve, reject) => {
    get({ host: hostname, port, path, method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }),
      );
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** withLocalHits on a real store and real access control; its fallback answers 599 and notes the request. */
async function startFastPath(dir: string, options: { memoryBytes: number; access?: Partial<AccessConfig> }) {
  await writeFile(join(dir, 'tokens.yaml'), TOKENS);
  const store = await ObjectStore.open({
    dir: join(dir, 'store'),
    maxBytes: 256 * MiB,
    memoryBytes: options.memoryBytes,
    maxObjectBytes: 64 * MiB,
    fsync: false,
    clock: systemClock,
    isKey,
  });
  const access = new AccessControl(
    {
      tokensFile: join(dir, 'tokens.yaml'),
      anonymous: 'none',
      rules: RULES,
      maxConcurrentPerClient: 256,
      maxConcurrentAnonymous: 1024,
      requestsPerSecondPerClient: 0,
      ...options.access,
    },
    logger,
  );
  await access.start();
  const counters = new Counters();
  const requests: Parameters<AgentMetrics['recordRequest']>[0][] = [];
  /** Emits 'request' with each request it records. */
  const recorder = new EventEmitter();
  const metrics = {
    recordRequest: (r: (typeof requests)[number]) => {
      requests.push(r);
      recorder.emit('request', r);
    },
  };
  const fallbacks: string[] = [];
  const server: Server = createServer(
    withLocalHits({ store, counters, metrics, logger, access }, (req, res) => {
      fallbacks.push(`${req.method} ${req.url}`);
      res.writeHead(599).end();
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    store,
    counters,
    requests,
    recorder,
    fallbacks,
    close: () => {
      access.close();
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('the local-hit fast path, on an object larger than its hot tier', () => {
  it('reads it into two reused buffers and leaves the tier as it was, as the API does', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-local-hits-big-'));
    const fast = await startFastPath(dir, { memoryBytes: 32 * MiB });
    try {
      const small = randomBytes(4096);
      const huge = randomBytes(40 * MiB); // ten chunks of 4 MiB, more than the tier
      const smallDigest = (await fast.store.put('pub/small', [small], { size: small.length })).chunks[0]!;
      const m = await fast.store.put('pub/huge', [huge], { size: huge.length });
      // Its first chunk read once (as a short range of it is): in the tier, so the fast path answers.
      await fast.store.readChunk(m.chunks[0]!);
      const made = [t.mock.method(Buffer, 'allocUnsafeSlow'), t.mock.method(Buffer, 'allocUnsafe')];
      const res = await call(`${fast.url}/v1/objects/pub/huge`, 'GET', bearer(READER));
      const buffers = made
        .flatMap((mock) => mock.mock.calls)
        .filter((c) => Number(c.arguments[0]) >= m.chunkSize).length;
      t.mock.restoreAll();
      assert.deepEqual(fast.fallbacks, [], 'answered on the fast path');
      assert.ok(res.body.equals(huge), 'every byte as stored');
      assert.ok(buffers <= 2, `${buffers} chunk-sized buffers made for ${m.chunks.length} chunks`);
      assert.ok(fast.store.hotChunk(smallDigest), 'the small object is still in the tier');
      for (const d of m.chunks.slice(1))
        assert.equal(fast.store.hotChunk(d), undefined, 'not put in the tier');
    } finally {
      fast.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the local-hit fast path', () => {
  let dir: string;
  let fast: Awaited<ReturnType<typeof startFastPath>>;
  const small = randomBytes(4096);
  const big = randomBytes(9 * MiB + 5); // chunks of 4, 4 and 1 MiB, all in the hot tier

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-local-hits-'));
    fast = await startFastPath(dir, { memoryBytes: 32 * MiB });
    await fast.store.put('pub/small', [small], { size: small.length });
    await fast.store.put('pub/big', [big], { size: big.length });
    await fast.store.put('private/small', [small], { size: small.length });
  });
  after(async () => {
    fast.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `act`, then checks it was answered here (not by the fallback) and returns what it recorded. */
  async function answeredHere<T>(act: () => Promise<T>) {
    const before = { fallbacks: fast.fallbacks.length, requests: fast.requests.length };
    const result = await act();
    assert.deepEqual(fast.fallbacks.slice(before.fallbacks), [], 'not left to the API');
    await eventually(
      () => Promise.resolve(fast.requests.length > before.requests || undefined),
      2000,
      'the request metric',
    );
    return { result, recorded: fast.requests.slice(before.requests) };
  }

  it('answers a local GET itself: the bytes, its headers, a hit, bytes served and the request metric', async () => {
    const hits = fast.counters.hits;
    const served = fast.counters.bytesServed.local;
    const { result: res, recorded } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/small?x=1`, 'GET', bearer(READER)),
    );
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, small);
    assert.equal(res.headers['content-length'], '4096');
    assert.equal(res.headers['x-edgemesh-source'], 'local');
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['accept-ranges'], 'bytes');
    assert.match(res.headers.etag!, /^"sha256-tree:[0-9a-f]{64}"$/);
    assert.ok(res.headers['last-modified']);
    assert.equal(fast.counters.hits, hits + 1);
    assert.equal(fast.counters.bytesServed.local, served + 4096);
    assert.equal(recorded.length, 1);
    const { seconds, ...labels } = recorded[0]!;
    assert.deepEqual(labels, {
      method: 'GET',
      path: '/v1/objects/pub/small',
      route: OBJECTS_ROUTE,
      status: 200,
    });
    assert.ok(seconds >= 0);
  });

  it('streams a large object across its chunks', async () => {
    const { result: res } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/big`, 'GET', bearer(READER)),
    );
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(big));
  });

  it('answers HEAD with the same headers and no body, serving no bytes', async () => {
    const served = fast.counters.bytesServed.local;
    const { result: res, recorded } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/small`, 'HEAD', bearer(READER)),
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], '4096');
    assert.equal(res.body.length, 0);
    assert.equal(fast.counters.bytesServed.local, served);
    assert.equal(recorded[0]!.method, 'HEAD');
  });

  it('answers a range with 206 and Content-Range, across chunk boundaries', async () => {
    const start = 4 * MiB - 10;
    const { result: res } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/big`, 'GET', {
        ...bearer(READER),
        range: `bytes=${start}-${start + 19}`,
      }),
    );
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], `bytes ${start}-${start + 19}/${big.length}`);
    assert.equal(res.headers['content-length'], '20');
    assert.deepEqual(res.body, big.subarray(start, start + 20));
    // A range that starts past the first chunk: its bytes, not the first chunk's.
    const { result: tail } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/big`, 'GET', { ...bearer(READER), range: 'bytes=-7' }),
    );
    assert.equal(tail.status, 206);
    assert.deepEqual(tail.body, big.subarray(big.length - 7));
  });

  it('answers HEAD with a Range as the GET without it would: 200, the whole length', async () => {
    for (const range of ['bytes=0-9', 'bytes=9999-']) {
      const { result: res } = await answeredHere(() =>
        call(`${fast.url}/v1/objects/pub/small`, 'HEAD', { ...bearer(READER), range }),
      );
      assert.equal(res.status, 200, range);
      assert.equal(res.headers['content-length'], '4096');
      assert.equal(res.headers['content-range'], undefined);
    }
  });

  it('ignores a syntactically invalid range: the whole object, 200', async () => {
    for (const range of ['bytes=5-2', 'bytes=abc']) {
      const { result: res } = await answeredHere(() =>
        call(`${fast.url}/v1/objects/pub/small`, 'GET', { ...bearer(READER), range }),
      );
      assert.equal(res.status, 200, range);
      assert.deepEqual(res.body, small);
    }
  });

  it('takes a Range with If-Range only for the version it names: else the whole current one, 200', async () => {
    const v1 = randomBytes(4096);
    const v2 = randomBytes(4096);
    await fast.store.put('pub/resume', [v1], { size: v1.length });
    const url = `${fast.url}/v1/objects/pub/resume`;
    const old = (await call(url, 'HEAD', bearer(READER))).headers.etag!;
    await fast.store.put('pub/resume', [v2], { size: v2.length }); // replaced mid-download
    const { etag, 'last-modified': date } = (await call(url, 'HEAD', bearer(READER))).headers;
    assert.notEqual(etag, old);
    const resume = (ifRange: string) =>
      answeredHere(() => call(url, 'GET', { ...bearer(READER), range: 'bytes=1000-', 'if-range': ifRange }));
    for (const stale of [old, `W/${etag!}`, 'Thu, 01 Jan 1970 00:00:00 GMT']) {
      const { result: res } = await resume(stale);
      assert.equal(res.status, 200, stale);
      assert.equal(res.headers['content-range'], undefined);
      assert.ok(res.body.equals(v2), 'the whole current version, never a piece to splice');
    }
    for (const current of [etag!, date!]) {
      const { result: res } = await resume(current);
      assert.equal(res.status, 206, current);
      assert.equal(res.headers['content-range'], `bytes 1000-4095/4096`);
      assert.ok(res.body.equals(v2.subarray(1000)));
    }
  });

  it('answers 304 to If-None-Match with the current ETag', async () => {
    const etag = (await call(`${fast.url}/v1/objects/pub/small`, 'HEAD', bearer(READER))).headers.etag!;
    const { result: res } = await answeredHere(() =>
      call(`${fast.url}/v1/objects/pub/small`, 'GET', { ...bearer(READER), 'if-none-match': etag }),
    );
    assert.equal(res.status, 304);
    assert.equal(res.body.length, 0);
  });

  it('leaves clients it may not serve to the API: no token, a bad token, a key they may not read', async () => {
    const hits = fast.counters.hits;
    const requests = fast.requests.length;
    const from = fast.fallbacks.length;
    for (const headers of [{}, bearer('not-a-valid-token-at-all'), { authorization: 'Basic eDp5' }]) {
      assert.equal((await call(`${fast.url}/v1/objects/pub/small`, 'GET', headers)).status, 599);
    }
    assert.equal((await call(`${fast.url}/v1/objects/private/small`, 'GET', bearer(READER))).status, 599);
    assert.equal(fast.fallbacks.length - from, 4);
    assert.equal(fast.counters.hits, hits, 'the API counts what it answers');
    assert.equal(fast.requests.length, requests, 'and records its metric');
  });

  it('leaves misses, invalid keys, unsatisfiable ranges, a body’s Transfer-Encoding and other methods to the API', async () => {
    const from = fast.fallbacks.length;
    const hits = fast.counters.hits;
    const auth = bearer(WRITER);
    const asked: [string, string, Record<string, string>][] = [
      ['GET', '/v1/objects/pub/none', auth],
      ['GET', '/v1/objects/pub/../private/small', auth],
      ['GET', '/v1/objects/pub%2Fsmall', auth],
      ['GET', '/v1/objects/pub/small', { ...auth, range: 'bytes=9999-' }],
      ['GET', '/v1/objects/pub/small', { ...auth, 'transfer-encoding': 'gzip, chunked' }],
      ['DELETE', '/v1/objects/pub/small', auth],
      ['GET', '/v1/status', auth],
    ];
    for (const [method, path, headers] of asked)
      assert.equal((await call(`${fast.url}${path}`, method, headers)).status, 599, `${method} ${path}`);
    assert.deepEqual(
      fast.fallbacks.slice(from),
      asked.map(([method, path]) => `${method} ${path}`),
    );
    assert.equal(fast.counters.hits, hits);
    assert.ok(fast.store.lookup('pub/small'), 'nothing acted on');
  });

  it('unpins an object whose reader went away mid-answer', async () => {
    const body = randomBytes(9 * MiB);
    await fast.store.put('pub/cut', [body], { size: body.length });
    const chunks = fast.store.stats().chunks;
    await new Promise<void>((resolve, reject) => {
      get(`${fast.url}/v1/objects/pub/cut`, { headers: bearer(READER) }, (res) => {
        res.once('data', () => {
          res.destroy();
          resolve();
        });
      }).on('error', reject);
    });
    await fast.store.delete('pub/cut');
    // A pin kept by the abandoned answer would keep the chunks after the delete.
    await eventually(
      () => Promise.resolve(fast.store.stats().chunks === chunks - 3 || undefined),
      5000,
      'the chunks released',
    );
  });

  it('records a GET whose reader went away mid-body with the status it was sent and error.type aborted', async () => {
    const fallbacks = fast.fallbacks.length;
    const recorded = once(fast.recorder, 'request');
    await new Promise<void>((resolve, reject) => {
      get(`${fast.url}/v1/objects/pub/big`, { headers: bearer(READER) }, (res) => {
        res.once('data', () => {
          res.destroy();
          resolve();
        });
      }).on('error', reject);
    });
    const [{ seconds, ...labels }] = (await recorded) as [(typeof fast.requests)[number]];
    assert.deepEqual(labels, {
      method: 'GET',
      path: '/v1/objects/pub/big',
      route: OBJECTS_ROUTE,
      status: 200,
      errorType: 'aborted',
    });
    assert.ok(seconds >= 0);
    assert.deepEqual(fast.fallbacks.slice(fallbacks), [], 'answered by the fast path');
  });

  describe('with objects only on disk, and a client limit', () => {
    let other: Awaited<ReturnType<typeof startFastPath>>;
    let otherDir: string;
    before(async () => {
      otherDir = await mkdtemp(join(tmpdir(), 'edgemesh-local-hits-'));
      // A 64 KiB hot tier keeps chunks up to 16 KiB; one request per second per client.
      other = await startFastPath(otherDir, {
        memoryBytes: 64 * 1024,
        access: { requestsPerSecondPerClient: 1, maxConcurrentPerClient: 1 },
      });
      await other.store.put('pub/cold', [randomBytes(32 * 1024)], { size: 32 * 1024 });
      await other.store.put('pub/hot', [small], { size: small.length });
    });
    after(async () => {
      other.close();
      await rm(otherDir, { recursive: true, force: true });
    });

    it('leaves an object whose first chunk is not in memory to the API, and a client over its limit', async () => {
      assert.equal((await call(`${other.url}/v1/objects/pub/cold`, 'GET', bearer(READER))).status, 599);
      assert.equal((await call(`${other.url}/v1/objects/pub/hot`, 'GET', bearer(READER))).status, 200);
      // The reader's one request of this second is spent: the API answers 429.
      assert.equal((await call(`${other.url}/v1/objects/pub/hot`, 'GET', bearer(READER))).status, 599);
      assert.deepEqual(other.fallbacks, ['GET /v1/objects/pub/cold', 'GET /v1/objects/pub/hot']);
      assert.equal(other.counters.hits, 1);
    });
  });
});

/**
 * The same requests to two agents holding the same objects at the same (fake) time, one with the
 * fast path and one without: every answer, counter and request metric must be the same.
 */
describe('the fast path answers as the API does', () => {
  let dir: string;
  const agents: Agent[] = [];
  const urls: string[] = [];
  const clock = new FakeClock(Date.now()); // one moment for both: the same Last-Modified
  const objects: [string, Buffer, string | undefined][] = [
    ['pub/small', randomBytes(4096), undefined],
    ['pub/text', Buffer.from('hello, edge\n'), 'text/plain'],
    ['pub/empty', Buffer.alloc(0), undefined],
    ['pub/big', randomBytes(9 * MiB + 5), 'video/mp4'],
    ['private/small', randomBytes(100), undefined],
  ];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-local-hits-'));
    await writeFile(join(dir, 'tokens.yaml'), TOKENS);
    const ca = await sharedTestCa();
    for (const fastPath of [true, false]) {
      const config = parseConfig({
        nodeId: `node-${fastPath}`,
        http: { port: 0, fastPath },
        grpc: { host: '127.0.0.1', port: 0 },
        store: { dir: join(dir, String(fastPath)), maxBytes: '64Mi', memoryBytes: '32Mi' },
        security: { ca: { certFile: ca.certFile, keyFile: ca.keyFile } },
        access: { anonymous: 'none', tokensFile: join(dir, 'tokens.yaml'), rules: RULES },
      });
      const agent = await startAgent(config, { logger, clock });
      agents.push(agent);
      const url = `http://127.0.0.1:${agent.httpPort}`;
      urls.push(url);
      for (const [key, body, type] of objects) {
        const res = await fetch(`${url}/v1/objects/${key}`, {
          method: 'PUT',
          body,
          headers: { ...bearer(WRITER), ...(type ? { 'content-type': type } : {}) },
        });
        assert.equal(res.status, 201);
      }
    }
  });
  after(async () => {
    for (const agent of agents) await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The answer with the headers that name the moment (Date) left out. */
  const comparable = ({ status, headers, body }: Answer) => {
    const rest = { ...headers };
    delete rest.date;
    return { status, headers: rest, body: body.toString('base64') };
  };

  /** Asks both agents the same requests, one at a time; each answer pair with what was asked. */
  async function askBoth() {
    const [head] = await Promise.all(
      urls.map((url) => call(`${url}/v1/objects/pub/small`, 'HEAD', bearer(READER))),
    );
    const etag = head!.headers.etag!;
    const date = head!.headers['last-modified']!;
    const r = bearer(READER);
    const cases: [string, string, Record<string, string>][] = [
      ['GET', 'pub/small', r],
      ['HEAD', 'pub/small', r],
      ['GET', 'pub/small?query=1', r],
      ['GET', 'pub/text', r],
      ['GET', 'pub/empty', r],
      ['HEAD', 'pub/empty', r],
      ['GET', 'pub/big', r],
      ['GET', 'pub/big', { ...r, range: `bytes=${4 * MiB - 3}-${4 * MiB + 2}` }],
      ['GET', 'pub/big', { ...r, range: 'bytes=-7' }],
      ['HEAD', 'pub/big', { ...r, range: 'bytes=5-' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=1-2,5-6' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5000-' }],
      ['HEAD', 'pub/small', { ...r, range: 'bytes=5000-' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5-2' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=abc' }],
      ['GET', 'pub/empty', { ...r, range: 'bytes=-5' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5-', 'if-range': etag }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5-', 'if-range': date }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5-', 'if-range': '"other"' }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5-', 'if-range': `W/${etag}` }],
      ['GET', 'pub/small', { ...r, range: 'bytes=5000-', 'if-range': '"other"' }],
      ['GET', 'pub/small', { ...r, 'if-none-match': etag }],
      ['GET', 'pub/small', { ...r, 'if-none-match': `W/${etag}, "other"` }],
      ['GET', 'pub/small', { ...r, 'if-none-match': '"other"' }],
      ['GET', 'pub/small', {}],
      ['GET', 'pub/small', bearer('not-a-valid-token-at-all')],
      ['HEAD', 'pub/small', bearer('not-a-valid-token-at-all')],
      ['GET', 'private/small', r],
      ['GET', 'pub/none', r],
      ['GET', 'pub//small', r],
    ];
    const answers: [Answer, Answer, string][] = [];
    for (const [method, path, headers] of cases) {
      const [fastAnswer, apiAnswer] = await Promise.all(
        urls.map((url) => call(`${url}/v1/objects/${path}`, method, headers)),
      );
      answers.push([fastAnswer!, apiAnswer!, `${method} ${path} ${JSON.stringify(headers)}`]);
    }
    return answers;
  }

  it('answers alike: status, every header, body', async () => {
    for (const [fastAnswer, apiAnswer, asked] of await askBoth())
      assert.deepEqual(comparable(fastAnswer), comparable(apiAnswer), asked);
  });

  it('both send a Content-Type exactly as it was stored, no charset added', async () => {
    // Both asked, so that what the two count stays alike (the last test).
    for (const url of urls) {
      const text = await call(`${url}/v1/objects/pub/text`, 'GET', bearer(READER));
      assert.equal(text.headers['content-type'], 'text/plain', url);
      const untyped = await call(`${url}/v1/objects/pub/small`, 'HEAD', bearer(READER));
      assert.equal(untyped.headers['content-type'], 'application/octet-stream', url);
    }
  });

  it('both answer HEAD with a Range, and an invalid range, with the whole object (200)', async () => {
    // Both asked, so that what the two count stays alike (the next test).
    const r = bearer(READER);
    for (const url of urls) {
      for (const [method, range] of [
        ['HEAD', 'bytes=0-9'],
        ['HEAD', 'bytes=5000-'],
        ['GET', 'bytes=5-2'],
        ['GET', 'bytes=abc'],
      ] as const) {
        const res = await call(`${url}/v1/objects/pub/small`, method, { ...r, range });
        assert.equal(res.status, 200, `${url} ${method} ${range}`);
        assert.equal(res.headers['content-length'], '4096');
        assert.equal(res.headers['content-range'], undefined);
      }
      assert.equal(
        (await call(`${url}/v1/objects/pub/small`, 'GET', { ...r, range: 'bytes=5000-' })).status,
        416,
      );
    }
  });

  it('both take a Range with If-Range only for the version it names: else the whole current one, 200', async () => {
    // Both asked, so that what the two count stays alike (the next test).
    const v1 = randomBytes(4096);
    const v2 = randomBytes(4096);
    for (const url of urls) {
      const at = `${url}/v1/objects/pub/resume`;
      const put = (body: Buffer) => fetch(at, { method: 'PUT', body, headers: bearer(WRITER) });
      assert.equal((await put(v1)).status, 201);
      const old = (await call(at, 'HEAD', bearer(READER))).headers.etag!;
      assert.equal((await put(v2)).status, 201); // replaced mid-download
      const { etag } = (await call(at, 'HEAD', bearer(READER))).headers;
      const resume = (ifRange: string) =>
        call(at, 'GET', { ...bearer(READER), range: 'bytes=1000-', 'if-range': ifRange });
      const stale = await resume(old);
      assert.equal(stale.status, 200, url);
      assert.ok(stale.body.equals(v2), 'the whole current version, never a piece to splice');
      const current = await resume(etag!);
      assert.equal(current.status, 206, url);
      assert.ok(current.body.equals(v2.subarray(1000)));
    }
  });

  it('counts alike: hits, misses, bytes served, clients refused, request metrics', async () => {
    await askBoth();
    const figures = async (agent: Agent, url: string) => {
      const { hits, misses, bytesServed, clientsRefused } = agent.counters;
      const scrape = await (await fetch(`${url}/metrics`)).text();
      const requests = scrape
        .split('\n')
        .filter((line) => line.startsWith('http_server_request_duration_seconds_count'))
        .map((line) => line.replace(/,?(service_instance_id|node)="[^"]*"/g, ''))
        .sort();
      return {
        hits,
        misses,
        bytesServed: { ...bytesServed },
        refused: Object.fromEntries(clientsRefused),
        requests,
      };
    };
    const both = () => Promise.all(agents.map((agent, i) => figures(agent, urls[i]!)));
    let [a, b] = await both();
    // A request's metric is recorded as its connection's answer closes, a moment after the client has it.
    for (let i = 0; i < 40 && !isDeepStrictEqual(a, b); i++) {
      await new Promise((r) => setTimeout(r, 50));
      [a, b] = await both();
    }
    assert.ok(
      a!.requests.some((line) => line.includes('http_route="/v1/objects/{*key}"')),
      a!.requests.join('\n'),
    );
    assert.deepEqual(a, b);
  });
});
