import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { pino } from 'pino';
import { ObjectTooLargeError } from '../cache/errors.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import { FakeClock } from '../time/clock.ts';
import type { Manifest } from '../cache/manifest.ts';
import { chunkSizeFor, MAX_CHUNKS, MAX_OBJECT_BYTES } from '../cache/chunking.ts';
import {
  type ManifestAnswer,
  PeerBusyError,
  PeerError,
  type PeerTransport,
} from '../transport/peer-transport.ts';
import { TooManyFetchesError } from './fetch-limits.ts';
import { getViaOrigin, OriginError, OriginFetcher, type OriginRouteDeps, parseHead } from './origin.ts';

const TIMEOUT_MS = 500;
const PIECE = Buffer.alloc(64 * 1024, 7);
/** A text that compresses well, as the origins below serve it encoded. */
const TEXT = Buffer.from('body { color: #123456; }\n'.repeat(4000));
/** The Accept-Encoding of every request to the origin. */
const acceptEncodings: (string | undefined)[] = [];

/**
 * An origin: `/slow` trickles 8 pieces, one every 150 ms; `/stall` sends one and stops; `/cut`
 * sends one of two and closes the connection. `/gzip-static` answers gzip to a client that accepts
 * it (nginx gzip_static); `/gzip-always`, `/gzip-br` and `/compress` whatever is asked (an S3 object
 * stored with a Content-Encoding), with the encoded length as Content-Length. `/too-large` announces
 * more than the store takes.
 */
function origin(): Server {
  return createServer((req, res) => {
    acceptEncodings.push(req.headers['accept-encoding']);
    if (req.url === '/gzip-static') {
      const gzip = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
      const body = gzip ? gzipSync(TEXT) : TEXT;
      return void res
        .writeHead(200, {
          'content-length': String(body.length),
          'content-type': 'text/css',
          ...(gzip ? { 'content-encoding': 'gzip' } : {}),
        })
        .end(body);
    }
    if (req.url === '/gzip-always' || req.url === '/gzip-br' || req.url === '/compress') {
      const [coding, body] =
        req.url === '/gzip-always'
          ? ['gzip', gzipSync(TEXT)]
          : req.url === '/gzip-br'
            ? ['gzip, br', brotliCompressSync(gzipSync(TEXT))]
            : ['compress', TEXT.subarray(0, 1000)]; // not really compressed: nothing here decodes it
      return void res
        .writeHead(200, { 'content-length': String(body.length), 'content-encoding': coding })
        .end(body);
    }
    if (req.url === '/cut') {
      res.writeHead(200, { 'content-length': String(2 * PIECE.length) });
      res.write(PIECE, () => setTimeout(() => res.destroy(), 50));
      return;
    }
    if (req.url === '/too-large') {
      res.writeHead(200, { 'content-length': String(64 * 2 ** 20) });
      res.write(PIECE);
      return; // the rest never comes: the fetcher must not wait for it
    }
    if (req.url === '/slow' || req.url === '/stall') {
      const pieces = req.url === '/slow' ? 8 : 2;
      res.writeHead(200, { 'content-length': String(pieces * PIECE.length) });
      let sent = 0;
      const next = () => {
        if (res.destroyed) return;
        res.write(PIECE);
        if (++sent === pieces) return void res.end();
        if (req.url === '/slow') setTimeout(next, 150);
        // /stall: the second piece never comes
      };
      next();
      return;
    }
    if (req.url === '/broken' || req.url === '/gone') {
      // An error page bigger than the socket buffers: unread, it holds the connection.
      res.writeHead(req.url === '/broken' ? 500 : 404, { 'content-length': String(16 * PIECE.length) });
      for (let i = 0; i < 16; i++) res.write(PIECE);
      return void res.end();
    }
    if (req.url === '/hop-home') return void res.writeHead(302, { location: '/private' }).end();
    if (req.url?.startsWith('/hop-away?to=')) {
      return void res
        .writeHead(302, { location: decodeURIComponent(req.url.slice('/hop-away?to='.length)) })
        .end();
    }
    if (req.url === '/private') {
      // Only with the key the rule's headers carry.
      if (req.headers['x-api-key'] !== 'k1') return void res.writeHead(403).end();
      return void res.writeHead(200, { 'content-length': '7' }).end('private');
    }
    res.writeHead(404).end();
  });
}

