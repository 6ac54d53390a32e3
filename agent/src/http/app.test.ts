import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  Agent as HttpAgent,
  createServer,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { eventually } from '../../harness/agent-process.ts';
import { putExpectingContinue } from '../../harness/expect-continue.ts';
import { type Agent, startAgent } from '../agent.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { parseConfig } from '../config/load.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { FakeClock, systemClock } from '../time/clock.ts';
import { TooManyFetchesError } from '../fetch/fetch-limits.ts';
import type { PeerFetcher } from '../fetch/peer-fetcher.ts';
import type { AccessControl } from './access.ts';
import { createApp } from './app.ts';
import { Inbox } from '../exchange/inbox.ts';
import { sharedTestCa } from '../../harness/test-ca.ts';

const MiB = 2 ** 20;

/** A request with the path sent exactly as given (fetch would normalise `..` away). */
function raw(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    },
  );
}

/** A log line as pino writes it. */
type LogLine = { level: number; msg: string; err?: unknown } & Record<string, unknown>;

/** A logger at debug level that keeps its lines, with `next(match)`: the next line (from now) that matches. */
function capturingLogger() {
  const lines: LogLine[] = [];
  const waiting: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  const logger = pino(
    { level: 'debug' },
    {
      write(text: string) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const w of waiting.filter((w) => w.match(line))) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve(line);
        }
      },
    },
  );
  const next = (match: (line: LogLine) => boolean) =>
    new Promise<LogLine>((resolve) => waiting.push({ match, resolve }));
  return { logger, lines, next };
}

/**
 * Sends a PUT of `path` announcing `announced` bytes, then `sent` of them, then hangs up (its socket
 * destroyed once they have gone to the kernel).
 */
async function putAndHangUp(port: number, path: string, announced: number, sent: number): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(`PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${announced}\r\n\r\n`);
  await new Promise<void>((resolve, reject) =>
    socket.write(randomBytes(sent), (error) => (error ? reject(error) : resolve())),
  );
  socket.destroy();
}

/** What sendLarge saw: the answer, and whether the server closed the connection before the whole body was sent. */
interface LargeAnswer {
  status: number;
  headers: Record<string, unknown>;
  body: Buffer;
  closedEarly: boolean;
}

/**
 * Sends `method path` with a body of `size` zero bytes through node:http's client (which reads the
 * answer while it sends) on a keep-alive connection; resolves once the answer has come and the
 * connection has closed or the whole body has been sent.
 */
function sendLarge(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  size: number,
): Promise<LargeAnswer> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  return new Promise<LargeAnswer>((resolve, reject) => {
    let answer: Omit<LargeAnswer, 'closedEarly'> | undefined;
    let closed = false;
    let finished = false;
    const settle = () => {
      if (!answer || (!closed && !finished)) return;
      agent.destroy();
      resolve({ ...answer, closedEarly: closed && !finished });
    };
    const req = request({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent,
      headers: { ...headers, 'content-length': String(size) },
    });
    req.on('socket', (socket) =>
      socket.once('close', () => {
        closed = true;
        settle();
      }),
    );
    req.on('finish', () => {
      finished = true;
      settle();
    });
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        answer = { status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) };
        settle();
      });
      res.on('error', reject);
    });
    req.on('error', () => undefined); // EPIPE or ECONNRESET once the server has closed: the close says it
    const chunk = Buffer.alloc(64 * 1024);
    let sent = 0;
    const pump = () => {
      while (sent < size && !closed) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (!closed) req.end();
    };
    pump();
  });
}

/**
 * A lone agent on loopback with its store in `dir` and the given client access, for these tests;
 * `more`: other settings (origins).
 */
async function lone(
  dir: string,
  access: Record<string, unknown>,
  clock?: FakeClock,
  more: Record<string, unknown> = {},
  logger = createLogger({ level: 'silent', nodeId: 'test' }),
): Promise<Agent> {
  const ca = await sharedTestCa();
  const config = parseConfig({
    nodeId: 'test-node',
    zone: 'z1',
    region: 'r1',
    http: { port: 0 },
    grpc: { host: '127.0.0.1', port: 0 },
    store: { dir, maxBytes: '64Mi', maxObjectBytes: '16Mi', memoryBytes: '8Mi' },
    security: { ca: { certFile: ca.certFile, keyFile: ca.keyFile } },
    access,
    ...more,
  });
  return startAgent(config, { logger, ...(clock ? { clock } : {}) });
}

