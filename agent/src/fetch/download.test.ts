import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chunkLength, chunkSizeFor, digestOf, rootDigest } from '../cache/chunking.ts';
import type { Manifest } from '../cache/manifest.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import type { HopClass } from '../domain.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import {
  PeerBusyError,
  PeerError,
  PeerRefusedError,
  type PeerTransport,
} from '../transport/peer-transport.ts';
import { stubTransport } from '../transport/stub-transport.ts';
import { PeerFetchError } from './download.ts';
import { PeerFetcher } from './peer-fetcher.ts';
import { headOf } from './swarm.ts';

const MiB = 2 ** 20;
const data = randomBytes(16 * MiB); // 4 chunks of 4 MiB
const chunkSize = chunkSizeFor(data.length);
const chunks = Array.from({ length: 4 }, (_, i) =>
  data.subarray(i * chunkSize, i * chunkSize + chunkLength(data.length, chunkSize, i)),
);
const manifest: Manifest = {
  key: 'movie',
  size: data.length,
  chunkSize,
  chunks: chunks.map((c) => digestOf(c)),
  root: rootDigest(
    data.length,
    chunkSize,
    chunks.map((c) => digestOf(c)),
  ),
  createdAtMs: 1,
};

/**
 * A holder of the whole object that serves chunks (optionally refusing the first `busy` calls as
 * busy, and failing the first `failing` ones).
 */
function holder(
  id: string,
  opts: { busy?: number; failing?: number; refusing?: boolean; stalling?: boolean } = {},
) {
  const served: number[] = [];
  const calls = { count: 0, cancelled: 0 };
  let busy = opts.busy ?? 0;
  let failing = opts.failing ?? 0;
  const transport = stubTransport(id, `${id}:1`, {
    async *fetchChunks(digests, _lengths, signal) {
      calls.count++;
      await new Promise((r) => setTimeout(r, 5)); // a holder takes a moment to answer, as a real one does
      if (opts.stalling) {
        // Keeps the call open and sends nothing, as a holder that only sends heartbeats does (a real
        // transport allows that for up to a minute a chunk), until the caller gives up on the call.
        await new Promise((resolve) => signal?.addEventListener('abort', resolve, { once: true }));
        calls.cancelled++;
        throw new PeerError(id, 'FetchChunks cancelled');
      }
      if (busy-- > 0) throw new PeerBusyError(id, 'busy');
      if (failing-- > 0) throw new PeerError(id, 'FetchChunks stalled: nothing for 1000 ms');
      if (opts.refusing) throw new PeerRefusedError(id, 5, 'FetchChunks refused: NOT_FOUND: no chunk');
      for (const d of digests) {
        const index = manifest.chunks.indexOf(d);
        served.push(index);
        yield { data: Buffer.from(chunks[index]!) };
      }
    },
    watch: async function* () {
      await Promise.resolve();
      yield { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...manifest } };
    },
  });
  return { transport, served, calls };
}

describe('Download (chunks from several holders)', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-download-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function download(holders: PeerTransport[], classes: Record<string, HopClass> = {}) {
    const store = await ObjectStore.open({
      dir: join(dir, String(n++)),
      maxBytes: 64 * MiB,
      memoryBytes: 0,
      maxObjectBytes: 64 * MiB,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    const fetcher = new PeerFetcher({
      store,
      peers: () => holders,
      hopClassOf: (p) => classes[p.id] ?? 'zone',
      counters: new Counters(),
      logger: createLogger({ level: 'silent', nodeId: 't' }),
      timeoutMs: 1000,
    });
    const source = fetcher.open({ head: headOf(manifest), manifest, holders });
    const parts = [];
    for (let i = 0; i < 4; i++) parts.push(await source.read(i));
    source.close();
    assert.deepEqual(Buffer.concat(parts), data, 'the bytes read are the object');
    for (let i = 0; i < 200 && !store.lookup('movie'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(store.lookup('movie')?.root, manifest.root, 'committed');
  }

  it('pulls from two holders in parallel', async () => {
    const a = holder('a');
    const b = holder('b');
    await download([a.transport, b.transport]);
    assert.ok(
      a.served.length > 0 && b.served.length > 0,
      `both served: ${a.served.join()} / ${b.served.join()}`,
    );
    assert.equal(a.served.length + b.served.length, 4, 'each chunk once');
  });

  it('takes every chunk from the nearer holder when it has them all', async () => {
    const near = holder('near');
    const far = holder('far');
    await download([far.transport, near.transport], { near: 'zone', far: 'remote' });
    assert.deepEqual(far.served, []);
    assert.equal(near.served.length, 4);
  });

  it('asks a holder that failed again later (a stall on a starved node), and gets the chunks from it', async () => {
    const flaky = holder('flaky', { failing: 2 });
    await download([flaky.transport]);
    assert.equal(flaky.served.length, 4);
  });

  it('gives a holder that refuses (no such chunk there) up at once: asking again would get the same', async () => {
    const evicted = holder('evicted', { refusing: true });
    await assert.rejects(download([evicted.transport]), (e) => {
      // Every holder said it holds it no more: evicted everywhere, a miss (404), not a fault (502).
      assert.ok(e instanceof PeerFetchError && e.gone, String(e));
      return true;
    });
    // The planner may have had two requests out at once; neither is asked again.
    assert.ok(evicted.calls.count <= 2, `${evicted.calls.count} requests`);
  });

  it('gives a holder up after three failed requests', async () => {
    const gone = holder('gone', { failing: 3 });
    await assert.rejects(download([gone.transport]), (e) => {
      assert.ok(e instanceof PeerFetchError && !e.gone && /stalled/.test(e.message), String(e));
      return true;
    });
  });

  it(
    "takes a stalling holder's chunks from another once that one has nothing else to do, and ends its calls",
    {
      timeout: 30_000,
    },
    async () => {
      const stalling = holder('stalling', { stalling: true });
      const fast = holder('fast');
      await download([stalling.transport, fast.transport]);
      assert.equal(fast.served.length, 4, 'every chunk from the holder that sends');
      assert.ok(stalling.calls.count > 0, 'the stalling holder was asked');
      assert.equal(stalling.calls.cancelled, stalling.calls.count, 'and every call to it ended');
    },
  );

  it('leaves a busy holder for a moment and gets the chunks anyway', async () => {
    const busy = holder('busy', { busy: 3 });
    await download([busy.transport]);
    assert.equal(busy.served.length, 4);
  });
});