/** The bytes stored under `key`. */
async function readAll(store: ObjectStore, key: string): Promise<Buffer> {
  const handle = store.openRead(key);
  assert.ok(handle, `${key} is readable`);
  try {
    return Buffer.concat(await Promise.all(handle.manifest.chunks.map((d) => store.readChunk(d))));
  } finally {
    handle.release();
  }
}

describe('OriginFetcher', () => {
  let dir: string;
  let server: Server;
  let fetcher: OriginFetcher;
  let store: ObjectStore;
  let headers: string;
  let base: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-origin-unit-'));
    server = origin();
    // Idle connections stay (Node's default closes them after 5 s): one an answer holds shows.
    server.keepAliveTimeout = 120_000;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    store = await ObjectStore.open({
      dir,
      maxBytes: 64 * 2 ** 20,
      memoryBytes: 0,
      maxObjectBytes: 32 * 2 ** 20,
      fsync: false,
      clock: new FakeClock(),
      isKey,
    });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    headers = join(dir, 'headers');
    await mkdir(join(headers, '..data'), { recursive: true });
    fetcher = new OriginFetcher({
      rules: [
        { prefix: 'o/', url: base },
        { prefix: 'p/', url: base, headersDir: headers },
      ],
      store,
      counters: new Counters(),
      logger: pino({ level: 'silent' }),
      timeoutMs: TIMEOUT_MS,
    });
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('fetches a body that takes longer than the timeout as long as bytes keep coming', async () => {
    const started = performance.now();
    const manifest = await fetcher.fetch('o/slow');
    assert.equal(manifest.size, 8 * PIECE.length);
    assert.ok(performance.now() - started > 2 * TIMEOUT_MS, 'the whole body took longer than the timeout');
  });

  it('lets go of the connection of every error answer (its body unread)', { timeout: 60_000 }, async () => {
    const open = new Set<object>();
    const onConnection = (socket: Socket) => {
      open.add(socket);
      socket.once('close', () => open.delete(socket));
    };
    server.on('connection', onConnection);
    try {
      for (let i = 0; i < 12; i++)
        for (const key of ['o/broken', 'o/gone', 'p/broken', 'p/gone'])
          await assert.rejects(
            fetcher.fetch(key),
            key.endsWith('gone') ? /not found|NotFound/i : OriginError,
          );
      // 48 error answers: at most the pool's idle connection stays, not one per answer.
      const deadline = Date.now() + 20_000;
      while (open.size > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(open.size <= 1, `${open.size} connections still open after 48 error answers`);
    } finally {
      server.off('connection', onConnection);
    }
  });

  it('asks for the object as stored (Accept-Encoding: identity), not compressed for the wire', async () => {
    acceptEncodings.length = 0;
    const manifest = await fetcher.fetch('o/gzip-static');
    assert.deepEqual(acceptEncodings, ['identity']);
    assert.equal(manifest.size, TEXT.length);
    assert.equal(manifest.contentType, 'text/css');
    assert.ok((await readAll(store, 'o/gzip-static')).equals(TEXT));
  });

  it('stores what an origin that encodes anyway (gzip, or gzip then br) decodes to, whatever its Content-Length', async () => {
    for (const key of ['o/gzip-always', 'o/gzip-br']) {
      const manifest = await fetcher.fetch(key);
      assert.equal(manifest.size, TEXT.length, key);
      assert.ok((await readAll(store, key)).equals(TEXT), key);
    }
  });

  it('refuses a body in a coding it cannot decode, rather than store it encoded', async () => {
    const refused = await fetcher.fetch('o/compress').catch((error: unknown) => error as Error);
    assert.ok(refused instanceof OriginError, (refused as Error).message);
    assert.match(refused.message, /Content-Encoding compress/);
    assert.equal(store.lookup('o/compress'), undefined);
  });

  it('fails a body cut off midway as the origin’s failure (OriginError), keeping nothing', async () => {
    const refused = await fetcher.fetch('o/cut').catch((error: unknown) => error as Error);
    assert.ok(refused instanceof OriginError, (refused as Error).message);
    assert.equal(store.lookup('o/cut'), undefined);
  });

  it('leaves a store limit a store error (ObjectTooLargeError), without reading the body', async () => {
    await assert.rejects(fetcher.fetch('o/too-large'), ObjectTooLargeError);
  });

  it('gives up on a body that stops coming', async () => {
    await assert.rejects(fetcher.fetch('o/stall'), OriginError);
  });

  it('sends a rule’s headers on a redirect within its origin, and never to another origin', async () => {
    await writeFile(join(headers, 'X-Api-Key'), 'k1\n');
    await rm(join(headers, 'X-Other'), { force: true });
    assert.equal((await fetcher.fetch('p/hop-home')).size, 7, 'same origin: the headers go along');
    // Another origin (another port): it gets the request, not the secret.
    const seen: (string | undefined)[] = [];
    const elsewhere = createServer((req, res) => {
      seen.push(req.headers['x-api-key'] as string | undefined);
      res.writeHead(200, { 'content-length': '2' }).end('ok');
    });
    elsewhere.listen(0, '127.0.0.1');
    await once(elsewhere, 'listening');
    try {
      const to = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}/file`;
      assert.equal((await fetcher.fetch(`p/hop-away?to=${encodeURIComponent(to)}`)).size, 2);
      assert.deepEqual(seen, [undefined], 'the other origin saw no X-Api-Key');
    } finally {
      elsewhere.closeAllConnections();
      elsewhere.close();
    }
  });

  it('sends a rule’s headers, read from its directory (a mounted Secret) at each fetch', async () => {
    await writeFile(join(headers, 'X-Api-Key'), 'wrong\n');
    await assert.rejects(fetcher.fetch('p/private'), /answered 403/);
    // Rotated: the next fetch sends the new value.
    await writeFile(join(headers, 'X-Api-Key'), 'k1\n');
    const manifest = await fetcher.fetch('p/private');
    assert.equal(manifest.size, 7);
    // A value that is no header value fails the fetch, naming the file and not the value.
    await writeFile(join(headers, 'X-Other'), 'a\nb');
    const refused = await fetcher.fetch('p/private2').catch((error: unknown) => error as Error);
    assert.ok(refused instanceof OriginError);
    assert.match(refused.message, /X-Other: a value of one line is needed/);
    assert.doesNotMatch(refused.message, /k1/);
  });

  it('asks for the object as stored with a rule’s headers too, whatever Accept-Encoding they name', async () => {
    await rm(join(headers, 'X-Other'), { force: true });
    await writeFile(join(headers, 'Accept-Encoding'), 'gzip\n');
    try {
      acceptEncodings.length = 0;
      assert.equal((await fetcher.fetch('p/gzip-static')).size, TEXT.length);
      assert.deepEqual(acceptEncodings, ['identity']);
    } finally {
      await rm(join(headers, 'Accept-Encoding'));
    }
  });

  it('refuses to start a fetch past maxFetches under way (TooManyFetchesError), joins one under way, and starts once it ends', async () => {
    const bounded = new OriginFetcher({
      rules: [{ prefix: 'bounded/', url: base }],
      store,
      counters: new Counters(),
      logger: pino({ level: 'silent' }),
      timeoutMs: TIMEOUT_MS,
      maxFetches: 1,
    });
    const slow = bounded.fetch('bounded/slow'); // about a second, whoever waits for it
    await assert.rejects(bounded.fetch('bounded/gzip-static'), TooManyFetchesError);
    const joined = bounded.fetch('bounded/slow');
    assert.equal((await slow).root, (await joined).root);
    assert.equal((await bounded.fetch('bounded/gzip-static')).size, TEXT.length);
  });

  it('takes the rule of the longest matching prefix, whatever the order of the rules', () => {
    const rules = [
      { prefix: '', url: 'https://any.example/' },
      { prefix: 'a/', url: 'https://one.example/' },
      { prefix: 'a/b/', url: 'https://two.example/' },
    ];
    for (const order of [rules, [...rules].reverse()]) {
      const byRules = new OriginFetcher({
        rules: order,
        store,
        counters: new Counters(),
        logger: pino({ level: 'silent' }),
        timeoutMs: TIMEOUT_MS,
      });
      assert.equal(byRules.urlFor('a/b/c'), 'https://two.example/c');
      assert.equal(byRules.urlFor('a/c'), 'https://one.example/c');
      assert.equal(byRules.urlFor('x/c'), 'https://any.example/x/c');
    }
  });

  it('sends the headers of the longest matching prefix’s rule, not a shorter one’s', async () => {
    await rm(join(headers, 'X-Other'), { force: true });
    await writeFile(join(headers, 'X-Api-Key'), 'k1\n');
    // The same URL for r/private by either rule: only the longer one carries the key.
    const byRules = new OriginFetcher({
      rules: [
        { prefix: 'r', url: base.slice(0, -1) },
        { prefix: 'r/', url: base, headersDir: headers },
      ],
      store,
      counters: new Counters(),
      logger: pino({ level: 'silent' }),
      timeoutMs: TIMEOUT_MS,
    });
    assert.equal((await byRules.fetch('r/private')).size, 7);
  });
});

describe('getViaOrigin', () => {
  let dir: string;
  let store: ObjectStore;
  let wanted: Manifest;
  let other: Manifest;
  /** What this node's own origin fetch gives. */
  let own: Manifest;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-via-origin-'));
    store = await ObjectStore.open({
      dir,
      maxBytes: 2 ** 26,
      memoryBytes: 0,
      maxObjectBytes: 2 ** 20,
      fsync: false,
      clock: new FakeClock(),
      isKey,
    });
    wanted = await store.put('v/wanted', [Buffer.from('wanted')], { size: 6 });
    other = await store.put('v/other', [Buffer.from('other')], { size: 5 });
    own = await store.put('v/own', [Buffer.from('own')], { size: 3 });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const owner = (id: string, answer: Partial<ManifestAnswer>) =>
    ({
      id,
      fetchOrigin: () => Promise.resolve({ holds: true, holders: [], ...answer }),
    }) as unknown as PeerTransport;
  const deps = (owners: PeerTransport[], verify?: (m: Manifest) => void): OriginRouteDeps => ({
    origin: {
      urlFor: (key: string) => `https://origin.example/${key}`,
      fetch: () => Promise.resolve(own),
    } as unknown as OriginFetcher,
    ownerOrder: () => [...owners, 'self'],
    logger: pino({ level: 'silent' }),
    timeoutMs: 1000,
    ...(verify ? { verify } : {}),
  });
  const shape = (m: Manifest) => ({ key: m.key, size: m.size, chunkSize: chunkSizeFor(m.size) });

  it('takes an owner’s manifest of the key, vouched for', async () => {
    const a = owner('a', { manifest: wanted });
    const got = await getViaOrigin(
      'v/wanted',
      deps([a], () => undefined),
    );
    assert.ok(got?.source === 'peer');
    assert.equal(got.located.manifest?.root, wanted.root);
    assert.deepEqual(got.located.holders, [a]);
  });

  it('asks the next owner when one is busy with origin fetches, and never fetches here because of it', async () => {
    const busy = {
      id: 'busy',
      fetchOrigin: () =>
        Promise.reject(new PeerBusyError('busy', 'FetchOrigin: 32 origin fetches under way')),
    } as unknown as PeerTransport;
    const down = {
      id: 'down',
      fetchOrigin: () => Promise.reject(new PeerError('down', 'FetchOrigin failed: ECONNREFUSED')),
    } as unknown as PeerTransport;
    let fetchedHere = 0;
    const notSelf = (owners: PeerTransport[]): OriginRouteDeps => ({
      ...deps([]),
      origin: {
        urlFor: (key: string) => `https://origin.example/${key}`,
        fetch: () => (fetchedHere++, Promise.resolve(own)),
      } as unknown as OriginFetcher,
      ownerOrder: () => owners,
    });
    const next = await getViaOrigin('v/wanted', notSelf([busy, owner('b', { manifest: wanted })]));
    assert.ok(next?.source === 'peer');
    assert.equal(next.located.manifest?.root, wanted.root);
    await assert.rejects(getViaOrigin('v/wanted', notSelf([down, busy])), TooManyFetchesError);
    assert.equal(fetchedHere, 0, 'a busy owner is no reason to go to the origin from here too');
    // Owners that cannot be reached at all: this node goes to the origin itself, as before.
    assert.deepEqual(await getViaOrigin('v/wanted', notSelf([down])), { source: 'origin', manifest: own });
    assert.equal(fetchedHere, 1);
  });

  it('refuses an owner’s answer for another key, and asks the next owner', async () => {
    const a = owner('a', { manifest: other });
    const b = owner('b', { manifest: wanted });
    const got = await getViaOrigin('v/wanted', deps([a, b]));
    assert.ok(got?.source === 'peer');
    assert.deepEqual(got.located.holders, [b], 'the second owner’s');
    const alone = await getViaOrigin('v/wanted', deps([a]));
    assert.deepEqual(alone, { source: 'origin', manifest: own }, 'no good owner: this node fetches');
  });

  it('refuses an owner’s manifest no node of the mesh vouches for', async () => {
    const a = owner('a', { manifest: wanted });
    const got = await getViaOrigin(
      'v/wanted',
      deps([a], () => {
        throw new Error('unsigned');
      }),
    );
    assert.deepEqual(got, { source: 'origin', manifest: own });
  });

  it('follows an owner’s fetch under way only when its shape is of the key', async () => {
    const a = owner('a', { manifest: shape(wanted), inProgress: true });
    const got = await getViaOrigin('v/wanted', deps([a]));
    assert.ok(got?.source === 'peer');
    assert.equal(got.located.authority, a);
    assert.equal(got.located.head.size, wanted.size);
    const elsewhere = owner('a', { manifest: shape(other), inProgress: true });
    assert.deepEqual(await getViaOrigin('v/wanted', deps([elsewhere])), { source: 'origin', manifest: own });
  });

  it('refuses a shape past MAX_OBJECT_BYTES (a download sizes its tables by the chunk count)', () => {
    const huge = Number.MAX_SAFE_INTEGER; // 134 million chunks of 64 MiB
    assert.throws(() => parseHead({ key: 'k', size: huge, chunkSize: chunkSizeFor(huge) }, 'k'), /bad size/);
    assert.throws(
      () =>
        parseHead(
          { key: 'k', size: MAX_OBJECT_BYTES + 1, chunkSize: chunkSizeFor(MAX_OBJECT_BYTES + 1) },
          'k',
        ),
      /bad size/,
    );
    const largest = parseHead(
      { key: 'k', size: MAX_OBJECT_BYTES, chunkSize: chunkSizeFor(MAX_OBJECT_BYTES) },
      'k',
    );
    assert.ok(Math.ceil(largest.size / largest.chunkSize) <= MAX_CHUNKS);
  });
});