describe('HTTP API', () => {
  let dir: string;
  let agent: Agent;
  let base: string;
  const clock = new FakeClock(Date.now());
  const data = randomBytes(9 * MiB + 5);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-'));
    agent = await lone(dir, { anonymous: 'all' }, clock);
    base = `http://127.0.0.1:${agent.httpPort}`;
  });
  after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  const put = (key: string, body: Buffer, headers: Record<string, string> = {}) =>
    fetch(`${base}/v1/objects/${key}`, { method: 'PUT', body, headers });
  const errorCode = async (res: Response) =>
    ((await res.json()) as { error: { code: string; message: string } }).error.code;

  it('PUT stores an object and answers 201 with its digest', async () => {
    const res = await put('dir/obj.bin', data);
    assert.equal(res.status, 201);
    const body = (await res.json()) as { key: string; digest: string; size: number; chunks: number };
    assert.equal(body.key, 'dir/obj.bin');
    assert.equal(body.size, data.length);
    assert.equal(body.chunks, 3);
    assert.match(body.digest, /^sha256-tree:[0-9a-f]{64}$/);
    assert.equal(res.headers.get('etag'), `"${body.digest}"`);
  });

  it('GET returns the bytes with ETag, source and length; HEAD the same headers', async () => {
    const res = await fetch(`${base}/v1/objects/dir/obj.bin`);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), data);
    assert.equal(res.headers.get('x-edgemesh-source'), 'local');
    assert.equal(res.headers.get('content-length'), String(data.length));
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    const head = await fetch(`${base}/v1/objects/dir/obj.bin`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    for (const h of ['etag', 'content-length', 'x-edgemesh-source'])
      assert.equal(head.headers.get(h), res.headers.get(h));
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it('honours Range, across chunk boundaries and as a suffix', async () => {
    const boundary = 4 * MiB;
    const res = await fetch(`${base}/v1/objects/dir/obj.bin`, {
      headers: { Range: `bytes=${boundary - 10}-${boundary + 9}` },
    });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes ${boundary - 10}-${boundary + 9}/${data.length}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), data.subarray(boundary - 10, boundary + 10));
    const suffix = await fetch(`${base}/v1/objects/dir/obj.bin`, { headers: { Range: 'bytes=-7' } });
    assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), data.subarray(data.length - 7));
  });

  it('serves an object larger than its hot tier to a slow reader from two reused buffers, every byte as stored', async (t) => {
    const big = randomBytes(15 * MiB + 3);
    assert.equal((await put('big.bin', big)).status, 201);
    const { chunks, chunkSize } = agent.store.lookup('big.bin')!;
    assert.ok(chunks.length > 3, `${chunks.length} chunks`);
    const slowMade = t.mock.method(Buffer, 'allocUnsafeSlow');
    const made = t.mock.method(Buffer, 'allocUnsafe');
    // A reader that takes 64 KiB per turn of the event loop (which it shares with the server): the
    // server's writes wait in its socket while it reads the next chunk into the other buffer.
    const got = await new Promise<Buffer>((resolve, reject) => {
      const req = request(`${base}/v1/objects/big.bin`, (res) => {
        const parts: Buffer[] = [];
        const take = () => {
          let part: Buffer | null;
          if ((part = res.read(64 * 1024) as Buffer | null)) parts.push(part);
          if (!res.readableEnded) setImmediate(take);
        };
        res.on('end', () => resolve(Buffer.concat(parts)));
        res.on('error', reject);
        res.pause();
        take();
      });
      req.on('error', reject);
      req.end();
    });
    const chunkBuffers = [...slowMade.mock.calls, ...made.mock.calls].filter(
      (c) => Number(c.arguments[0]) >= chunkSize,
    ).length;
    t.mock.restoreAll();
    assert.ok(got.equals(big), 'every byte as stored'); // not deepEqual: a 15 MiB diff takes minutes
    assert.ok(chunkBuffers <= 2, `${chunkBuffers} chunk-sized buffers made for ${chunks.length} chunks`);
    for (const d of chunks) assert.equal(agent.store.hotChunk(d), undefined, 'kept out of the hot tier');
    assert.equal((await fetch(`${base}/v1/objects/big.bin`, { method: 'DELETE' })).status, 204);
  });

  it('answers 416 for unsatisfiable ranges, with the size in Content-Range', async () => {
    for (const range of [`bytes=${data.length}-`, 'bytes=-0']) {
      const res = await fetch(`${base}/v1/objects/dir/obj.bin`, { headers: { Range: range } });
      assert.equal(res.status, 416, range);
      assert.equal(res.headers.get('content-range'), `bytes */${data.length}`);
      assert.equal(await errorCode(res), 'RangeNotSatisfiable');
    }
  });

  it('ignores a syntactically invalid range: the whole object, 200', async () => {
    for (const range of ['bytes=10-5', 'bytes=abc', 'bytes=-']) {
      const res = await fetch(`${base}/v1/objects/dir/obj.bin`, { headers: { Range: range } });
      assert.equal(res.status, 200, range);
      assert.equal(res.headers.get('content-range'), null);
      assert.equal(res.headers.get('content-length'), String(data.length));
      await res.body?.cancel();
    }
  });

  it('answers HEAD with a Range as a GET without it: 200, the whole Content-Length', async () => {
    for (const range of ['bytes=0-9', `bytes=${data.length}-`]) {
      const res = await fetch(`${base}/v1/objects/dir/obj.bin`, {
        method: 'HEAD',
        headers: { Range: range },
      });
      assert.equal(res.status, 200, range);
      assert.equal(res.headers.get('content-length'), String(data.length));
      assert.equal(res.headers.get('content-range'), null);
    }
  });

  it('answers 304 to If-None-Match with the current ETag, 200 otherwise', async () => {
    const etag = (await fetch(`${base}/v1/objects/dir/obj.bin`, { method: 'HEAD' })).headers.get('etag')!;
    const same = await fetch(`${base}/v1/objects/dir/obj.bin`, {
      headers: { 'If-None-Match': `"other", ${etag}` },
    });
    assert.equal(same.status, 304);
    assert.equal(same.headers.get('etag'), etag);
    const star = await fetch(`${base}/v1/objects/dir/obj.bin`, { headers: { 'If-None-Match': '*' } });
    assert.equal(star.status, 304);
    const other = await fetch(`${base}/v1/objects/dir/obj.bin`, {
      method: 'HEAD',
      headers: { 'If-None-Match': '"nope"' },
    });
    assert.equal(other.status, 200);
  });

  it('answers 404 with a JSON error for unknown keys', async () => {
    for (const method of ['GET', 'HEAD', 'DELETE']) {
      const res = await fetch(`${base}/v1/objects/no/such/key`, { method });
      assert.equal(res.status, 404, method);
      if (method !== 'HEAD') assert.equal(await errorCode(res), 'NotFound');
    }
  });

  it('rejects invalid keys, encoded or not, with 400 and never touches the disk', async () => {
    const paths = [
      '/v1/objects/../../etc/passwd',
      '/v1/objects/a/../../../etc/passwd',
      '/v1/objects/%2e%2e/%2e%2e/etc/passwd',
      '/v1/objects/%2E%2E%2Fetc%2Fpasswd',
      '/v1/objects/..%2f..%2fetc%2fpasswd',
      '/v1/objects/a%00b',
      '/v1/objects/./x',
      '/v1/objects/a//b',
      '/v1/objects/trailing/',
      '/v1/objects/',
      '/v1/objects/sp%20ace',
      `/v1/objects/${'k'.repeat(513)}`,
      // Absolute form: the key is not what a prefix cut of the target gives.
      'http://x/v1/objects/dir/obj.bin',
    ];
    for (const path of paths) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await raw(
          agent.httpPort,
          method,
          path,
          {},
          method === 'PUT' ? Buffer.from('x') : undefined,
        );
        assert.equal(res.status, 400, `${method} ${path}`);
        assert.equal(JSON.parse(res.body.toString()).error.code, 'InvalidKey', `${method} ${path}`);
      }
    }
    // Not even percent-encoding (found by the fuzzer, agent/test/fuzz.test.ts): 400, not 500.
    for (const path of ['/v1/objects/%', '/v1/objects/a%zz', '/v1/exchange/%/t', '/v1/exchange/%E0%A4%A'])
      for (const method of ['GET', 'PUT', 'DELETE', 'POST']) {
        const res = await raw(agent.httpPort, method, path, {}, Buffer.from('x'));
        assert.equal(res.status, 400, `${method} ${path}`);
      }
    assert.equal(agent.store.stats().entries, 1);
  });

  it('refuses oversize bodies with 413, announced or streamed, and keeps nothing', async () => {
    const announced = await raw(agent.httpPort, 'PUT', '/v1/objects/too/big', {
      'Content-Length': String(16 * MiB + 1),
    });
    assert.equal(announced.status, 413);
    assert.equal(JSON.parse(announced.body.toString()).error.code, 'PayloadTooLarge');
    const streamed = await fetch(`${base}/v1/objects/too/big`, {
      method: 'PUT',
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < 17; i++) controller.enqueue(randomBytes(MiB));
          controller.close();
        },
      }),
      duplex: 'half',
    }).catch((error: Error) => error);
    if (streamed instanceof Response) {
      assert.equal(streamed.status, 413);
      assert.equal(await errorCode(streamed), 'PayloadTooLarge');
    } // else the server closed the connection before the client finished sending: also a refusal
    assert.equal((await fetch(`${base}/v1/objects/too/big`)).status, 404);
    await agent.store.flush();
    assert.equal(
      agent.store.stats().chunkBytes,
      9 * MiB + 4096,
      'the object PUT first, nothing more (its last file in whole blocks)',
    );
  });

  it('takes a TTL per object and refuses a malformed one', async () => {
    assert.equal((await put('ttl/obj', Buffer.from('soon gone'), { 'X-Edgemesh-Ttl': '60' })).status, 201);
    assert.equal((await fetch(`${base}/v1/objects/ttl/obj`)).status, 200);
    clock.advance(60_001);
    assert.equal((await fetch(`${base}/v1/objects/ttl/obj`)).status, 404);
    for (const ttl of ['0', '-5', '1.5', 'soon', '999999999999']) {
      const res = await put('ttl/bad', Buffer.from('x'), { 'X-Edgemesh-Ttl': ttl });
      assert.equal(res.status, 400, ttl);
      assert.equal(await errorCode(res), 'InvalidTtl');
    }
  });

  it('keeps the Content-Type given at PUT, and refuses a malformed one', async () => {
    await put('typed.json', Buffer.from('{}'), { 'Content-Type': 'application/json; charset=utf-8' });
    const res = await fetch(`${base}/v1/objects/typed.json`);
    assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(
      (await fetch(`${base}/v1/objects/dir/obj.bin`)).headers.get('content-type'),
      'application/octet-stream',
    );
    const bad = await put('typed.bad', Buffer.from('x'), { 'Content-Type': 'not a type' });
    assert.equal(bad.status, 400);
    assert.equal(await errorCode(bad), 'InvalidContentType');
  });

  it('DELETE removes an object', async () => {
    await put('to/delete', Buffer.from('bye'));
    const res = await fetch(`${base}/v1/objects/to/delete`, { method: 'DELETE' });
    assert.equal(res.status, 204);
    assert.equal((await fetch(`${base}/v1/objects/to/delete`)).status, 404);
  });

  it('stores and serves empty objects', async () => {
    assert.equal((await put('empty', Buffer.alloc(0))).status, 201);
    const res = await fetch(`${base}/v1/objects/empty`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), '0');
  });

  it('answers 405 with Allow for other methods, and 404 JSON for unknown routes', async () => {
    const post = await fetch(`${base}/v1/objects/x`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD, PUT, DELETE');
    const unknown = await fetch(`${base}/v2/whatever`);
    assert.equal(unknown.status, 404);
    assert.equal(await errorCode(unknown), 'NotFound');
  });

  it('serves /healthz, /readyz, /v1/status and /metrics', async () => {
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    // Spelled otherwise, a probe is still a probe, kept out of request latency.
    for (const path of ['/HEALTHZ/', '/readyz/', '/Metrics'])
      assert.equal((await fetch(`${base}${path}`)).status, 200, path);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const status = (await (await fetch(`${base}/v1/status`)).json()) as Record<string, unknown> & {
      cache: { entries: number; bytes: number };
      counters: { hits: number };
      peers: { known: number; alive: number };
    };
    assert.equal(status.id, 'test-node');
    assert.equal(status.zone, 'z1');
    assert.equal(status.region, 'r1');
    assert.equal(status.role, 'peer');
    assert.ok(status.cache.entries >= 1);
    assert.ok(status.counters.hits > 0);
    assert.deepEqual([status.peers.known, status.peers.alive], [0, 0]);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'edgemesh_cache_lookups_total',
      'edgemesh_served_bytes_total',
      'edgemesh_cache_size_bytes',
      'http_server_request_duration_seconds_bucket',
    ]) {
      assert.ok(metrics.includes(name), `${name} exported`);
    }
    assert.match(metrics, /edgemesh_cache_lookups_total\{result="hit"[^}]*\} [1-9]/);
    assert.match(metrics, /edgemesh_cache_index_loaded(\{[^}]*\})? 1\n/, 'the index has loaded');
    assert.doesNotMatch(
      metrics,
      /http_route="\/(healthz|readyz|metrics)"/,
      'probes and scrapes are not requests',
    );
  });

  it('cuts off a receiver that does not read, instead of keeping its messages in memory', async () => {
    const cutOff = () =>
      (agent.status().counters as { clientsRefused: Record<string, number> }).clientsRefused[
        'slow-receiver'
      ] ?? 0;
    const subscribed = new Promise<void>((resolve) => {
      const req = request(`${base}/v1/exchange/slow`, (res) => {
        assert.equal(res.statusCode, 200);
        res.pause(); // never reads
        resolve();
      });
      req.on('error', () => undefined); // the server hangs up on it
      req.end();
    });
    await subscribed;
    const mib = randomBytes(1024 * 1024);
    let sent = 0;
    while (cutOff() === 0 && sent < 200) {
      const res = await fetch(`${base}/v1/exchange/test-node/slow`, { method: 'POST', body: mib });
      assert.equal(res.status, 202);
      await res.arrayBuffer();
      sent++;
    }
    assert.equal(cutOff(), 1, `cut off after ${sent} MiB`);
    assert.ok(sent < 100, `cut off after ${sent} MiB, not held in memory`);
  });

  it('answers what Node’s parser refuses, and an Expect it cannot meet, with JSON errors, counted', async () => {
    const refused = () => ({ ...(agent.status().counters.clientsRefused as Record<string, number>) });
    const before = refused();
    /** What the agent sends back to `request` before it closes the connection. */
    const answerTo = async (request: string) => {
      const socket = connect(agent.httpPort, '127.0.0.1');
      await once(socket, 'connect');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      const closed = once(socket, 'close');
      socket.write(request);
      await closed;
      const [head = '', body = ''] = text.split('\r\n\r\n');
      return { head, error: (JSON.parse(body) as { error: { code: string } }).error.code };
    };
    const bad = await answerTo('HELLO\r\n\r\n');
    assert.match(bad.head, /^HTTP\/1\.1 400 .*\r\nContent-Type: application\/json; charset=utf-8\r\n/s);
    assert.match(bad.head, /\r\nConnection: close/);
    assert.equal(bad.error, 'BadRequest');
    const expect = await answerTo(
      'GET /v1/status HTTP/1.1\r\nHost: x\r\nExpect: later\r\nConnection: close\r\n\r\n',
    );
    assert.match(expect.head, /^HTTP\/1\.1 417 /);
    assert.equal(expect.error, 'ExpectationFailed');
    const after = refused();
    assert.equal(after.malformed, (before.malformed ?? 0) + 1);
    assert.equal(after.expectation, (before.expectation ?? 0) + 1);
  });

  it('sends 100 Continue only once it reads a body: a PUT refused first never has its body sent', async () => {
    const putExpecting = (path: string, headers: string, size: number) =>
      putExpectingContinue(agent.httpPort, path, size, headers);
    const refused = await putExpecting(
      '/v1/objects/expect/refused',
      'Authorization: Bearer not-a-token\r\n',
      8 * MiB,
    );
    assert.match(refused.text, /^HTTP\/1\.1 401 /, 'no 100 Continue before the refusal');
    assert.match(refused.text, /\r\nConnection: close\r\n/);
    assert.equal(refused.sent, 0);
    const stored = await putExpecting('/v1/objects/expect/stored', '', 2 * MiB);
    assert.equal(stored.sent, 2 * MiB);
    assert.match(stored.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 Created\r\n/);
  });

  it('refuses HEAD on an exchange stream (it would empty the queue into nothing)', async () => {
    const res = await fetch(`${base}/v1/exchange/anything`, { method: 'HEAD' });
    assert.equal(res.status, 405);
  });
});

