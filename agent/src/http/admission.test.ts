import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { systemClock } from '../time/clock.ts';
import { AccessControl } from './access.ts';
import { createApp } from './app.ts';
import { withLocalHits } from './local-hits.ts';

const logger = createLogger({ level: 'silent', nodeId: 'test' });
const TOKEN = 'reader-token-0123456789';

function status(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    }).on('error', reject);
  });
}

/**
 * A client whose token takes a while to check (a ServiceAccount token's first use: a signature
 * check) and that hangs up meanwhile must not keep its admission slot: with one request allowed at
 * a time, the next request would be refused (429) for ever.
 */
describe('admission of a client that hangs up while its token is checked', () => {
  let dir: string;
  let store: ObjectStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-admission-'));
    await writeFile(join(dir, 'tokens.yaml'), `tokens:\n  - { name: reader, token: ${TOKEN} }\n`);
    store = await ObjectStore.open({
      dir: join(dir, 'store'),
      maxBytes: 2 ** 24,
      memoryBytes: 2 ** 22,
      maxObjectBytes: 2 ** 22,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    await store.put('pub/obj', [Buffer.from('hello')], { size: 5 });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const fastPath of [false, true]) {
    it(fastPath ? 'through the fast path' : "through the API's routes", { timeout: 20_000 }, async () => {
      const access = new AccessControl(
        {
          tokensFile: join(dir, 'tokens.yaml'),
          anonymous: 'none',
          rules: [{ subjects: ['token:reader'], verbs: ['read'], prefixes: ['pub/'] }],
          maxConcurrentPerClient: 1,
          maxConcurrentAnonymous: 1024,
          requestsPerSecondPerClient: 0,
        },
        logger,
      );
      await access.start();
      // Token checks wait at a gate this test opens; it hears when one starts.
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      let checking!: () => void;
      const checkStarted = new Promise<void>((resolve) => (checking = resolve));
      const check = access.authenticate.bind(access);
      access.authenticate = async (authorization) => {
        checking();
        await gate;
        return check(authorization);
      };
      const counters = new Counters();
      // The hung-up request is recorded too (aborted), whichever path passed it on.
      let recordedAborted!: () => void;
      const aborted = new Promise<void>((resolve) => (recordedAborted = resolve));
      const metrics = {
        recordRequest: (r: { errorType?: string }) => r.errorType === 'aborted' && recordedAborted(),
        handle: () => {},
      } as unknown as AgentMetrics;
      const app = createApp({
        store,
        fetcher: undefined,
        counters,
        metrics,
        logger,
        status: () => ({}),
        ready: () => true,
        access,
      });
      const listener = fastPath ? withLocalHits({ store, counters, metrics, logger, access }, app) : app;
      const server: Server = createServer(listener);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as AddressInfo;
      try {
        const hungUp = new Promise((resolve) =>
          server.once('connection', (socket) => socket.once('close', resolve)),
        );
        const client = connect(port, '127.0.0.1', () =>
          client.write(
            `GET /v1/objects/pub/obj HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`,
          ),
        );
        await checkStarted;
        client.destroy();
        await hungUp; // the server saw the hang-up before the token check ended
        open();
        await aborted;
        assert.equal(await status(`http://127.0.0.1:${port}/v1/objects/pub/obj`), 200, 'admitted again');
      } finally {
        access.close();
        server.closeAllConnections();
        server.close();
      }
    });
  }
});

describe("a request the fast path passes on to the API's routes", () => {
  it('has its token checked once (a refused token costs one check, not two)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-auth-once-'));
    const store = await ObjectStore.open({
      dir: join(dir, 'store'),
      maxBytes: 2 ** 24,
      memoryBytes: 2 ** 22,
      maxObjectBytes: 2 ** 22,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    await store.put('pub/obj', [Buffer.from('hello')], { size: 5 });
    await writeFile(join(dir, 'tokens.yaml'), `tokens:\n  - { name: reader, token: ${TOKEN} }\n`);
    const access = new AccessControl(
      {
        tokensFile: join(dir, 'tokens.yaml'),
        anonymous: 'none',
        rules: [{ subjects: ['token:reader'], verbs: ['read'], prefixes: ['pub/'] }],
        maxConcurrentPerClient: 100,
        maxConcurrentAnonymous: 1024,
        requestsPerSecondPerClient: 0,
      },
      logger,
    );
    await access.start();
    let checks = 0;
    const check = access.authenticate.bind(access);
    access.authenticate = (authorization) => {
      checks++;
      return check(authorization);
    };
    const counters = new Counters();
    const metrics = { recordRequest: () => {}, handle: () => {} } as unknown as AgentMetrics;
    const app = createApp({
      store,
      fetcher: undefined,
      counters,
      metrics,
      logger,
      status: () => ({}),
      ready: () => true,
      access,
    });
    const server: Server = createServer(withLocalHits({ store, counters, metrics, logger, access }, app));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const statusOf = (token: string, path: string) =>
      new Promise<number>((resolve, reject) => {
        get(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${token}` } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        }).on('error', reject);
      });
    try {
      assert.equal(await statusOf('not-a-token', '/v1/objects/pub/obj'), 401);
      assert.equal(checks, 1, 'a refused token: checked by the fast path, and the routes took its result');
      assert.equal(await statusOf(TOKEN, '/v1/objects/secret/obj'), 403);
      assert.equal(checks, 2, 'a client not allowed the key');
      assert.equal(await statusOf(TOKEN, '/v1/objects/pub/obj'), 200);
      assert.equal(checks, 3);
    } finally {
      access.close();
      server.closeAllConnections();
      server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
