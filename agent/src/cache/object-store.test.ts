import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open as openFile, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { holdManifestWrite } from '../../harness/hold-manifest-write.ts';
import { testCredentials } from '../../harness/test-ca.ts';
import { isKey } from '../keys.ts';
import { AGENT_NODE_FLAGS } from '../node-flags.ts';
import { NodeSigner } from '../security/node-signer.ts';
import { FakeClock } from '../time/clock.ts';
import { ChunkFiles } from './chunk-files.ts';
import { chunkSizeFor, digestOf, rootDigest } from './chunking.ts';
import {
  IncompleteBodyError,
  InsufficientStorageError,
  IntegrityError,
  ObjectNotFoundError,
  ObjectPurgedError,
  ObjectTooLargeError,
  StaleVersionError,
} from './errors.ts';
import type { Manifest } from './manifest.ts';
import { ManifestFiles } from './manifest-files.ts';
import { ObjectStore, type ObjectStoreOptions, SEND_SAMPLE } from './object-store.ts';
import {
  chunkDiskBytes,
  databaseAllowance,
  DB_FILE,
  manifestRowBytes,
  PACKED_CHUNK_BYTES,
  StoreDb,
} from './store-db.ts';

/** A manifest's columns as the database keeps them. */
function manifestColumns(m: Manifest) {
  return { key: m.key, size: m.size, chunkSize: m.chunkSize, chunks: Buffer.from(m.chunks.join(''), 'hex') };
}

const MiB = 2 ** 20;
/** Room for a few manifests' rows in the byte limit (manifestRowBytes), beside whole MiBs of chunks. */
const ROWS = 4096;

/** What the store's limit counts for the manifests it holds. */
function rowsOf(store: ObjectStore): number {
  return store.keys().reduce((n, key) => n + manifestRowBytes(store.peek(key)!), 0);
}

/** Yields `data` in pieces of uneven sizes, as a network body would arrive. */
function* pieces(data: Buffer): Generator<Buffer> {
  let offset = 0;
  let n = 1;
  while (offset < data.length) {
    const size = Math.min(data.length - offset, 1 + ((n * 7919) % (300 * 1024)));
    yield data.subarray(offset, offset + size);
    offset += size;
    n++;
  }
}

async function readAll(store: ObjectStore, key: string): Promise<Buffer> {
  const handle = store.openRead(key);
  assert.ok(handle, `${key} is readable`);
  try {
    return Buffer.concat(await Promise.all(handle.manifest.chunks.map((d) => store.readChunk(d))));
  } finally {
    handle.release();
  }
}

/** What `dir`, its files and folders take on disk, in allocated blocks. */
async function diskBytes(dir: string): Promise<number> {
  let bytes = (await stat(dir)).blocks * 512;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const info = await stat(join(entry.parentPath, entry.name)).catch(() => undefined); // gone since
    bytes += (info?.blocks ?? 0) * 512;
  }
  return bytes;
}