describe('HTTP API: a client that goes away', () => {
  let dir: string;
  let agent: Agent;
  let base: string;
  const log = capturingLogger();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-gone-'));
    agent = await lone(dir, { anonymous: 'all' }, undefined, {}, log.logger);
    base = `http://127.0.0.1:${agent.httpPort}`;
  });
  after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The request duration series of `method` on the objects route, as /metrics shows them. */
  const requestSeries = async (method: string) =>
    (await (await fetch(`${base}/metrics`)).text())
      .split('\n')
      .filter(
        (line) =>
          line.startsWith('http_server_request_duration_seconds_count{') &&
          line.includes(`http_request_method="${method}"`) &&
          line.includes('http_route="/v1/objects/{*key}"'),
      );

  it('a PUT cut off midway: logged at debug without a stack, nothing stored, recorded as aborted with no status code', async () => {
    const logged = log.next((line) => line.msg === 'client went away' || line.msg === 'request failed');
    await putAndHangUp(agent.httpPort, '/v1/objects/cut/put', 10_000_000, MiB);
    const line = await logged;
    assert.equal(line.msg, 'client went away');
    assert.equal(line.level, 20, 'debug');
    assert.deepEqual([line.err, line.code, line.method], ['aborted', 'ECONNRESET', 'PUT'], 'no stack');
    assert.equal(log.lines.filter((l) => l.level >= 50).length, 0, 'nothing at error level');
    assert.equal(agent.status().cache.entries, 0, 'nothing stored');
    // Recorded when its response closed, before the failure was logged.
    const series = await requestSeries('PUT');
    assert.equal(series.length, 1, series.join('\n'));
    assert.match(series[0]!, /error_type="aborted"/);
    assert.doesNotMatch(series[0]!, /http_response_status_code/, 'no status line was sent');
  });

  it('a GET whose client leaves mid-body: recorded with the status it was sent (200) and as aborted', async () => {
    const body = randomBytes(9 * MiB);
    assert.equal((await fetch(`${base}/v1/objects/cut/get`, { method: 'PUT', body })).status, 201);
    const logged = log.next((line) => line.msg === 'request' && line.method === 'GET');
    await new Promise<void>((resolve, reject) => {
      request(`${base}/v1/objects/cut/get`, (res) => {
        res.once('data', () => {
          res.destroy();
          resolve();
        });
      })
        .on('error', reject)
        .end();
    });
    const line = await logged; // the server span's end: after the response closed
    assert.deepEqual([line.status, line.errorType], [200, 'aborted']);
    const series = await requestSeries('GET');
    const aborted = series.filter((line) => line.includes('error_type="aborted"'));
    assert.equal(aborted.length, 1, series.join('\n'));
    assert.match(aborted[0]!, /http_response_status_code="200"/);
  });
});

describe('HTTP API: GET by an origin rule', () => {
  let dir: string;
  let agent: Agent;
  let origin: Server;
  const text = Buffer.from('p { margin: 0 }\n'.repeat(5000));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-origin-'));
    // `/gzip`: gzip whatever is asked (an object stored with a Content-Encoding), with the encoded
    // length; `/cut`: half a body, then the connection closes; `/huge`: more than maxObjectBytes.
    origin = createServer((req, res) => {
      if (req.url === '/gzip') {
        const body = gzipSync(text);
        return void res
          .writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(body.length) })
          .end(body);
      }
      if (req.url === '/cut') {
        res.writeHead(200, { 'content-length': String(2 * text.length) });
        return void res.write(text, () => setTimeout(() => res.destroy(), 50));
      }
      if (req.url === '/huge') return void res.writeHead(200, { 'content-length': String(17 * MiB) }).end();
      res.writeHead(404).end();
    });
    origin.listen(0, '127.0.0.1');
    await new Promise((resolve) => origin.once('listening', resolve));
    const url = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/`;
    agent = await lone(join(dir, 'store'), { anonymous: 'all' }, undefined, { origins: [`o/=${url}`] });
  });
  after(async () => {
    await agent.close();
    origin.closeAllConnections();
    origin.close();
    await rm(dir, { recursive: true, force: true });
  });

  const get = (key: string) => raw(agent.httpPort, 'GET', `/v1/objects/${key}`);
  const codeOf = (body: Buffer) => (JSON.parse(body.toString()) as { error: { code: string } }).error.code;

  it('serves what a gzip origin’s body decodes to, its Content-Length the encoded one', async () => {
    const res = await get('o/gzip');
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-edgemesh-source'], 'origin');
    assert.equal(res.headers['content-encoding'], undefined);
    assert.equal(res.headers['content-length'], String(text.length));
    assert.ok(res.body.equals(text));
  });

  it('answers 502 OriginFailed to a body the origin cut off midway', async () => {
    const res = await get('o/cut');
    assert.equal(res.status, 502);
    assert.equal(codeOf(res.body), 'OriginFailed');
  });

  it('answers 507 ObjectTooLarge (not 413: the client sent nothing) to an origin object over the store’s limit', async () => {
    const res = await get('o/huge');
    assert.equal(res.status, 507);
    assert.equal(codeOf(res.body), 'ObjectTooLarge');
    // A PUT over the limit is the client's: 413, as before.
    const put = await raw(agent.httpPort, 'PUT', '/v1/objects/o/put', { 'content-length': String(17 * MiB) });
    assert.equal(put.status, 413);
  });
});

describe('HTTP API: /metrics when access.publicMetrics is false', () => {
  let dir: string;
  let agent: Agent;
  const token = 'metrics-reader-0123456789';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-metrics-'));
    await writeFile(join(dir, 'tokens.yaml'), `tokens:\n  - { name: scraper, token: ${token} }\n`);
    const tokensFile = join(dir, 'tokens.yaml');
    agent = await lone(join(dir, 'store'), { anonymous: 'none', publicMetrics: false, tokensFile });
  });
  after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers only a client that may see the status: none without a token (403) or with a wrong one (401)', async () => {
    const as = (bearer?: string) => (bearer ? { authorization: `Bearer ${bearer}` } : undefined);
    for (const method of ['GET', 'HEAD']) {
      assert.equal((await raw(agent.httpPort, method, '/metrics')).status, 403, method);
      assert.equal((await raw(agent.httpPort, method, '/metrics', as('wrong-token-0123456789'))).status, 401);
      assert.equal((await raw(agent.httpPort, method, '/metrics', as(token))).status, 200);
    }
    const ok = await raw(agent.httpPort, 'GET', '/metrics', as(token));
    assert.match(ok.body.toString(), /^# HELP /m, 'the scrape itself');
    const status = JSON.parse(
      (await raw(agent.httpPort, 'GET', '/v1/status', as(token))).body.toString(),
    ) as {
      counters: { clientsRefused: Record<string, number> };
    };
    assert.equal(status.counters.clientsRefused.unauthorized, 2, 'the tokenless scrapes refused and counted');
    assert.equal((await raw(agent.httpPort, 'GET', '/healthz')).status, 200, 'health needs no token');
  });
});

/**
 * The HTTP API alone (createApp) over a store of 16 MiB in a temporary directory, with `deps` for the
 * rest (no fetcher by default); close() ends both.
 */
async function appOnly(
  name: string,
  deps: Partial<Parameters<typeof createApp>[0]>,
): Promise<{ base: string; store: ObjectStore; close: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `edgemesh-http-${name}-`));
  const store = await ObjectStore.open({
    dir,
    maxBytes: 16 * MiB,
    memoryBytes: 0,
    maxObjectBytes: MiB,
    fsync: false,
    clock: systemClock,
    isKey,
  });
  const defaults: Parameters<typeof createApp>[0] = {
    store,
    fetcher: undefined,
    counters: new Counters(),
    metrics: { recordRequest: () => {}, handle: () => {} } as unknown as AgentMetrics,
    logger: createLogger({ level: 'silent', nodeId: 'test' }),
    status: () => ({}),
    ready: () => true,
  };
  // deps' getters kept as getters (a spread would read them once).
  const app = createApp(Object.defineProperties(defaults, Object.getOwnPropertyDescriptors(deps)));
  const server = createServer(app).listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    store,
    close: async () => {
      server.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe('HTTP API: PUT and replication.writeCopies', () => {
  let api: Awaited<ReturnType<typeof appOnly>>;
  /** What the replicate stub answers: the copies that exist, this one included. */
  let copies = 1;
  let required = 2;
  const replicated: string[] = [];

  before(async () => {
    api = await appOnly('copies', {
      replicate: (manifest) => {
        replicated.push(manifest.key);
        return Promise.resolve(copies);
      },
      get writeCopies() {
        return required;
      },
    });
  });
  after(() => api.close());

  const put = async (key: string) => {
    const res = await fetch(`${api.base}/v1/objects/${key}`, { method: 'PUT', body: randomBytes(1000) });
    const body = (await res.json()) as { error?: { code: string } };
    return { status: res.status, copies: res.headers.get('x-edgemesh-copies'), code: body.error?.code };
  };

  it('answers 503 ReplicationIncomplete when fewer copies than writeCopies exist, even one fewer', async () => {
    copies = 1;
    required = 2;
    assert.deepEqual(await put('one-short'), { status: 503, copies: '1', code: 'ReplicationIncomplete' });
    copies = 2;
    required = 3;
    assert.deepEqual(await put('two-of-three'), { status: 503, copies: '2', code: 'ReplicationIncomplete' });
    assert.deepEqual(replicated, ['one-short', 'two-of-three']);
  });

  it('answers 201 once writeCopies copies (or more) exist', async () => {
    copies = 2;
    required = 2;
    assert.deepEqual(await put('enough'), { status: 201, copies: '2', code: undefined });
    copies = 3;
    assert.deepEqual(await put('more'), { status: 201, copies: '3', code: undefined });
  });
});

describe('HTTP API: a failure of the server, the client there or gone', () => {
  let api: Awaited<ReturnType<typeof appOnly>>;
  const log = capturingLogger();
  type Recorded = Parameters<AgentMetrics['recordRequest']>[0];
  let onRecord: (r: Recorded) => void = () => {};
  let replicate: () => Promise<number> = () => Promise.resolve(1);

  before(async () => {
    api = await appOnly('failure', {
      logger: log.logger,
      metrics: { recordRequest: (r: Recorded) => onRecord(r), handle: () => {} } as unknown as AgentMetrics,
      replicate: () => replicate(),
    });
  });
  after(() => api.close());
  const port = () => Number(new URL(api.base).port);
  const nextRecord = () => new Promise<Recorded>((resolve) => (onRecord = resolve));

  it('answers one while the client is there 500 Internal, logged at error level with its stack', async () => {
    replicate = () => Promise.reject(new Error('replication broke'));
    const recorded = nextRecord();
    const res = await raw(port(), 'PUT', '/v1/objects/fails', {}, randomBytes(1000));
    assert.equal(res.status, 500);
    assert.deepEqual(JSON.parse(res.body.toString()), {
      error: { code: 'Internal', message: 'internal error' },
    });
    const line = log.lines.find((l) => l.msg === 'request failed')!;
    assert.equal(line.level, 50);
    assert.match((line.err as { stack: string }).stack, /^Error: replication broke\n\s+at /);
    const { seconds, ...labels } = await recorded;
    assert.ok(seconds >= 0);
    assert.deepEqual(labels, {
      method: 'PUT',
      path: '/v1/objects/fails',
      route: '/v1/objects/{*key}',
      status: 500,
    });
  });

  it('logs one that comes after its client left as one: at error level with its stack, answering nothing', async () => {
    const recorded = nextRecord();
    // Fails once the response has closed: the client is gone, and this is still the server's fault.
    replicate = () => recorded.then(() => Promise.reject(new Error('replication broke after')));
    const logged = log.next((l) => l.msg === 'request failed' || l.msg === 'client went away');
    const socket = connect(port(), '127.0.0.1');
    await once(socket, 'connect');
    // The whole request, then the client's end: node:http then closes the connection (no half-open
    // clients), with no answer sent.
    socket.end('PUT /v1/objects/late HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc');
    socket.resume();
    const { seconds, ...labels } = await recorded;
    assert.ok(seconds >= 0);
    assert.deepEqual(labels, {
      method: 'PUT',
      path: '/v1/objects/late',
      route: '/v1/objects/{*key}',
      errorType: 'aborted',
    });
    const line = await logged;
    assert.deepEqual([line.msg, line.level], ['request failed', 50]);
    assert.match((line.err as { stack: string }).stack, /^Error: replication broke after\n/);
  });
});

describe('HTTP API: a GET this node cannot start a fetch for now', () => {
  let api: Awaited<ReturnType<typeof appOnly>>;
  const manifest = {
    key: 'elsewhere',
    size: 10,
    chunkSize: 10,
    chunks: ['0'.repeat(64)],
    root: '1'.repeat(64),
    createdAtMs: 1,
  };

  before(async () => {
    const busy = (what: string) => new TooManyFetchesError(`64 ${what} are under way here`);
    api = await appOnly('busy', {
      // A peer holds 'elsewhere', but no download can start now; no node holds 'o/x', and no origin
      // fetch can start now.
      fetcher: {
        locate: (key: string) =>
          Promise.resolve(
            key === 'elsewhere'
              ? {
                  head: { key, size: 10, chunkSize: 10, createdAtMs: 1, contentType: 'video/mp4' },
                  manifest,
                  holders: [],
                }
              : undefined,
          ),
        open: () => {
          throw busy('downloads');
        },
      } as unknown as PeerFetcher,
      origin: () => Promise.reject(busy('origin fetches')),
    });
  });
  after(() => api.close());

  it('answers 503 Busy with Retry-After, not 500, for a download or an origin fetch past the bound', async () => {
    for (const key of ['elsewhere', 'o/x']) {
      const res = await fetch(`${api.base}/v1/objects/${key}`);
      const body = (await res.json()) as { error: { code: string } };
      assert.equal(res.status, 503, key);
      assert.equal(body.error.code, 'Busy');
      assert.equal(res.headers.get('retry-after'), '1');
      assert.equal(res.headers.get('etag'), null, 'no header of the object it did not send');
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    }
    // A HEAD needs no download: it answers from the manifest.
    const head = await fetch(`${api.base}/v1/objects/elsewhere`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), '10');
  });
});

describe('HTTP API: routing', () => {
  let api: Awaited<ReturnType<typeof appOnly>>;
  const requests: Parameters<AgentMetrics['recordRequest']>[0][] = [];
  const logger = createLogger({ level: 'silent', nodeId: 'test' });
  const inbox = new Inbox();
  let status: () => unknown = () => ({ id: 'n1' });

  before(async () => {
    api = await appOnly('routing', {
      metrics: {
        recordRequest: (r: (typeof requests)[number]) => requests.push(r),
        handle: (_req: unknown, res: ServerResponse) => res.writeHead(200).end('# scrape\n'),
      } as unknown as AgentMetrics,
      logger,
      status: () => status(),
      exchange: {
        inbox,
        nodeId: 'n1',
        targets: (target) => ({ self: target === 'n1', peers: [] }),
        timeoutMs: 1000,
      },
    });
  });
  after(() => api.close());

  const port = () => Number(new URL(api.base).port);
  const json = (res: { body: Buffer }) =>
    JSON.parse(res.body.toString()) as { error: { code: string; message: string } };

  it('matches paths without regard to case and with one trailing slash, the query left out', async () => {
    for (const path of ['/healthz', '/healthz/', '/HEALTHZ', '/healthz?probe=1', '/v1/Status/'])
      assert.equal((await raw(port(), 'GET', path)).status, 200, path);
    const twice = await raw(port(), 'GET', '/healthz//');
    assert.deepEqual([twice.status, json(twice).error.message], [404, 'no route GET /healthz//']);
  });

  it('takes an object’s key only from /v1/objects/KEY as sent: another case, absolute form or a trailing slash is 400 InvalidKey', async () => {
    for (const path of ['/V1/OBJECTS/a/b', 'http://elsewhere/v1/objects/a/b', '/v1/objects/a/b/']) {
      const res = await raw(port(), 'GET', path);
      assert.deepEqual([res.status, json(res).error.code], [400, 'InvalidKey'], path);
    }
  });

  it('answers HEAD on a GET route with its headers, JSON ones included, and no body', async () => {
    for (const path of ['/healthz', '/readyz', '/v1/status']) {
      const get = await raw(port(), 'GET', path);
      const head = await raw(port(), 'HEAD', path);
      assert.equal(head.status, 200, path);
      assert.equal(head.headers['content-type'], 'application/json; charset=utf-8', path);
      assert.equal(head.headers['content-length'], String(get.body.length), path);
      assert.equal(head.body.length, 0, path);
    }
  });

  it('answers JSON with its charset and length, and If-None-Match never makes it a 304', async () => {
    const res = await raw(port(), 'GET', '/v1/status', { 'if-none-match': '*' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(res.headers['content-length'], String(res.body.length));
    assert.deepEqual(JSON.parse(res.body.toString()), { id: 'n1' });
    assert.equal(res.headers['x-powered-by'], undefined);
    assert.equal(res.headers.etag, undefined);
  });

  it('answers 404 NotFound `no route METHOD PATH` to a path or a method no route takes', async () => {
    for (const [method, path, message] of [
      ['GET', '/v2/whatever?x=1', 'no route GET /v2/whatever'],
      ['POST', '/healthz', 'no route POST /healthz'],
      ['DELETE', '/v1/exchange/t', 'no route DELETE /v1/exchange/t'],
      ['GET', '/v1/objects', 'no route GET /v1/objects'],
    ] as const) {
      const res = await raw(port(), method, path);
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
      assert.deepEqual(json(res).error, { code: 'NotFound', message });
    }
  });

  it('answers 400 BadRequest to a path whose parameters are not valid percent-encoding', async () => {
    for (const [method, path] of [
      ['GET', '/v1/objects/%'],
      ['POST', '/v1/exchange/%/t'],
      ['PUT', '/v1/exchange/%/t'],
      ['GET', '/v1/exchange/%E0%A4%A'],
    ] as const) {
      const res = await raw(port(), method, path);
      assert.equal(res.status, 400, `${method} ${path}`);
      assert.equal(json(res).error.code, 'BadRequest', `${method} ${path}`);
    }
  });

  it('answers 501 NotImplemented with Connection: close to a Transfer-Encoding other than chunked: nothing stored, nothing sent', async () => {
    const got: string[] = [];
    const stop = inbox.subscribe('coded', (m) => got.push(m.body.toString()));
    try {
      const body = gzipSync(Buffer.from('the object'));
      for (const [method, path, coding] of [
        ['PUT', '/v1/objects/coded', 'gzip, chunked'],
        ['PUT', '/v1/objects/coded', 'GZIP,chunked'],
        ['POST', '/v1/exchange/n1/coded', 'gzip, chunked'],
        ['POST', '/v1/exchange/n1/coded', 'x-custom, chunked'],
      ] as const) {
        const res = await raw(port(), method, path, { 'Transfer-Encoding': coding }, body);
        assert.equal(res.status, 501, `${method} ${path} ${coding}`);
        assert.equal(res.headers.connection, 'close');
        assert.deepEqual(json(res).error, {
          code: 'NotImplemented',
          message: `Transfer-Encoding ${coding} is not supported: only chunked`,
        });
      }
      assert.equal(api.store.lookup('coded'), undefined, 'nothing stored');
      assert.deepEqual(got, [], 'nothing sent');
      // Chunked alone, in any case and with whitespace around it, is read.
      for (const coding of ['chunked', 'Chunked', ' CHUNKED ']) {
        const res = await raw(port(), 'PUT', '/v1/objects/chunked', { 'Transfer-Encoding': coding }, body);
        assert.equal(res.status, 201, coding);
      }
      const stored = await raw(port(), 'GET', '/v1/objects/chunked');
      assert.deepEqual(stored.body, body, 'stored as sent, chunked coding removed');
    } finally {
      stop();
    }
  });

  it('decodes the exchange route’s parameters', async () => {
    const got: string[] = [];
    const stop = inbox.subscribe('a.b', (m) => got.push(m.body.toString()));
    const res = await raw(port(), 'POST', '/v1/exchange/n%31/a%2Eb', {}, Buffer.from('hi'));
    stop();
    assert.equal(res.status, 202);
    assert.deepEqual(JSON.parse(res.body.toString()), { delivered: ['n1'], failed: [] });
    assert.deepEqual(got, ['hi']);
  });

  it('labels each request’s metric with its route’s template, else unmatched, with the path as sent', async () => {
    requests.length = 0;
    const asked = [
      ['GET', '/v1/objects/no/such?x=1'],
      ['POST', '/v1/exchange/n1/t'],
      ['GET', '/nothing/here'],
      ['GET', '/v1/objects/%'],
      ['GET', '/V1/STATUS'],
    ] as const;
    for (const [method, path] of asked)
      await raw(port(), method, path, {}, method === 'POST' ? Buffer.from('x') : undefined);
    await eventually(() => Promise.resolve(requests.length === asked.length || undefined), 2000, 'recorded');
    assert.deepEqual(
      requests.map(({ method, path, route, status }) => [method, path, route, status]),
      [
        ['GET', '/v1/objects/no/such', '/v1/objects/{*key}', 404],
        ['POST', '/v1/exchange/n1/t', '/v1/exchange/:target/:topic', 202],
        ['GET', '/nothing/here', 'unmatched', 404],
        ['GET', '/v1/objects/%', 'unmatched', 400],
        ['GET', '/V1/STATUS', '/v1/status', 200],
      ],
    );
  });

  it('answers what a handler throws with the error handler: 500 Internal, logged', async (t) => {
    const logged = t.mock.method(logger, 'error');
    status = () => {
      throw new Error('status broke');
    };
    try {
      const res = await raw(port(), 'GET', '/v1/status');
      assert.equal(res.status, 500);
      assert.deepEqual(json(res).error, { code: 'Internal', message: 'internal error' });
      assert.equal(logged.mock.callCount(), 1);
    } finally {
      status = () => ({ id: 'n1' });
    }
  });
});

describe('HTTP API: an error answered before the body is read', () => {
  let api: Awaited<ReturnType<typeof appOnly>>;
  const SIZE = 64 * MiB;

  before(async () => {
    // Tokens that are refused at each step: authentication, admission, the route's rules.
    const access = {
      authenticateRequest: (req: IncomingMessage) => {
        const token = req.headers.authorization?.slice('Bearer '.length);
        return Promise.resolve(
          token === 'bad' ? undefined : { name: `token:${token ?? 'none'}`, groups: [] },
        );
      },
      admit: (principal: { name: string }) => (principal.name === 'token:busy' ? undefined : () => {}),
      allows: (principal: { name: string }) => principal.name !== 'token:reader',
      allowsObserving: () => true,
    } as unknown as AccessControl;
    api = await appOnly('unread', { access });
  });
  after(() => api.close());
  const port = () => Number(new URL(api.base).port);

  it('closes the connection after any refusal of a PUT whose body it has not read, and the client still gets the answer', async () => {
    for (const [what, path, headers, status] of [
      ['401 (authentication)', '/v1/objects/k', { authorization: 'Bearer bad' }, 401],
      ['429 (admission)', '/v1/objects/k', { authorization: 'Bearer busy' }, 429],
      ['403 (the route’s rules)', '/v1/objects/k', { authorization: 'Bearer reader' }, 403],
      ['404 (no route)', '/v1/nothing', { authorization: 'Bearer writer' }, 404],
      ['400 (a bad TTL)', '/v1/objects/k', { authorization: 'Bearer writer', 'x-edgemesh-ttl': 'x' }, 400],
      ['413 (over the store’s limit)', '/v1/objects/k', { authorization: 'Bearer writer' }, 413],
    ] as const) {
      const answer = await sendLarge(port(), 'PUT', path, headers, SIZE);
      assert.equal(answer.status, status, what);
      assert.equal(answer.headers.connection, 'close', what);
      assert.match(answer.headers['content-type'] as string, /^application\/json/, what);
      assert.ok(answer.closedEarly, `${what}: the connection closed before the body was all sent`);
    }
    assert.equal(api.store.lookup('k'), undefined);
  });

  it('keeps the connection after a refusal of a body of at most 256 KiB (the rest is read and dropped)', async () => {
    for (const size of [1, 256 * 1024]) {
      const res = await raw(
        port(),
        'PUT',
        '/v1/objects/k',
        { authorization: 'Bearer bad' },
        Buffer.alloc(size),
      );
      assert.equal(res.status, 401);
      assert.equal(res.headers.connection, 'keep-alive', `${size} bytes`);
    }
  });
});

describe('HTTP API: access control refusing and failing', () => {
  it('refuses a Transfer-Encoding it cannot decode (501) before it authenticates the client', async () => {
    let checks = 0;
    const access = {
      authenticateRequest: () => {
        checks++;
        return Promise.resolve(undefined); // a bad token
      },
    } as unknown as AccessControl;
    const api = await appOnly('coding', { access });
    try {
      const port = Number(new URL(api.base).port);
      const coded = await raw(
        port,
        'PUT',
        '/v1/objects/k',
        { 'Transfer-Encoding': 'gzip, chunked' },
        gzipSync('x'),
      );
      assert.equal(coded.status, 501);
      assert.equal(checks, 0, 'no token checked');
      assert.equal((await raw(port, 'PUT', '/v1/objects/k', {}, Buffer.from('x'))).status, 401);
      assert.equal(checks, 1);
    } finally {
      await api.close();
    }
  });

  it('answers 401 with WWW-Authenticate, 429 with Retry-After, and an access check that rejects with 500 Internal', async () => {
    let check: 'refuse' | 'over-limit' | 'fail' = 'refuse';
    const access = {
      authenticateRequest: () =>
        check === 'fail'
          ? Promise.reject(new Error('keys unreadable'))
          : Promise.resolve(
              check === 'over-limit' ? { name: 'token:a', groups: ['authenticated'] } : undefined,
            ),
      admit: () => undefined, // over its limits
    } as unknown as AccessControl;
    const api = await appOnly('access', { access });
    try {
      const port = Number(new URL(api.base).port);
      const codeOf = (res: { body: Buffer }) => JSON.parse(res.body.toString()).error.code as string;
      const refused = await raw(port, 'GET', '/v1/status');
      assert.equal(refused.status, 401);
      assert.equal(refused.headers['www-authenticate'], 'Bearer realm="edgemesh"');
      assert.equal(codeOf(refused), 'Unauthenticated');
      assert.equal((await raw(port, 'GET', '/nothing')).status, 401, 'before the 404');
      assert.equal((await raw(port, 'GET', '/healthz')).status, 200, 'health needs no token');
      check = 'over-limit';
      const limited = await raw(port, 'GET', '/v1/objects/k');
      assert.equal(limited.status, 429);
      assert.equal(limited.headers['retry-after'], '1');
      assert.equal(codeOf(limited), 'TooManyRequests');
      check = 'fail';
      const failed = await raw(port, 'GET', '/v1/objects/k');
      assert.equal(failed.status, 500);
      assert.equal(codeOf(failed), 'Internal');
    } finally {
      await api.close();
    }
  });
});