async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe('ObjectStore', () => {
  let dir: string;
  let clock: FakeClock;
  let removed: string[];
  let corrupt: string[];
  const open = (overrides: Partial<ObjectStoreOptions> = {}) =>
    ObjectStore.open({
      dir,
      maxBytes: 64 * MiB,
      memoryBytes: 0, // every read goes to disk, so verification is exercised
      maxObjectBytes: 32 * MiB,
      fsync: false,
      clock,
      isKey,
      onRemoved: (key, reason) => removed.push(`${key}:${reason}`),
      onCorruptChunk: (digest) => corrupt.push(digest),
      ...overrides,
    });

  /**
   * Opens a store whose limit leaves `room` bytes for chunks and rows beside what else it counts:
   * the database's allowance (databaseAllowance) and its folders (measured by a first open).
   */
  const openWithRoom = async (room: number, overrides: Partial<ObjectStoreOptions> = {}) => {
    const probe = await open(overrides);
    const folders = probe.stats().overheadBytes - databaseAllowance(probe.stats().maxBytes);
    await probe.close();
    let maxBytes = room + folders;
    while (maxBytes - databaseAllowance(maxBytes) - folders < room) maxBytes += 16 * 1024;
    return open({ ...overrides, maxBytes });
  };

  /** Runs `use` on a connection of the test's own to the store's database, closed after. */
  const withDb = <T>(use: (db: DatabaseSync) => T): T => {
    const db = new DatabaseSync(join(dir, DB_FILE));
    try {
      return use(db);
    } finally {
      db.close();
    }
  };
  /** Rows in `table` of the store's database. */
  const rowsIn = (table: string) => withDb((db) => db.prepare(`SELECT count(*) AS n FROM ${table}`).get()?.n);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-store-'));
    clock = new FakeClock();
    removed = [];
    corrupt = [];
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stores a multi-chunk body arriving in uneven pieces and reads it back', async () => {
    const store = await open();
    const data = randomBytes(9 * MiB + 123);
    const manifest = await store.put('a/b.bin', pieces(data), { size: data.length });
    assert.equal(manifest.chunks.length, 3);
    assert.equal(manifest.size, data.length);
    assert.deepEqual(await readAll(store, 'a/b.bin'), data);
    assert.equal(store.stats().chunkBytes, 9 * MiB + 4096, "the last chunk's file in whole 4 KiB blocks");
  });

  it('accepts a body of unknown length, including an empty one', async () => {
    const store = await open();
    const data = randomBytes(5 * MiB);
    const m = await store.put('unknown', pieces(data));
    assert.equal(m.size, data.length);
    assert.deepEqual(await readAll(store, 'unknown'), data);
    const empty = await store.put('empty', pieces(Buffer.alloc(0)), { size: 0 });
    assert.deepEqual(empty.chunks, []);
    assert.equal((await readAll(store, 'empty')).length, 0);
  });

  it('never replaces a newer version with an older one, and keeps a copy’s signature and expiry as they came', async () => {
    const store = await open({
      sign: (m) => ({ certificate: 'AAAA', value: Buffer.from(m.root).toString('base64').slice(0, 8) }),
    });
    const newer = await store.put('v', [Buffer.from('newer')]);
    assert.ok(newer.signature, 'a version this node makes is signed');
    const lease = store.newLease();
    try {
      const data = Buffer.from('older');
      const digest = digestOf(data);
      await store.addVerifiedChunk(lease, digest, data);
      const copy = {
        key: 'v',
        size: 5,
        chunkSize: 4 * MiB,
        chunks: [digest],
        createdAtMs: newer.createdAtMs - 1,
      };
      await assert.rejects(store.commit(lease, copy), StaleVersionError);
      const signature = { certificate: 'QkJCQg==', value: 'Q0NDQw==' };
      const later = await store.commit(lease, {
        ...copy,
        key: 'w',
        createdAtMs: clock.now() - 5,
        expiresAtMs: clock.now() + 1234,
        signature,
      });
      assert.deepEqual(later.signature, signature, 'a copy keeps the signature it came with');
      assert.equal(later.expiresAtMs, clock.now() + 1234);
    } finally {
      lease.release();
    }
    assert.equal(store.lookup('v')?.root, newer.root);
  });

  it('stores equal content once and frees a replaced version', async () => {
    const store = await open();
    const data = randomBytes(3 * MiB);
    await store.put('one', pieces(data), { size: data.length });
    await store.put('two', pieces(data), { size: data.length });
    assert.equal(store.stats().chunkBytes, data.length);
    const other = randomBytes(2 * MiB);
    await store.put('one', pieces(other), { size: other.length });
    await store.put('two', pieces(other), { size: other.length });
    await store.flush();
    assert.equal(store.stats().chunkBytes, other.length);
    assert.equal((await files(join(dir, 'chunks'))).length, 1);
    assert.deepEqual(removed, ['one:replaced', 'two:replaced']);
  });

  it('evicts to stay within its byte limit, sparing recently used objects (SIEVE)', async () => {
    const store = await openWithRoom(12 * MiB);
    const objects = Array.from({ length: 6 }, () => randomBytes(3 * MiB));
    for (const [i, data] of objects.entries()) {
      await store.put(`obj${i}`, pieces(data), { size: data.length });
      assert.ok(store.stats().bytes <= store.stats().maxBytes, `within the limit after put ${i}`);
      if (i === 1) store.lookup('obj0'); // a hit
    }
    assert.ok(store.lookup('obj0'), 'the object that was read survived');
    assert.equal(store.lookup('obj1'), undefined);
    assert.deepEqual(await readAll(store, 'obj5'), objects[5]);
    assert.ok(removed.every((r) => r.endsWith(':evicted')));
    await store.flush();
    assert.equal((await files(join(dir, 'chunks'))).length, store.stats().chunks);
  });

  it('never evicts a pinned object, and says so when nothing can make room', async () => {
    const store = await openWithRoom(8 * MiB + ROWS);
    const data = randomBytes(4 * MiB);
    await store.put('pinned', pieces(data), { size: data.length });
    const handle = store.openRead('pinned')!;
    await store.put('other', pieces(randomBytes(4 * MiB)), { size: 4 * MiB });
    const otherHandle = store.openRead('other')!;
    await assert.rejects(store.put('third', pieces(randomBytes(4 * MiB)), { size: 4 * MiB }), (error) => {
      assert.ok(error instanceof InsufficientStorageError);
      return true;
    });
    assert.ok(store.lookup('pinned'));
    assert.ok(store.lookup('other'));
    handle.release();
    await store.put('third', pieces(randomBytes(4 * MiB)), { size: 4 * MiB });
    assert.equal(store.lookup('pinned'), undefined, 'evicted once unpinned');
    assert.ok(store.lookup('other'), 'still pinned');
    otherHandle.release();
  });

  it('lets a reader finish an object deleted under it, then frees it', async () => {
    const store = await open();
    const data = randomBytes(5 * MiB);
    await store.put('k', pieces(data), { size: data.length });
    const handle = store.openRead('k')!;
    assert.equal(await store.delete('k'), true);
    assert.equal(store.lookup('k'), undefined);
    const read = Buffer.concat(await Promise.all(handle.manifest.chunks.map((d) => store.readChunk(d))));
    assert.deepEqual(read, data);
    handle.release();
    await store.flush();
    assert.equal(store.stats().chunkBytes, 0);
    assert.deepEqual(await files(join(dir, 'chunks')), []);
    assert.equal(await store.delete('k'), false);
  });

  it('rejects oversize and short bodies and keeps nothing of them', async () => {
    const store = await open({ maxBytes: 16 * MiB });
    await assert.rejects(store.put('big', pieces(randomBytes(10)), { size: 33 * MiB }), ObjectTooLargeError);
    await assert.rejects(store.put('big', pieces(randomBytes(33 * MiB))), ObjectTooLargeError);
    await assert.rejects(
      store.put('fits-limit-not-store', pieces(randomBytes(1)), { size: 17 * MiB }),
      ObjectTooLargeError,
    );
    await assert.rejects(
      store.put('short', pieces(randomBytes(5 * MiB)), { size: 6 * MiB }),
      IncompleteBodyError,
    );
    await assert.rejects(
      store.put('long', pieces(randomBytes(5 * MiB)), { size: 4 * MiB }),
      IncompleteBodyError,
    );
    function* failing() {
      yield randomBytes(5 * MiB);
      throw new Error('client went away');
    }
    await assert.rejects(store.put('aborted', failing()), /client went away/);
    await store.flush();
    assert.equal(store.stats().chunkBytes, 0);
    assert.equal(store.stats().entries, 0);
    assert.deepEqual(await files(join(dir, 'chunks')), []);
  });

  it('expires objects by TTL, their own or the default', async () => {
    const store = await open({ defaultTtlMs: 60_000 });
    await store.put('short', pieces(Buffer.from('x')), { size: 1, ttlMs: 1000 });
    await store.put('default', pieces(Buffer.from('y')), { size: 1 });
    clock.advance(999);
    assert.ok(store.lookup('short'));
    clock.advance(2);
    assert.equal(store.lookup('short'), undefined);
    assert.ok(store.lookup('default'));
    clock.advance(60_000);
    assert.equal(store.sweepExpired(), 1);
    assert.equal(store.stats().entries, 0);
    assert.deepEqual(removed, ['short:expired', 'default:expired']);
  });

  it("keeps a peer's copy written without a TTL as its writer signed it: the default TTL is for objects written here", async () => {
    const [writer, reader] = await Promise.all([testCredentials('node-a'), testCredentials('node-b')]);
    try {
      const checker = new NodeSigner(reader);
      clock = new FakeClock(Date.now()); // within the certificates' lives
      const store = await open({ defaultTtlMs: 60_000, sign: (m) => new NodeSigner(reader).sign(m) });
      const data = randomBytes(100);
      const digest = digestOf(data);
      const chunkSize = chunkSizeFor(data.length);
      // Made on another node, without a TTL, at a time its certificate covers.
      const unsigned = {
        key: 'theirs',
        size: data.length,
        chunkSize,
        chunks: [digest],
        root: rootDigest(data.length, chunkSize, [digest]),
        createdAtMs: Date.now(),
      };
      const copy: Manifest = { ...unsigned, signature: new NodeSigner(writer).sign(unsigned) };
      const lease = store.newLease();
      try {
        await store.addVerifiedChunk(lease, digest, data);
        await store.commit(lease, copy);
      } finally {
        lease.release();
      }
      const held = store.lookup('theirs');
      assert.ok(held);
      assert.equal(checker.verify(held), 'node-a', 'its manifest still verifies (a peer takes it)');
      assert.equal(held.expiresAtMs, undefined, 'no expiry: its writer set none');
      clock.advance(120_000);
      assert.ok(store.lookup('theirs'), 'and it does not expire here');
      // A PUT here still gets the default, and this node's signature over it.
      const mine = await store.put('mine', [data], { size: data.length });
      assert.equal(mine.expiresAtMs, clock.now() + 60_000);
      assert.equal(checker.verify(mine), 'node-b');
      await store.close();
    } finally {
      writer.close();
      reader.close();
    }
  });

  it('rebuilds its index after a restart', async () => {
    const store = await open();
    const a = randomBytes(6 * MiB);
    const b = randomBytes(1000);
    await store.put('a', pieces(a), { size: a.length });
    await store.put('dir/b', pieces(b), { size: b.length, ttlMs: 5000 });
    await store.flush();
    const reopened = await open();
    assert.deepEqual(await readAll(reopened, 'a'), a);
    assert.deepEqual(await readAll(reopened, 'dir/b'), b);
    assert.equal(reopened.stats().chunkBytes, a.length + b.length);
    clock.advance(5000);
    const later = await open();
    assert.equal(later.lookup('dir/b'), undefined, 'expired while down');
    assert.ok(later.lookup('a'));
  });

  it('detects a chunk damaged on disk when reading it, and drops every object that used it', async () => {
    const store = await open();
    const data = randomBytes(5 * MiB);
    const m = await store.put('x', pieces(data), { size: data.length });
    await store.put('y', pieces(data), { size: data.length });
    const victim = m.chunks[1]!;
    const file = join(dir, 'chunks', victim.slice(0, 2), victim);
    const bytes = await readFile(file);
    bytes[0]! ^= 0xff;
    await writeFile(file, bytes);
    await assert.rejects(store.readChunk(victim), IntegrityError);
    assert.deepEqual(corrupt, [victim]);
    assert.equal(store.lookup('x'), undefined);
    assert.equal(store.lookup('y'), undefined);
    assert.deepEqual(removed.sort(), ['x:corrupt', 'y:corrupt']);
  });

  it('sends chunks hashed in this process without hashing them again, but one read in SEND_SAMPLE, and every chunk found at start', async () => {
    let reads = 0;
    const store = await open({ sampleSend: () => ++reads % SEND_SAMPLE === 0 });
    const data = randomBytes(5 * MiB);
    const m = await store.put('x', pieces(data), { size: data.length });
    const victim = m.chunks[1]!;
    const file = join(dir, 'chunks', victim.slice(0, 2), victim);
    const bytes = await readFile(file);
    bytes[0]! ^= 0xff;
    await writeFile(file, bytes);
    // Written (and hashed) in this process: the damage since goes out unnoticed (the peer hashes
    // what it gets and refuses it) until a sampled read hashes it and drops the chunk.
    let sent = 0;
    let caught: unknown;
    for (; sent <= SEND_SAMPLE && !caught; sent++) {
      try {
        assert.notDeepEqual(await store.chunkToSend(victim), data.subarray(4 * MiB), 'the damaged bytes');
      } catch (error) {
        caught = error;
      }
    }
    assert.ok(caught instanceof IntegrityError, 'a sampled read finds it');
    assert.ok(sent > 1 && sent <= SEND_SAMPLE, `the reads before it go out unhashed (${sent} reads)`);
    assert.equal(store.lookup('x'), undefined);
    assert.deepEqual(corrupt, [victim]);

    // Found on disk at start: hashed at its first send.
    const y = await store.put('y', pieces(data), { size: data.length });
    const other = randomBytes(MiB);
    const z = await store.put('z', pieces(other), { size: other.length });
    await store.flush();
    const yFile = join(dir, 'chunks', y.chunks[0]!.slice(0, 2), y.chunks[0]!);
    const yBytes = await readFile(yFile);
    yBytes[7]! ^= 1;
    await writeFile(yFile, yBytes);
    const reopened = await open();
    await assert.rejects(reopened.chunkToSend(y.chunks[0]!), IntegrityError);
    assert.deepEqual(await reopened.chunkToSend(z.chunks[0]!), other);
  });

  it('cuts a PUT larger than its hot tier into two buffers in turn, each reused once its chunk is written', async (t) => {
    // A tier that would take 4 MiB chunks (up to a quarter of it), smaller than the object.
    const store = await open({ memoryBytes: 16 * MiB });
    const four = () => randomBytes(4 * MiB);
    const repeated = four();
    // Five whole chunks and a tail; the third repeats the first (held once, written once).
    const data = Buffer.concat([repeated, four(), repeated, four(), four(), randomBytes(1000)]);
    const big = (calls: { arguments: unknown[] }[]) => calls.filter((c) => Number(c.arguments[0]) >= MiB);
    const slow = t.mock.method(Buffer, 'allocUnsafeSlow');
    const unsafe = t.mock.method(Buffer, 'allocUnsafe');
    const m = await store.put('big', pieces(data), { size: data.length });
    const made = big(slow.mock.calls).length + big(unsafe.mock.calls).length;
    t.mock.restoreAll();
    assert.equal(m.chunks.length, 6);
    assert.ok(made <= 2, `${made} chunk-sized buffers made for ${m.chunks.length} chunks`);
    for (const d of m.chunks) assert.equal(store.hotChunk(d), undefined, 'kept out of the hot tier');
    assert.ok((await readAll(store, 'big')).equals(data), 'read back at once'); // not deepEqual: a 20 MiB diff takes minutes
    await store.flush();
    const reopened = await open();
    assert.ok((await readAll(reopened, 'big')).equals(data), 'every chunk written as it was cut');
    assert.deepEqual(corrupt, []);
  });

  it('reads a pass longer than its hot tier into two reused buffers, and a short one through the tier', async (t) => {
    // A tier that would take 4 MiB chunks (up to a quarter of it), smaller than the object.
    const store = await open({ memoryBytes: 16 * MiB });
    const data = randomBytes(6 * 4 * MiB);
    const m = await store.put('big', pieces(data), { size: data.length });
    const last = m.chunks.length - 1;
    const big = (calls: { arguments: unknown[] }[]) => calls.filter((c) => Number(c.arguments[0]) >= MiB);
    const slow = t.mock.method(Buffer, 'allocUnsafeSlow');
    const unsafe = t.mock.method(Buffer, 'allocUnsafe');
    const pass = store.passReader(m, 0, last);
    for (let i = 0; i <= last; i++) {
      const chunk = await pass.read(i);
      assert.ok(chunk.equals(data.subarray(i * m.chunkSize, (i + 1) * m.chunkSize)), `chunk ${i}`);
      pass.done(chunk);
    }
    const made = big(slow.mock.calls).length + big(unsafe.mock.calls).length;
    t.mock.restoreAll();
    assert.ok(made <= 2, `${made} chunk-sized buffers made for ${m.chunks.length} chunks`);
    for (const d of m.chunks) assert.equal(store.hotChunk(d), undefined, 'kept out of the hot tier');
    // Two chunks, less than the tier (a range, as a video player asks): through it, so the next is a hit.
    const short = store.passReader(m, 2, 3);
    assert.ok((await short.read(2)).equals(data.subarray(2 * m.chunkSize, 3 * m.chunkSize)));
    assert.ok(store.hotChunk(m.chunks[2]!), 'a short pass warms the tier');
  });

  it('scrubs the files without emptying the hot tier', async () => {
    const store = await open({ memoryBytes: 16 * MiB });
    const data = randomBytes(5 * MiB);
    const m = await store.put('hot', pieces(data), { size: data.length });
    assert.ok(store.hotChunk(m.chunks[0]!), 'a PUT warms the hot tier');
    assert.deepEqual(await store.scrub(), { checked: 2, corrupt: 0 });
    assert.ok(store.hotChunk(m.chunks[0]!), 'still there after the scrub');
  });

  it('finds no chunk by a name that is not its digest in lower-case hex, and drops nothing for it', async () => {
    const store = await open();
    const small = Buffer.from('small'); // kept in the database
    const large = randomBytes(200_000); // kept as a file
    await store.put('small', pieces(small), { size: small.length });
    await store.put('large', pieces(large), { size: large.length });
    for (const body of [small, large]) {
      const digest = digestOf(body);
      const key = Buffer.from(digest, 'hex').toString('latin1');
      for (const name of [
        digest.toUpperCase(),
        digest.slice(1),
        `${digest}0`,
        key,
        `${digest.slice(0, 63)}\0`,
        '',
      ]) {
        assert.equal(store.has(name), false, name);
        await assert.rejects(store.readChunk(name), ObjectNotFoundError, name);
        await assert.rejects(store.chunkToSend(name), ObjectNotFoundError, name);
      }
      assert.equal(store.has(digest), true);
    }
    assert.deepEqual(corrupt, [], 'nothing called damaged');
    assert.deepEqual(await readAll(store, 'small'), small);
    assert.deepEqual(await readAll(store, 'large'), large);
  });

  it('recovers from a crash: drops damaged, partial and orphaned files, and scrub finds silent rot', async () => {
    const store = await open();
    const good = randomBytes(5 * MiB);
    const rotten = randomBytes(2 * MiB);
    const truncated = randomBytes(3 * MiB);
    await store.put('good', pieces(good), { size: good.length });
    const r = await store.put('rotten', pieces(rotten), { size: rotten.length });
    const t = await store.put('truncated', pieces(truncated), { size: truncated.length });
    await store.flush();
    const chunkFile = (d: string) => join(dir, 'chunks', d.slice(0, 2), d);
    // What a crash and bad disk leave behind:
    const rottenBytes = await readFile(chunkFile(r.chunks[0]!));
    rottenBytes[100]! ^= 1; // same length, wrong content: only hashing finds it
    await writeFile(chunkFile(r.chunks[0]!), rottenBytes);
    await writeFile(chunkFile(t.chunks[0]!), truncated.subarray(0, 1000)); // torn write
    const orphan = randomBytes(100);
    await mkdir(join(dir, 'chunks', digestOf(orphan).slice(0, 2)), { recursive: true });
    await writeFile(chunkFile(digestOf(orphan)), orphan); // an interrupted PUT's chunk, never committed
    await writeFile(join(dir, 'tmp', 'half-written'), 'partial');
    withDb((db) => {
      // A manifest row that does not hold together, and a small chunk nothing references.
      const bad = { ...manifestColumns(r), key: 'bad-root', root: Buffer.alloc(32) };
      db.prepare(
        'INSERT INTO manifests (key, size, chunk_size, chunks, root, created) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(bad.key, bad.size, bad.chunkSize, bad.chunks, bad.root, 1);
      db.prepare('INSERT INTO chunks (digest, data) VALUES (?, ?)').run(
        Buffer.from(digestOf(Buffer.from('orphan')), 'hex'),
        Buffer.from('orphan'),
      );
      // Chunk rows that name no chunk (a damaged page, an edit): removed, never a crash.
      for (const digest of [Buffer.alloc(31, 7), Buffer.alloc(0), 'abc'])
        db.prepare('INSERT INTO chunks (digest, data) VALUES (?, ?)').run(digest, Buffer.from('x'));
    });

    const reopened = await open();
    assert.equal(reopened.lookup('truncated'), undefined, 'torn chunk found by its length at open');
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    const scrub = await reopened.scrub();
    assert.equal(scrub.corrupt, 1);
    assert.equal(reopened.lookup('rotten'), undefined);
    assert.deepEqual(await readAll(reopened, 'good'), good);
    await reopened.flush();
    const left = (await files(join(dir, 'chunks'))).map((f) => f.split('/').at(-1));
    assert.deepEqual(left.sort(), [...new Set((reopened.lookup('good')?.chunks ?? []) as string[])].sort());
    assert.deepEqual(reopened.keys(), ['good']);
    assert.deepEqual(
      withDb((db) =>
        db
          .prepare('SELECT key FROM manifests')
          .all()
          .map((row) => row.key),
      ),
      ['good'],
    );
    assert.equal(rowsIn('chunks'), 0, 'the orphan and the rows that name no chunk are gone');
    assert.equal(reopened.stats().chunkBytes, good.length);
  });

  it('answers a failed manifest write to its caller and nothing else (no unhandled rejection)', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const store = await open();
      // Another connection holds the database's write lock: the manifest write fails (SQLITE_BUSY).
      const other = new DatabaseSync(join(dir, DB_FILE));
      other.exec('BEGIN IMMEDIATE');
      // A chunk file (above PACKED_CHUNK_BYTES): the chunk is written, the manifest is what fails.
      const data = randomBytes(PACKED_CHUNK_BYTES + 1);
      try {
        await assert.rejects(store.put('k', pieces(data), { size: data.length }), /locked/);
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      // Unhandled rejections are reported after the microtask queue drains: give them a macrotask.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, [], 'no promise was left to reject unhandled');
      await store.flush(); // and waiting for background work does not fail for it either
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('counts a chunk added twice at once by one write once, and frees it with the write', async () => {
    const store = await open();
    const zeros = Buffer.alloc(64 * 1024); // repeated content: both chunks of an object of zeros
    const lease = store.newLease();
    await Promise.all([store.putChunk(lease, zeros), store.putChunk(lease, zeros)]);
    assert.equal(store.stats().chunkBytes, zeros.length, 'stored once');
    lease.release();
    await store.flush();
    assert.equal(
      store.stats().chunkBytes,
      0,
      'and freed with the lease (nothing left that can never be evicted)',
    );
    assert.deepEqual(await files(join(dir, 'chunks')), []);
  });

  it('keeps a chunk that another write is adding when the first write lets go of it', async () => {
    const store = await open();
    const data = randomBytes(64 * 1024);
    const a = store.newLease();
    const b = store.newLease();
    const adds = [store.putChunk(a, data), store.putChunk(b, data)];
    a.release(); // one download aborted while both were writing the same chunk
    const digest = (await Promise.all(adds))[1]!;
    await store.commit(b, {
      key: 'k',
      size: data.length,
      chunkSize: chunkSizeFor(data.length),
      chunks: [digest],
    });
    b.release();
    await store.flush();
    assert.deepEqual(await readAll(store, 'k'), data, 'the object the other write committed is whole');
  });

  it('takes no reference for a lease released while its chunk was being written', async () => {
    const store = await open();
    const lease = store.newLease();
    const adding = store.putChunk(lease, randomBytes(64 * 1024));
    lease.release(); // a download aborted, or its object deleted, while the chunk is on its way to disk
    await adding;
    await store.flush();
    assert.equal(store.stats().chunkBytes, 0);
    assert.deepEqual(await files(join(dir, 'chunks')), []);
  });

  it('keeps a consistent index under concurrent writes of one key', async () => {
    const store = await open();
    const versions = Array.from({ length: 5 }, () => randomBytes(4 * MiB + 17));
    await Promise.all(versions.map((v) => store.put('same', pieces(v), { size: v.length })));
    await store.flush();
    const final = await readAll(store, 'same');
    assert.ok(versions.some((v) => v.equals(final)));
    assert.equal(store.stats().chunkBytes, final.length);
    const reopened = await open();
    assert.deepEqual(await readAll(reopened, 'same'), final);
  });

  it('orders a DELETE after a commit of the key under way: the version that commit writes is deleted too', async (t) => {
    const store = await open();
    await store.put('k', [randomBytes(100)], { size: 100 }); // a version held
    for (const key of ['k', 'new']) {
      const held = holdManifestWrite(t, key);
      const putting = store.put(key, [randomBytes(200)], { size: 200 });
      await held.atWrite; // its manifest on its way to the database
      const deleting = store.delete(key);
      held.release();
      await putting;
      assert.equal(await deleting, true, `${key}: it was here`);
      assert.equal(store.lookup(key), undefined, `${key}: the version the PUT wrote is not served`);
    }
    await store.flush();
    assert.deepEqual(store.stats().entries, 0);
    const { bytes, overheadBytes } = store.stats();
    assert.equal(bytes - overheadBytes, 0, 'nothing left counted but the database and the folders');
    await store.close();
    const reopened = await open();
    assert.deepEqual(reopened.keys(), [], 'nor after a restart');
    await reopened.close();
  });

  it('keeps the newest of concurrent commits of a key, whatever order they take their turns in', async (t) => {
    const store = await open();
    const lease = store.newLease();
    const newer = await store.putChunk(lease, randomBytes(100));
    const older = await store.putChunk(lease, randomBytes(100));
    const version = (key: string, digest: string, createdAtMs: number) => ({
      key,
      size: 100,
      chunkSize: chunkSizeFor(100),
      chunks: [digest],
      createdAtMs,
    });
    // The newer first: the older, asked for while the newer's manifest is being written, is stale.
    let held = holdManifestWrite(t, 'a');
    const first = store.commit(lease, version('a', newer, 9000));
    await held.atWrite;
    const second = store.commit(lease, version('a', older, 5000));
    held.release();
    await first;
    await assert.rejects(second, StaleVersionError);
    // The older first: the newer replaces it.
    held = holdManifestWrite(t, 'b');
    const third = store.commit(lease, version('b', older, 5000));
    await held.atWrite;
    const fourth = store.commit(lease, version('b', newer, 9000));
    held.release();
    await Promise.all([third, fourth]);
    lease.release();
    assert.equal(store.lookup('a')?.createdAtMs, 9000);
    assert.equal(store.lookup('b')?.createdAtMs, 9000);
    await store.flush();
    assert.equal(store.stats().chunkBytes, chunkDiskBytes(100), 'only the newer chunk is held');
    await store.close();
    const reopened = await open();
    assert.equal(reopened.lookup('a')?.createdAtMs, 9000);
    assert.equal(reopened.lookup('b')?.createdAtMs, 9000);
    await reopened.close();
  });

  it("refuses a version whose commit gets the key's turn after a purge that covers it was recorded", async (t) => {
    const purged = new Map<string, number>();
    const store = await open({ purgedAt: (key) => purged.get(key) });
    const lease = store.newLease();
    const digest = await store.putChunk(lease, randomBytes(100));
    const held = holdManifestWrite(t, 'k');
    const putting = store.put('k', [randomBytes(200)], { size: 200 });
    await held.atWrite;
    // A copy of an older version of another node's, waiting for the key's turn behind the PUT.
    const copy = store.commit(lease, {
      key: 'k',
      size: 100,
      chunkSize: chunkSizeFor(100),
      chunks: [digest],
      createdAtMs: clock.now() - 500,
    });
    purged.set('k', clock.now() - 100); // a purge's tombstone lands meanwhile
    held.release();
    await putting; // made after the purge: it stays
    await assert.rejects(copy, ObjectPurgedError);
    lease.release();
    assert.equal(store.lookup('k')?.size, 200);
    await store.close();
  });

  it('refuses a version created at the very time of a purge (a tombstone covers it), and takes one made a moment after', async () => {
    const purgedAt = clock.now() - 1000;
    const store = await open({ purgedAt: (key) => (key === 'k' ? purgedAt : undefined) });
    const lease = store.newLease();
    const digest = await store.putChunk(lease, randomBytes(100));
    const copy = (createdAtMs: number) =>
      store.commit(lease, {
        key: 'k',
        size: 100,
        chunkSize: chunkSizeFor(100),
        chunks: [digest],
        createdAtMs,
      });
    await assert.rejects(copy(purgedAt), ObjectPurgedError);
    assert.equal(store.lookup('k'), undefined);
    assert.equal((await copy(purgedAt + 1)).createdAtMs, purgedAt + 1);
    lease.release();
    assert.equal(store.lookup('k')?.createdAtMs, purgedAt + 1);
    await store.close();
  });

  it('at its limit, evicts a cached copy before an older owned one', async () => {
    const store = await openWithRoom(3 * MiB + ROWS, { isOwned: (key) => key.startsWith('own/') });
    for (const key of ['own/1', 'cached/1', 'own/2'])
      await store.put(key, pieces(randomBytes(MiB)), { size: MiB });
    await store.put('new', pieces(randomBytes(MiB)), { size: MiB });
    assert.deepEqual(removed, ['cached/1:evicted'], 'the oldest, own/1, is owned: kept');
    await store.flush();
  });

  it('on a disk another tenant filled, evicts cached copies to take a write, never owned ones', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', dir]);
    try {
      // Its limit (64 MiB) is far above what the disk holds, as on a shared volume.
      const store = await open({ dir: join(dir, 'store'), isOwned: (key) => key.startsWith('own/') });
      const body = () => randomBytes(MiB);
      for (const key of ['own/1', 'cached/1', 'cached/2', 'own/2'])
        await store.put(key, pieces(body()), { size: MiB });
      // Someone else fills the rest of the disk.
      const filler = await openFile(join(dir, 'filler'), 'w');
      await assert.rejects(async () => {
        for (;;) await filler.write(Buffer.alloc(MiB));
      }, /ENOSPC/);
      await filler.close();
      const data = body();
      await store.put('new', pieces(data), { size: MiB });
      assert.deepEqual(await readAll(store, 'new'), data, 'the write was taken');
      assert.ok(store.lookup('own/1') && store.lookup('own/2'), 'owned copies kept');
      assert.ok(removed.includes('cached/1:evicted'), 'a cached copy made the room');
      // Nothing cached is left to give: the disk-full error stands.
      await store.put('cached/3', pieces(body()), { size: MiB }).catch(() => undefined);
      for (const key of store.keys()) if (!key.startsWith('own/')) await store.delete(key);
      await assert.rejects(
        store.put('more', pieces(randomBytes(4 * MiB)), { size: 4 * MiB }),
        InsufficientStorageError,
      );
      assert.ok(store.lookup('own/1') && store.lookup('own/2'), 'owned copies still kept');
      await store.flush();
    } finally {
      execFileSync('umount', ['-l', dir]);
    }
  });

  it("counts the database's WAL, free pages and room left in pages, and its folders: at rest, its folder takes no more than its limit", async () => {
    // Before, the limit counted chunks and rows only: the WAL (up to 8 MiB), free pages (4 MiB),
    // the room rows leave in their pages (one of 8.5 KB had a 16 KiB page to itself) and 1 MiB of
    // folders came on top, and this folder took 1.7 times its limit.
    const store = await openWithRoom(4 * MiB);
    const { maxBytes } = store.stats();
    let peak = 0;
    for (let round = 0; round < 40; round++) {
      // Small objects (their chunks packed in the database), 20 at once, and every third deleted.
      const keys = Array.from({ length: 20 }, (_, i) => `s/${round}/${i}`);
      await Promise.all(
        keys.map((key, i) => {
          const data = randomBytes(1000 + ((round * 20 + i) % 8) * 1900);
          return store.put(key, [data], { size: data.length });
        }),
      );
      await Promise.all(keys.filter((_, i) => i % 3 === 0).map((key) => store.delete(key)));
      await store.flush();
      const taken = await diskBytes(dir);
      peak = Math.max(peak, taken);
      const stats = store.stats();
      assert.ok(stats.bytes <= maxBytes, `round ${round}: ${stats.bytes} counted, within ${maxBytes}`);
      // At rest, what it counts covers what its folder takes: else the limit holds only by luck
      // (a block more allowed: a file system may add one of its own to a file at writeback).
      assert.ok(
        taken <= stats.bytes + 4096,
        `round ${round}: the folder takes ${taken}, ${stats.bytes} counted`,
      );
    }
    assert.ok(store.stats().entries < 40 * 20, 'the limit evicted some');
    assert.ok(peak <= maxBytes, `the store's folder took up to ${peak} bytes on disk, its limit ${maxBytes}`);
    await store.close();
  });

  it('evicts nothing for the WAL that writes during the index load left behind', async () => {
    const store = await openWithRoom(16 * MiB);
    const { maxBytes } = store.stats();
    for (let round = 0; round < 60; round++)
      await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          store.put(`s/${round}/${i}`, [randomBytes(2000)], { size: 2000 }),
        ),
      );
    await store.close();
    const reopened = await open({ maxBytes, loadRowsPerTurn: 20 });
    // The load's reader holds its snapshot: no checkpoint passes it, and every commit meanwhile
    // stays in the WAL (whole 16 KiB pages), which the first measure after the load counted.
    for (let i = 0; reopened.stats().indexLoaded === false && i < 400; i++) {
      await reopened.put('churn', [randomBytes(8000)], { size: 8000 });
      await reopened.delete('churn');
    }
    await reopened.loaded();
    await reopened.flush();
    assert.deepEqual(
      removed.filter((r) => r.endsWith(':evicted')),
      [],
      'the same data as before the restart fits',
    );
    assert.equal(reopened.stats().entries, 6000);
    await reopened.close();
  });

  it('makes room for a large write in a full store by evicting about what it needs, not more', async () => {
    const store = await openWithRoom(8 * MiB);
    const sizes = new Map<string, number>();
    for (let round = 0; store.stats().entries === sizes.size; round++) {
      const keys = Array.from({ length: 50 }, (_, i) => `s/${round}/${i}`);
      await Promise.all(
        keys.map((key, i) => {
          const data = randomBytes(1000 + (((round * 50 + i) * 1531) % 6900));
          sizes.set(key, data.length);
          return store.put(key, [data], { size: data.length });
        }),
      );
      await store.flush();
    }
    removed.length = 0;
    await store.put('large', pieces(randomBytes(2 * MiB)), { size: 2 * MiB });
    await store.flush();
    // Rows evicted but not deleted yet were counted twice (gone from the count, still in the file):
    // the write evicted half as much again as it needed.
    const evicted = removed.reduce((n, r) => n + (sizes.get(r.slice(0, r.lastIndexOf(':'))) ?? 0), 0);
    assert.ok(evicted <= 1.2 * 2 * MiB, `evicted ${evicted} bytes of objects for a write of ${2 * MiB}`);
    await store.close();
  });

  it('counts chunk files in whole blocks: what they take on disk stays within the byte limit', async () => {
    // Objects just above a whole number of blocks take one block more: counted by their length, a
    // full store of objects of 16 KiB and a byte took 1.27 times its limit on disk.
    const store = await openWithRoom(2 * MiB);
    for (let i = 0; i < 200; i++) {
      const data = randomBytes(PACKED_CHUNK_BYTES + 1);
      await store.put(`f/${i}`, [data], { size: data.length });
    }
    await store.flush();
    assert.ok(store.keys().length < 200, 'the limit evicted some');
    let onDisk = 0;
    for (const file of await files(join(dir, 'chunks'))) onDisk += (await stat(file)).blocks * 512;
    const { chunkBytes, maxBytes } = store.stats();
    assert.ok(onDisk <= chunkBytes, `chunk files take ${onDisk} bytes on disk, ${chunkBytes} counted`);
    assert.ok(chunkBytes <= maxBytes);
    await store.close();
  });

  it('keeps small objects and every manifest in its database, and finds them there after a restart', async () => {
    const store = await open();
    const small = Array.from({ length: 50 }, (_, i) => randomBytes(1 + ((i * 331) % PACKED_CHUNK_BYTES)));
    for (const [i, data] of small.entries()) await store.put(`small/${i}`, [data], { size: data.length });
    const big = randomBytes(PACKED_CHUNK_BYTES + 1);
    await store.put('big', [big], { size: big.length });
    await store.flush();
    assert.equal(
      (await files(join(dir, 'chunks'))).length,
      1,
      'only the chunk above PACKED_CHUNK_BYTES is a file',
    );
    await store.close();
    const reopened = await open();
    assert.equal(reopened.keys().length, 51);
    for (const [i, data] of small.entries()) assert.deepEqual(await readAll(reopened, `small/${i}`), data);
    assert.deepEqual(await readAll(reopened, 'big'), big);
    assert.equal(
      reopened.stats().chunkBytes,
      chunkDiskBytes(big.length) + small.reduce((n, d) => n + d.length, 0),
      'a file in whole blocks',
    );
    assert.ok(await reopened.delete('small/0'));
    await reopened.flush();
    assert.equal(reopened.stats().chunks, 50, 'a deleted small object leaves nothing behind');
    assert.equal(rowsIn('chunks'), 49, 'nor its row in the database');
  });

  it("moves a store's manifest files, as stores before the database kept them, into the database", async () => {
    const store = await open();
    const data = randomBytes(3000);
    const m = await store.put('old', [data], { size: data.length });
    await store.close();
    // The same object as an earlier version left it: a manifest file, and the chunk in a file.
    const legacy = new ManifestFiles(dir);
    await mkdir(join(legacy.path('old'), '..'), { recursive: true });
    await writeFile(legacy.path('old'), JSON.stringify(m));
    await writeFile(join(dir, 'manifests', 'ab.json'), '{not json');
    const chunkFile = join(dir, 'chunks', m.chunks[0]!.slice(0, 2), m.chunks[0]!);
    await writeFile(chunkFile, data);
    rmSync(join(dir, DB_FILE));
    for (const suffix of ['-wal', '-shm']) rmSync(join(dir, DB_FILE + suffix), { force: true });

    const reopened = await open();
    assert.deepEqual(await readAll(reopened, 'old'), data);
    assert.equal(await legacy.exists(), false, 'manifests/ is gone');
    await reopened.close();
    const again = await open();
    assert.deepEqual(await readAll(again, 'old'), data, 'from the database now');
    assert.ok(await again.delete('old'));
    await again.flush();
    assert.deepEqual(await files(join(dir, 'chunks')), [], 'the old chunk file goes with the object');
  });

  it('sets a database it cannot read aside, says so, and starts empty', async () => {
    const store = await open();
    await store.put('k', [randomBytes(100)], { size: 100 });
    await store.put('large', [randomBytes(PACKED_CHUNK_BYTES * 2)], { size: PACKED_CHUNK_BYTES * 2 });
    await store.close();
    for (const suffix of ['-wal', '-shm']) rmSync(join(dir, DB_FILE + suffix), { force: true });
    await writeFile(join(dir, DB_FILE), randomBytes(8192)); // not a database any more
    const errors: unknown[] = [];
    const reopened = await open({ onBackgroundError: (error) => errors.push(error) });
    assert.match(String(errors[0]), /could not be read: moved to index\.db\.damaged/);
    assert.deepEqual(reopened.keys(), []);
    assert.deepEqual(await files(join(dir, 'chunks')), [], 'chunk files nothing references are removed');
    await reopened.put('k', [Buffer.from('fresh')], { size: 5 });
    assert.deepEqual(await readAll(reopened, 'k'), Buffer.from('fresh'));
  });

  it('on a full disk, fails a small object (kept in the database) as it fails a file: InsufficientStorageError', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    try {
      const store = await open({ dir: join(dir, 'store'), isOwned: () => true });
      const first = randomBytes(1000);
      await store.put('first', [first], { size: 1000 });
      const filler = await openFile(join(dir, 'filler'), 'w');
      await assert.rejects(async () => {
        for (;;) await filler.write(Buffer.alloc(64 * 1024));
      }, /ENOSPC/);
      await filler.close();
      // Nothing is evictable (every copy is owned): sooner or later the database must grow, and cannot.
      const failure = await (async () => {
        for (let i = 0; i < 5000; i++) {
          const error = await store.put(`k${i}`, [randomBytes(4000)], { size: 4000 }).then(
            () => undefined,
            (e: unknown) => e,
          );
          if (error) return error;
        }
        return undefined;
      })();
      assert.ok(
        failure instanceof InsufficientStorageError,
        `failed with ${(failure as Error | undefined)?.message}`,
      );
      assert.deepEqual(await readAll(store, 'first'), first, 'what it held is intact');
      await rm(join(dir, 'filler'));
      await store.put('after', [Buffer.from('room again')], { size: 10 });
      assert.deepEqual(await readAll(store, 'after'), Buffer.from('room again'));
      await store.close();
    } finally {
      execFileSync('umount', ['-l', dir]);
    }
  });

  it('counts every manifest in its byte limit: many small objects evict as their rows add up', async () => {
    const store = await openWithRoom(256 * 1024);
    const one = await store.put('k0', [randomBytes(100)], { size: 100 });
    assert.equal(store.stats().indexBytes, manifestRowBytes(one));
    assert.equal(store.stats().bytes, 100 + manifestRowBytes(one) + store.stats().overheadBytes);
    // 100 bytes of data each: counted by their chunks alone, 2,000 would fit in 256 KiB, ten times over.
    for (let i = 1; i < 2000; i++) await store.put(`k${i}`, [randomBytes(100)], { size: 100 });
    const stats = store.stats();
    assert.ok(stats.bytes <= stats.maxBytes, `${stats.bytes} within ${stats.maxBytes}`);
    assert.ok(stats.entries < 2000 / 2, `${stats.entries} objects kept: their rows count`);
    assert.equal(stats.indexBytes, rowsOf(store));
    await store.close();
    const lower = stats.maxBytes - 128 * 1024;
    const reopened = await open({ maxBytes: lower }); // a lower limit: evicts once loaded
    await reopened.loaded();
    assert.ok(reopened.stats().bytes <= lower);
    assert.ok(reopened.stats().entries < stats.entries);
    assert.equal(reopened.stats().indexBytes, rowsOf(reopened));
  });

  /**
   * Stores 'good', adds the rows `add` writes beside it (with good's columns at hand), and checks
   * that a restart keeps 'good' alone, whole, and removes the other rows.
   */
  async function keepsOnlyGood(
    add: (db: DatabaseSync, good: ReturnType<typeof manifestColumns> & { root: Buffer }) => void,
  ): Promise<void> {
    const store = await open();
    const data = randomBytes(500);
    const good = await store.put('good', [data], { size: data.length });
    await store.close();
    withDb((db) => add(db, { ...manifestColumns(good), root: Buffer.from(good.root, 'hex') }));
    const reopened = await open();
    // A start checks what the index relies on; the rest of a row, when the object is first read.
    for (const key of reopened.keys()) reopened.peek(key);
    assert.deepEqual(reopened.keys(), ['good']);
    assert.deepEqual(await readAll(reopened, 'good'), data);
    await reopened.close();
    assert.equal(rowsIn('manifests'), 1, 'the bad rows are gone');
  }

  it('drops manifest rows that hold anything malformed, whatever their types, and keeps the rest', async () => {
    await keepsOnlyGood((db, { size, chunkSize, chunks, root }) => {
      const insert = db.prepare(
        `INSERT INTO manifests (key, size, chunk_size, chunks, root, created, certificate, signature, signed_by)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      insert.run('sig-number', size, chunkSize, chunks, root, 1, null, 12345, null);
      insert.run('short-chunks', size, chunkSize, chunks.subarray(0, 31), root, 1, null, null, null);
      insert.run('unknown-cert', size, chunkSize, chunks, root, 1, 999, Buffer.alloc(70, 1), null);
      insert.run('size-text', 'abc', chunkSize, chunks, root, 1, null, null, null);
      insert.run('../not a key', size, chunkSize, chunks, root, 1, null, null, null);
      insert.run('null-root', size, chunkSize, chunks, Buffer.alloc(0), 1, null, null, null);
      insert.run('by-number', size, chunkSize, chunks, root, 1, null, Buffer.alloc(70, 1), 7);
    });
  });

  it('scrubs chunks kept in the database too, finds one rotted there, and lets the event loop run meanwhile', async () => {
    const store = await open();
    for (let i = 0; i < 2000; i++) await store.put(`s/${i}`, [randomBytes(1000)], { size: 1000 });
    const victim = Buffer.from(store.peek('s/7')!.chunks[0]!, 'hex');
    await store.close();
    withDb((db) => {
      const rotten = Buffer.from(
        (db.prepare('SELECT data FROM chunks WHERE digest = ?').get(victim) as { data: Uint8Array }).data,
      );
      rotten[10]! ^= 1;
      db.prepare('UPDATE chunks SET data = ? WHERE digest = ?').run(rotten, victim);
    });
    const reopened = await open();
    let turns = 0;
    let scrubbing = true;
    const turn = () => {
      turns++;
      if (scrubbing) setImmediate(turn);
    };
    setImmediate(turn);
    const result = await reopened.scrub();
    scrubbing = false;
    assert.deepEqual(result, { checked: 2000, corrupt: 1 });
    assert.equal(reopened.lookup('s/7'), undefined);
    assert.ok(turns >= 5, `the event loop took ${turns} turns during the scrub`);
  });

  it('drops a chunk whose row holds anything but bytes, as damage, and goes on scrubbing', async () => {
    const store = await open();
    await store.put('n/1', [randomBytes(1000)], { size: 1000 });
    await store.put('n/2', [randomBytes(1000)], { size: 1000 });
    const victim = Buffer.from(store.peek('n/1')!.chunks[0]!, 'hex');
    await store.close();
    withDb((db) => db.prepare('UPDATE chunks SET data = 42 WHERE digest = ?').run(victim));
    const reopened = await open();
    assert.deepEqual(await reopened.scrub(), { checked: 2, corrupt: 1 });
    assert.equal(reopened.lookup('n/1'), undefined);
    assert.ok(reopened.lookup('n/2'), 'the other object stays');
    await reopened.close();
  });

  it('ends a scrub after the chunks it started with, however many are stored while it runs', async () => {
    const store = await open();
    for (let i = 0; i < 300; i++) await store.put(`a/${i}`, [randomBytes(500)], { size: 500 });
    let writing = true;
    let written = 0;
    const writes = (async () => {
      while (writing) await store.put(`b/${written++}`, [randomBytes(500)], { size: 500 });
    })();
    const result = await store.scrub();
    writing = false;
    await writes;
    assert.ok(written > 0, 'chunks were stored while it ran');
    assert.equal(result.checked, 300, `${written} stored meanwhile`);
    await store.close();
  });

  it('reads chunks kept in the database without leaving garbage in the old generation', async () => {
    // node:sqlite makes a row object in V8's old space (about 74 bytes): a scrub of a million
    // chunks read as objects left 70 MB of garbage there, kept in RSS as the heap's peak after.
    // In a process of its own with the agent's young generation (this one's is the test runner's).
    const { db } = await StoreDb.open(dir, false, { allowanceBytes: 16 * MiB });
    for (let i = 0; i < 200; i++) {
      const data = randomBytes(1000);
      await db.writeChunk(digestOf(data), data);
    }
    await db.close();
    const script = `
      import { getHeapSpaceStatistics } from 'node:v8';
      import { DatabaseSync } from 'node:sqlite';
      import { StoreDb } from ${JSON.stringify(new URL('./store-db.ts', import.meta.url).href)};
      const list = new DatabaseSync(${JSON.stringify(join(dir, DB_FILE))}, { readOnly: true });
      const digests = list.prepare('SELECT lower(hex(digest)) AS d FROM chunks').all().map((r) => r.d);
      list.close();
      const { db } = await StoreDb.open(${JSON.stringify(dir)}, false, { allowanceBytes: 2 ** 24 });
      const oldSpace = () => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
      for (const d of digests) db.readChunk(d);
      const before = oldSpace();
      for (let round = 0; round < 500; round++) for (const d of digests) db.readChunk(d);
      console.log(oldSpace() - before);
      await db.close();`;
    const grown = Number(
      execFileSync(process.execPath, [...AGENT_NODE_FLAGS, '--input-type=module', '-e', script], {
        encoding: 'utf8',
      }).trim(),
    );
    // 100,000 reads: as objects, about 5.5 MiB (a full collection in between would show less).
    assert.ok(grown < 1.5 * MiB, `the old generation grew by ${(grown / MiB).toFixed(2)} MiB`);
  });

  it('closes cleanly with writes on their way, and refuses writes after', async () => {
    const store = await open();
    const puts = Array.from({ length: 100 }, (_, i) =>
      store.put(`a/${i}`, [randomBytes(500)], { size: 500 }),
    );
    const closing = store.close();
    puts.push(
      ...Array.from({ length: 100 }, (_, i) => store.put(`b/${i}`, [randomBytes(500)], { size: 500 })),
    );
    const results = await Promise.allSettled(puts);
    await closing;
    const failed = results.filter((r) => r.status === 'rejected');
    for (const r of failed) assert.match(String(r.reason), /closed/);
    const reopened = await open();
    const kept = results.flatMap((r, i) =>
      r.status === 'fulfilled' ? [i < 100 ? `a/${i}` : `b/${i - 100}`] : [],
    );
    for (const key of kept) assert.ok(reopened.lookup(key), `${key}, acknowledged, is there`);
  });

  it('sets the database aside when a page further in is damaged, and starts empty', async () => {
    const store = await open();
    for (let i = 0; i < 300; i++) await store.put(`k/${i}`, [randomBytes(1000)], { size: 1000 });
    await store.put('big', [randomBytes(PACKED_CHUNK_BYTES * 2)], { size: PACKED_CHUNK_BYTES * 2 });
    await store.close();
    const file = await openFile(join(dir, DB_FILE), 'r+');
    try {
      const { size } = await file.stat();
      assert.ok(size >= 16384 * 8, `${size} bytes: pages to damage`);
      await file.write(randomBytes(16384), 0, 16384, 16384 * 4); // the fifth page, not the first
    } finally {
      await file.close();
    }
    const errors: unknown[] = [];
    const reopened = await open({ onBackgroundError: (error) => errors.push(error) });
    assert.match(String(errors[0]), /could not be read: moved to index\.db\.damaged/);
    assert.deepEqual(reopened.keys(), []);
    await reopened.flush(); // the orphans' files are removed in the background, once the index has loaded
    assert.deepEqual(await files(join(dir, 'chunks')), [], 'the chunk files are orphans now');
    await reopened.put('k', [Buffer.from('fresh')], { size: 5 });
    assert.deepEqual(await readAll(reopened, 'k'), Buffer.from('fresh'));
  });

  it('drops rows holding numbers past 2^53 (node:sqlite cannot read them) and keeps the rest', async () => {
    await keepsOnlyGood((db, { size, chunkSize, chunks, root }) => {
      const insert = db.prepare(
        'INSERT INTO manifests (key, size, chunk_size, chunks, root, created, expires, certificate) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      );
      const huge = 2n ** 53n + 1n;
      insert.run('huge-created', size, chunkSize, chunks, root, huge, null, null);
      insert.run('huge-size', huge, chunkSize, chunks, root, 1, null, null);
      insert.run('huge-expiry', size, chunkSize, chunks, root, 1, huge, null);
      insert.run('huge-certificate', size, chunkSize, chunks, root, 1, null, huge);
      db.prepare('INSERT INTO certificates (id, der) VALUES (?, ?)').run(huge, 'QUJD');
      // A BLOB column has no affinity: an integer there stays one.
      db.prepare(
        'INSERT INTO manifests (key, size, chunk_size, chunks, root, created, signature) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ).run('huge-signature', size, chunkSize, chunks, root, 1, huge);
    });
  });

  it('reads a manifest from its database when the object is read, and drops an object whose row changed under it', async () => {
    const store = await open();
    const kept = randomBytes(700);
    const edited = randomBytes(800);
    const gone = randomBytes(900);
    const k = await store.put('kept', [kept], { size: kept.length, contentType: 'text/plain' });
    await store.put('edited', [edited], { size: edited.length });
    await store.put('gone', [gone], { size: gone.length });
    await store.close();
    const reopened = await open();
    assert.deepEqual(reopened.keys().sort(), ['edited', 'gone', 'kept']);
    withDb((db) => {
      // After the start: another object's chunks, under a root that matches them (a row that holds
      // together, but not what the index holds), and a row removed.
      const { size, chunkSize, chunks } = manifestColumns(k);
      db.prepare('UPDATE manifests SET size = ?, chunk_size = ?, chunks = ?, root = ? WHERE key = ?').run(
        size,
        chunkSize,
        chunks,
        Buffer.from(k.root, 'hex'),
        'edited',
      );
      db.prepare("DELETE FROM manifests WHERE key = 'gone'").run();
    });
    assert.equal(reopened.lookup('kept')?.contentType, 'text/plain', 'read from the database, whole');
    assert.deepEqual(await readAll(reopened, 'kept'), kept);
    assert.equal(reopened.lookup('edited'), undefined, 'never another object under its key');
    assert.equal(reopened.openRead('gone'), undefined);
    assert.deepEqual(removed.sort(), ['edited:corrupt', 'gone:corrupt']);
    assert.deepEqual(reopened.keys(), ['kept']);
    await reopened.flush();
    assert.equal(reopened.stats().chunkBytes, kept.length, "the dropped objects' chunks went");
    await reopened.close();
  });

  it('keeps a copy of a chunk stored again after it was found damaged, whatever the holders of the damaged one do', async () => {
    const store = await open();
    const data = randomBytes(2 * MiB);
    const x = await store.put('x', [data], { size: data.length });
    const digest = x.chunks[0]!;
    const reader = store.openRead('x')!;
    const lease = store.newLease();
    await store.putChunk(lease, data); // a write of the same bytes under way (held by its lease)
    const file = join(dir, 'chunks', digest.slice(0, 2), digest);
    const rotten = await readFile(file);
    rotten[0]! ^= 0xff;
    await writeFile(file, rotten);
    await assert.rejects(store.readChunk(digest), IntegrityError);
    // The write under way cannot commit a chunk known bad.
    await assert.rejects(
      store.commit(lease, { key: 'b', size: data.length, chunkSize: x.chunkSize, chunks: [digest] }),
      IntegrityError,
    );
    assert.equal(store.lookup('b'), undefined);
    await store.flush();
    await store.put('z', [data], { size: data.length }); // stored again, whole
    // Those that held the damaged copy let go: the new copy is not theirs to free.
    reader.release();
    lease.release();
    await store.flush();
    assert.deepEqual(await readAll(store, 'z'), data);
    assert.equal(store.stats().chunkBytes, data.length);
    await store.delete('z');
    await store.flush();
    assert.equal(store.stats().chunks, 0, 'and freed with its last holder');
    assert.deepEqual(await files(join(dir, 'chunks')), []);
    await store.close();
  });

  it('fails a write whose chunk is found damaged while its manifest commits, and keeps the version held', async () => {
    const store = await open();
    const held = randomBytes(900);
    const first = await store.put('k', [held], { size: held.length });
    const data = randomBytes(1000);
    const lease = store.newLease();
    const digest = await store.putChunk(lease, data);
    withDb((db) =>
      db
        .prepare('UPDATE chunks SET data = ? WHERE digest = ?')
        .run(randomBytes(1000), Buffer.from(digest, 'hex')),
    );
    const fields = { key: 'k', size: data.length, chunkSize: chunkSizeFor(data.length), chunks: [digest] };
    const committing = store.commit(lease, fields);
    await assert.rejects(store.readChunk(digest), IntegrityError); // before the commit lands
    await assert.rejects(committing, IntegrityError);
    lease.release();
    assert.equal(store.lookup('k')?.root, first.root, 'the version held stays');
    assert.deepEqual(await readAll(store, 'k'), held);
    assert.deepEqual(removed, []);
    // The same without a version held: no row is left.
    const alone = store.newLease();
    const other = await store.putChunk(alone, data);
    withDb((db) =>
      db
        .prepare('UPDATE chunks SET data = ? WHERE digest = ?')
        .run(randomBytes(1000), Buffer.from(other, 'hex')),
    );
    const lone = store.commit(alone, { ...fields, key: 'lone', chunks: [other] });
    await assert.rejects(store.readChunk(other), IntegrityError);
    await assert.rejects(lone, IntegrityError);
    alone.release();
    await store.close();
    const reopened = await open();
    assert.deepEqual(reopened.keys(), ['k']);
    assert.deepEqual(await readAll(reopened, 'k'), held, 'and its row, after a restart');
    await reopened.close();
  });

  it('writes a small chunk again when a new object has the same bytes and its copy was not read since the start', async () => {
    const store = await open();
    const data = Buffer.from('a small object body');
    await store.put('x', [data], { size: data.length });
    await store.close();
    withDb((db) => db.exec('DELETE FROM chunks')); // lost while down: a start does not look it up
    const reopened = await open();
    await reopened.put('y', [data], { size: data.length });
    assert.deepEqual(await readAll(reopened, 'y'), data, 'the acknowledged write reads back');
    assert.deepEqual(await readAll(reopened, 'x'), data, 'and heals the object that shared it');
    assert.deepEqual(removed, []);
    await reopened.close();
  });

  it('checks a copy found at start when a new object has its bytes, and leaves an intact one as it is', async () => {
    const store = await open();
    const data = randomBytes(2 * MiB);
    const { chunks } = await store.put('x', [data], { size: data.length });
    await store.close();
    const file = join(dir, 'chunks', chunks[0]!.slice(0, 2), chunks[0]!);
    const { ino } = await stat(file);
    const reopened = await open();
    await reopened.put('y', [data], { size: data.length });
    assert.equal((await stat(file)).ino, ino, 'not written again: a full disk would have refused it');
    assert.deepEqual(await readAll(reopened, 'y'), data);
    await reopened.close();
  });

  it('counts a row the same before and after a restart, whatever characters its media type and signer hold', async () => {
    const types = ['text/plain; x="café"', 'text/plain; x="\u{1F600}"', 'text/plain; x="a\u0000bcdef"'];
    const signers = ['token:caf\u00e9', 'token:\u{1F600}\u{1F600}', 'a\u0000bcdefgh'];
    const store = await open({
      sign: () => ({
        certificate: 'QUJD',
        value: Buffer.alloc(70, 7).toString('base64'),
        by: signers.shift()!,
      }),
    });
    for (const [i, contentType] of types.entries()) {
      const data = randomBytes(100 + i);
      await store.put(`t/${i}`, [data], { size: data.length, contentType });
    }
    const before = store.stats().indexBytes;
    assert.equal(before, rowsOf(store));
    await store.close();
    const reopened = await open();
    assert.equal(reopened.stats().indexBytes, before);
    await reopened.close();
  });

  it("takes a store's manifest files as the truth when they come back (a rollback, then forward again)", async () => {
    const store = await open();
    const [a, b] = [randomBytes(300), randomBytes(300)];
    await store.put('a', [a], { size: a.length });
    const mb = await store.put('b', [b], { size: b.length });
    await store.close();
    // The release before the database ran meanwhile: it kept manifest files, and 'a' was deleted there.
    const legacy = new ManifestFiles(dir);
    await mkdir(join(legacy.path('b'), '..'), { recursive: true });
    await writeFile(legacy.path('b'), JSON.stringify(mb));
    const reopened = await open();
    assert.deepEqual(reopened.keys(), ['b'], "'a' does not come back");
    assert.deepEqual(await readAll(reopened, 'b'), b);
  });

  it('forgets certificates no manifest uses any more', async () => {
    let n = 0;
    const store = await open({
      sign: () => ({ certificate: Buffer.from(`certificate ${n++}`).toString('base64'), value: 'c2ln' }),
    });
    for (let i = 0; i < 20; i++) await store.put(`k/${i}`, [randomBytes(100)], { size: 100 });
    for (let i = 0; i < 19; i++) await store.delete(`k/${i}`);
    await store.close();
    await (await open()).close();
    assert.equal(rowsIn('certificates'), 1, "only k/19's is kept");
  });

  it('tries a manifest removal that failed again, so a deleted object does not come back at a restart', async () => {
    const store = await open();
    await store.put('gone', [randomBytes(100)], { size: 100 });
    await store.put('kept', [randomBytes(100)], { size: 100 });
    await store.flush();
    const other = new DatabaseSync(join(dir, DB_FILE));
    const rows = () => other.prepare("SELECT count(*) AS n FROM manifests WHERE key = 'gone'").get()?.n;
    other.exec('BEGIN IMMEDIATE'); // the write lock: the removal fails (SQLITE_BUSY)
    await assert.rejects(store.delete('gone'), /locked/);
    assert.equal(store.lookup('gone'), undefined, 'deleted for readers at once');
    other.exec('ROLLBACK');
    try {
      // Retried after a second: wait for the row to go (an event in another process's file).
      for (let waited = 0; rows() !== 0; waited += 50) {
        assert.ok(waited < 10_000, 'the removal was retried');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      other.close();
    }
    await store.close();
    assert.deepEqual((await open()).keys(), ['kept']);
  });

  it('on a disk filled under a store of small objects, answers 507 or takes the write, reports in a few lines, and heals', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', dir]);
    try {
      const reports: unknown[] = [];
      const store = await open({ dir: join(dir, 'store'), onBackgroundError: (e) => reports.push(e) });
      const objects = new Map<string, Buffer>();
      for (let i = 0; i < 12_000; i++) {
        const data = randomBytes(1024);
        objects.set(`s/${i}`, data);
        await store.put(`s/${i}`, [data], { size: 1024 });
      }
      await store.flush();
      const filler = await openFile(join(dir, 'filler'), 'w');
      await assert.rejects(async () => {
        for (;;) await filler.write(Buffer.alloc(64 * 1024));
      }, /ENOSPC/);
      await filler.close();
      const data = randomBytes(2 * MiB);
      // Evicting small objects frees pages inside the database, which a disk with no byte left may
      // not let SQLite give back (its WAL cannot grow): taken, or 507; never anything else.
      const outcome = await store.put('large', [data], { size: data.length }).then(
        () => 'taken',
        (e: unknown) => {
          assert.ok(e instanceof InsufficientStorageError, String(e));
          return '507';
        },
      );
      if (outcome === 'taken') assert.deepEqual(await readAll(store, 'large'), data);
      assert.ok(store.stats().entries < 12_000, 'small objects were evicted for it');
      assert.ok(reports.length <= 10, `${reports.length} background reports, not one per removal`);
      for (const key of store
        .keys()
        .filter((k) => k.startsWith('s/'))
        .slice(0, 50))
        assert.deepEqual(await readAll(store, key), objects.get(key), `${key}: its own bytes`);
      await rm(join(dir, 'filler'));
      await store.put('after', [data], { size: data.length });
      assert.deepEqual(await readAll(store, 'after'), data, 'room again: writes are taken');
      await store.close();
      // Evictions whose rows the full disk kept may come back at a restart: whole, as copies. One
      // whose chunk row went is found by the scrub (the agent's, at start) or its first read.
      const reopened = await open({ dir: join(dir, 'store') });
      await reopened.scrub();
      for (const key of reopened
        .keys()
        .filter((k) => k.startsWith('s/'))
        .slice(0, 50))
        assert.deepEqual(await readAll(reopened, key), objects.get(key), `${key}: its own bytes`);
      await reopened.close();
    } finally {
      execFileSync('umount', ['-l', dir]);
    }
  });

  it('does not bring back at a restart an object purged since its version was made', async () => {
    const store = await open();
    const p = await store.put('p', [randomBytes(100)], { size: 100 });
    await store.put('q', [randomBytes(100)], { size: 100 });
    await store.close();
    // The purge's tombstone was kept, the manifest's removal was not (a full disk, a crash).
    const reopened = await open({ purgedAt: (key) => (key === 'p' ? p.createdAtMs : undefined) });
    assert.deepEqual(reopened.keys(), ['q']);
  });

  it('writes a chunk over a row a failed removal left behind, so the new object gets its own bytes', async () => {
    const store = await open();
    const data = randomBytes(700);
    // A row nothing references, with damaged bytes: what a removal that failed leaves behind.
    withDb((db) => {
      const rotten = Buffer.from(data);
      rotten[0]! ^= 1;
      db.prepare('INSERT INTO chunks (digest, data) VALUES (?, ?)').run(
        Buffer.from(digestOf(data), 'hex'),
        rotten,
      );
    });
    await store.put('k', [data], { size: data.length });
    assert.deepEqual(await readAll(store, 'k'), data);
  });

  it('keeps a new certificate that a failed transaction inserted and rolled back, for the next write', async () => {
    let n = 0;
    const sign = () => ({ certificate: Buffer.from(`certificate ${n}`).toString('base64'), value: 'c2ln' });
    const store = await open({ sign });
    await store.put('first', [randomBytes(100)], { size: 100 });
    n = 1; // a renewed certificate
    const other = new DatabaseSync(join(dir, DB_FILE));
    try {
      // Fails the next manifest write once, after its certificate's row went in, in the same transaction.
      other.exec(`CREATE TABLE fail_once (x); INSERT INTO fail_once VALUES (1);
        CREATE TRIGGER fail_once BEFORE INSERT ON manifests WHEN (SELECT count(*) FROM fail_once) > 0
        BEGIN SELECT RAISE(ABORT, 'injected'); END;`);
      await assert.rejects(store.put('second', [randomBytes(100)], { size: 100 }), /injected/);
      other.exec('DELETE FROM fail_once');
    } finally {
      other.close();
    }
    const third = randomBytes(100);
    await store.put('third', [third], { size: 100 });
    await store.close();
    const reopened = await open({ sign });
    assert.deepEqual(reopened.keys().sort(), ['first', 'third']);
    assert.deepEqual(await readAll(reopened, 'third'), third, 'its certificate was stored with it');
  });

  it('opens a store whose import finished but whose manifest files were not all removed yet', async () => {
    const store = await open();
    const data = randomBytes(300);
    const m = await store.put('a', [data], { size: data.length });
    await store.put('b', [randomBytes(300)], { size: 300 });
    await store.close();
    // A start cut short while it removed the imported files: some are left, under the imported name.
    const leftover = join(dir, 'manifests.imported', 'ab');
    await mkdir(leftover, { recursive: true });
    await writeFile(join(leftover, 'x.json'), JSON.stringify(m));
    const reopened = await open();
    assert.deepEqual(reopened.keys().sort(), ['a', 'b'], 'nothing taken as the truth from a partial set');
    assert.deepEqual(await readdir(dir).then((names) => names.filter((n) => n.startsWith('manifests'))), []);
  });

  /** Stores `bodies` in their order, a second apart (the index loads newest first: the first last). */
  async function storeInOrder(bodies: Map<string, Buffer>): Promise<void> {
    const store = await open();
    for (const [key, body] of bodies) {
      await store.put(key, [body], { size: body.length });
      clock.advance(1000);
    }
    await store.close();
  }

  it('serves while its index loads: a key not loaded yet is read from the database, and what is deleted or written meanwhile holds after', async () => {
    const shared = randomBytes(1000);
    const bodies = new Map([
      ['shared-a', shared],
      ['shared-b', shared],
      ['replaced', randomBytes(PACKED_CHUNK_BYTES + 1)], // a file
    ]);
    for (let i = 0; i < 100; i++) bodies.set(`k${i}`, randomBytes(1000));
    await storeInOrder(bodies);
    const store = await open({ loadRowsPerTurn: 1 });
    assert.equal(store.stats().indexLoaded, false);
    for (const key of ['shared-a', 'shared-b', 'replaced'])
      assert.ok(!store.keys().includes(key), `${key} not loaded yet`);
    assert.equal(store.peek('replaced')?.key, 'replaced', 'read from the database');
    // The last holder the load knows of lets the chunk go: a row not loaded yet may hold it too.
    assert.equal(await store.delete('shared-a'), true);
    const fresh = randomBytes(3000);
    await store.put('replaced', [fresh], { size: fresh.length });
    // Written and deleted while it loads: its chunk is let go then, and goes once the load is over.
    await store.put('temporary', [randomBytes(PACKED_CHUNK_BYTES + 1)]);
    assert.equal(await store.delete('temporary'), true);
    bodies.delete('shared-a');
    bodies.set('replaced', fresh);
    await store.loaded();
    assert.equal(store.stats().indexLoaded, true);
    assert.deepEqual(store.keys().sort(), [...bodies.keys()].sort(), 'a key deleted meanwhile stays deleted');
    for (const [key, body] of bodies) assert.deepEqual(await readAll(store, key), body, key);
    await store.flush();
    assert.equal(rowsIn('chunks'), bodies.size);
    assert.deepEqual(
      await files(join(dir, 'chunks')),
      [],
      'chunks let go while it loaded went once it was over',
    );
    assert.deepEqual(corrupt, []);
    await store.close();
    const again = await open();
    assert.deepEqual(again.keys().sort(), [...bodies.keys()].sort());
  });

  it('closes while its index loads: a key not loaded is then absent, and a chunk let go then stays for the row not loaded', async () => {
    const shared = randomBytes(PACKED_CHUNK_BYTES + 1); // a file
    const bodies = new Map([['old', shared]]);
    for (let i = 0; i < 20; i++) bodies.set(`k${i}`, randomBytes(100));
    bodies.set('new', shared);
    await storeInOrder(bodies);
    const store = await open({ loadRowsPerTurn: 1 });
    assert.ok(store.keys().includes('new') && !store.keys().includes('old'));
    const reader = store.openRead('new')!; // in flight at shutdown
    assert.equal(await store.delete('new'), true);
    const closing = store.close();
    await new Promise((resolve) => setImmediate(resolve)); // the load sees the close and stops
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(store.lookup('k0'), undefined, 'nothing is read from the database once closed');
    reader.release(); // its chunk is the one 'old' holds
    await closing;
    const again = await open();
    assert.deepEqual(await readAll(again, 'old'), shared);
    await again.close();
  });

  it('goes on as while loading after its index load fails part way: reads keys from the database, removes no chunk, evicts nothing on a full disk', async () => {
    const shared = randomBytes(PACKED_CHUNK_BYTES + 1);
    const bodies = new Map([['old', shared]]);
    for (let i = 0; i < 20; i++) bodies.set(`k${i}`, randomBytes(100));
    bodies.set('boom', randomBytes(100));
    bodies.set('new', shared);
    await storeInOrder(bodies);
    const errors: unknown[] = [];
    const store = await open({
      loadRowsPerTurn: 1,
      isKey: (key) => (key === 'boom' ? assert.fail('a bug met by the load') : isKey(key)),
      onBackgroundError: (error) => errors.push(error),
    });
    await store.loaded();
    assert.equal(store.stats().indexLoaded, false);
    assert.match(String(errors[0]), /stopped loading/);
    assert.ok(!store.keys().includes('k0') && store.peek('k0'), 'a key not loaded is read from the database');
    assert.equal(await store.delete('new'), true); // its chunk is the one 'old' holds, not loaded
    const write: ChunkFiles['write'] = Reflect.get(ChunkFiles.prototype, 'write');
    ChunkFiles.prototype.write = () => Promise.reject(new InsufficientStorageError('the disk is full'));
    try {
      await assert.rejects(
        store.put('more', [randomBytes(PACKED_CHUNK_BYTES + 1)]),
        InsufficientStorageError,
      );
    } finally {
      ChunkFiles.prototype.write = write;
    }
    assert.deepEqual(
      removed.filter((r) => r.endsWith(':evicted')),
      [],
      'nothing evicted: no chunk would be removed',
    );
    await store.close();
    const again = await open();
    assert.deepEqual(await readAll(again, 'old'), shared);
    await again.close();
  });

  it('makes room on a full disk while its index loads: the chunks it evicts go once the load is over', async () => {
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 200; i++) bodies.set(`small${i}`, randomBytes(100)); // loaded last
    for (let i = 0; i < 12; i++) bodies.set(`file${i}`, randomBytes(PACKED_CHUNK_BYTES + 1));
    await storeInOrder(bodies);
    const store = await open({ loadRowsPerTurn: 1 });
    while (store.stats().entries < 12) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(store.stats().indexLoaded, false);
    // Another tenant took the disk: room for the twelve chunk files there are, no more.
    const write: ChunkFiles['write'] = Reflect.get(ChunkFiles.prototype, 'write');
    ChunkFiles.prototype.write = function (this: ChunkFiles, digest, data) {
      const held = readdirSync(join(dir, 'chunks'), { recursive: true, withFileTypes: true });
      if (held.filter((e) => e.isFile()).length >= 12)
        return Promise.reject(new InsufficientStorageError('the disk is full'));
      return write.call(this, digest, data);
    };
    try {
      await store.put('new', [randomBytes(PACKED_CHUNK_BYTES + 1)]);
    } finally {
      ChunkFiles.prototype.write = write;
    }
    assert.ok(removed.some((r) => r.endsWith(':evicted')));
    assert.ok(store.holds('new'));
    await store.close();
  });

  it('remembers nothing of keys it never had that clients ask for while its index loads', async () => {
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 20; i++) bodies.set(`k${i}`, randomBytes(100));
    bodies.set('boom', randomBytes(100));
    bodies.set('newest', randomBytes(100)); // the first row, read by open: fine
    await storeInOrder(bodies);
    // A load that failed part way: the store stays as while loading for good (the worst case).
    const store = await open({
      loadRowsPerTurn: 1,
      isKey: (key) => (key === 'boom' ? assert.fail('a bug met by the load') : isKey(key)),
      onBackgroundError: () => undefined,
    });
    await store.loaded();
    assert.equal(store.stats().indexLoaded, false);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage().heapUsed;
    const prefix = 'x'.repeat(500);
    for (let i = 0; i < 50_000; i++) assert.equal(store.lookup(`${prefix}${i}`), undefined);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    // Remembered, 50,000 keys of 505 characters would hold about 27 MB.
    assert.ok(grown < 8 * MiB, `the heap grew by ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(store.peek('k0'), 'a key it has is still read from the database');
    await store.close();
  });

  it('refuses a version whose creation time the database cannot keep, instead of acknowledging a write a restart loses', async () => {
    const store = await open();
    const data = randomBytes(100);
    const lease = store.newLease();
    const digest = await store.putChunk(lease, data);
    const fields = { key: 'a', size: 100, chunkSize: chunkSizeFor(100), chunks: [digest] };
    await assert.rejects(store.commit(lease, { ...fields, createdAtMs: 2 ** 60 }), StaleVersionError);
    await store.commit(lease, { ...fields, createdAtMs: Number.MAX_SAFE_INTEGER }); // a peer's, the last there is
    lease.release();
    // A newer version here would be 2^53: the next start would read it as damage.
    await assert.rejects(store.put('a', [randomBytes(100)], { size: 100 }), StaleVersionError);
    assert.deepEqual(await readAll(store, 'a'), data);
    await store.close();
    const again = await open();
    assert.deepEqual(await readAll(again, 'a'), data);
  });

  it('checks again, once its index has loaded, a chunk found damaged while it loaded: an object loaded after it goes too', async () => {
    const shared = randomBytes(1000);
    const bodies = new Map([['late', shared]]);
    for (let i = 0; i < 50; i++) bodies.set(`k${i}`, randomBytes(1000));
    bodies.set('early', shared);
    await storeInOrder(bodies);
    withDb((db) => {
      const digest = Buffer.from(digestOf(shared), 'hex');
      const rotten = Buffer.from(shared);
      rotten[10]! ^= 1;
      db.prepare('UPDATE chunks SET data = ? WHERE digest = ?').run(rotten, digest);
    });
    const store = await open({ loadRowsPerTurn: 1 });
    assert.ok(store.keys().includes('early') && !store.keys().includes('late'));
    await assert.rejects(readAll(store, 'early'), IntegrityError);
    await store.loaded();
    assert.ok(!store.keys().includes('late'), 'dropped: its chunk is the damaged one');
    assert.deepEqual(removed.sort(), ['early:corrupt', 'late:corrupt']);
    assert.equal(store.keys().length, 50);
  });

  it('checks the whole database at the next start after damage was met while running, and sets it aside', async () => {
    const store = await open();
    // Objects of two chunks, the second small (kept in the database): a start looks a one-chunk
    // object's chunk up by digest, but not these.
    const size = 4 * MiB + 1000;
    for (let i = 0; i < 3; i++) await store.put(`k/${i}`, [randomBytes(size)], { size });
    const some = store.peek('k/1')!.chunks[1]!;
    await store.close();
    // Damage to the digest index only: a start reads the tables, not every index page.
    const { rootpage } = withDb(
      (db) =>
        db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_chunks_1'").get() as {
          rootpage: number;
        },
    );
    const file = await openFile(join(dir, DB_FILE), 'r+');
    try {
      await file.write(randomBytes(16384), 0, 16384, 16384 * (rootpage - 1));
    } finally {
      await file.close();
    }
    const running = await open();
    assert.equal(running.keys().length, 3, 'not found at start');
    await assert.rejects(running.readChunk(some), IntegrityError); // met while running: never served
    await running.close();
    const errors: unknown[] = [];
    const next = await open({ onBackgroundError: (error) => errors.push(error) });
    assert.match(String(errors[0]), /could not be read: moved to index\.db\.damaged/);
    assert.deepEqual(next.keys(), []);
  });
});
