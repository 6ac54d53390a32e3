import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chunkSizeFor, digestOf, rootDigest } from '../cache/chunking.ts';
import type { ObjectPurgedError } from '../cache/errors.ts';
import { ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import type { Holder } from '../domain.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import type { ManifestAnswer, PeerTransport } from '../transport/peer-transport.ts';
import { stubTransport } from '../transport/stub-transport.ts';
import { PeerFetcher } from './peer-fetcher.ts';
import { ManifestTrustError, StaleSignerError } from '../security/node-signer.ts';

/** The manifest of a one-chunk object `data` under key `k`, made at `createdAtMs`. */
const manifestOf = (data: Buffer, createdAtMs: number) => {
  const chunk = digestOf(data);
  return {
    key: 'k',
    size: data.length,
    chunkSize: chunkSizeFor(data.length),
    chunks: [chunk],
    root: rootDigest(data.length, chunkSizeFor(data.length), [chunk]),
    createdAtMs,
  };
};
const manifest = manifestOf(Buffer.from('hello'), 1);

/** A peer that answers GetManifest as told and records that it was asked. */
function peer(id: string, answer: Omit<ManifestAnswer, 'manifest'> | undefined) {
  const asked: string[] = [];
  const transport = stubTransport(id, `${id}:1`, {
    getManifest: (key) => {
      asked.push(key);
      return Promise.resolve(answer && { manifest, ...answer });
    },
    hold: () => Promise.resolve(),
  });
  return { transport, asked };
}

describe('PeerFetcher.locate', () => {
  let dir: string;
  let store: ObjectStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-fetcher-'));
    store = await ObjectStore.open({
      dir,
      maxBytes: 2 ** 20,
      memoryBytes: 0,
      maxObjectBytes: 2 ** 20,
      fsync: false,
      clock: systemClock,
      isKey,
    });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const fetcher = (opts: {
    peers: PeerTransport[];
    owners?: PeerTransport[];
    members?: PeerTransport[];
    reviveNow?: () => Promise<boolean>;
    fanouts?: { perSecond: number; now: () => number; counters: Counters };
    purgedAt?: (key: string) => number | undefined;
    verify?: () => void;
    outcomes?: string[];
  }) =>
    new PeerFetcher({
      store,
      ...(opts.verify ? { verify: opts.verify } : {}),
      ...(opts.outcomes
        ? { onOutcome: (p: PeerTransport, o: string) => void opts.outcomes!.push(`${p.id}:${o}`) }
        : {}),
      ...(opts.purgedAt ? { purgedAt: opts.purgedAt } : {}),
      ...(opts.fanouts ? { maxFanoutsPerSecond: opts.fanouts.perSecond, now: opts.fanouts.now } : {}),
      peers: () => opts.peers,
      ...(opts.reviveNow ? { reviveNow: opts.reviveNow } : {}),
      owners: () => opts.owners ?? [],
      resolve: (h: Holder) => opts.members?.find((m) => m.id === h.nodeId && m.address === h.grpc),
      rank: (holders) => [...holders].sort((a, b) => (a.id < b.id ? -1 : 1)),
      counters: opts.fanouts?.counters ?? new Counters(),
      logger: createLogger({ level: 'silent', nodeId: 't' }),
      timeoutMs: 1000,
    });

  it('asks every member at most maxFanoutsPerSecond times a second for keys no owner knows', async () => {
    // A client asking for random keys: each miss would be a call to every node of the mesh.
    const owner = peer('owner', undefined);
    const other = peer('other', undefined);
    let now = 0;
    const counters = new Counters();
    const f = fetcher({
      peers: [owner.transport, other.transport],
      owners: [owner.transport],
      fanouts: { perSecond: 3, now: () => now, counters },
    });
    // Keys the owner knows spend nothing of the budget.
    const knowing = peer('knowing', { holds: true, holders: [] });
    const hits = fetcher({
      peers: [knowing.transport, other.transport],
      owners: [knowing.transport],
      fanouts: { perSecond: 3, now: () => now, counters },
    });
    for (let i = 0; i < 10; i++) assert.ok(await hits.locate('k'));
    assert.equal(counters.fanoutsSkipped, 0);
    for (let i = 0; i < 10; i++) assert.equal(await f.locate(`miss-${i}`), undefined);
    assert.equal(owner.asked.length, 10, 'the owner is asked for each');
    assert.equal(other.asked.length, 3, 'everyone else only within the budget');
    assert.equal(counters.fanoutsSkipped, 7);
    now += 1000; // a second later: the budget is back
    await f.locate('miss-10');
    assert.equal(other.asked.length, 4);
    // An owner that cannot answer (down, cut off): a fault, not a miss; everyone is asked, budget or not.
    const down = stubTransport('down', 'down:1', {
      getManifest: () => Promise.reject(new Error('UNAVAILABLE: connection refused')),
    });
    const faulty = fetcher({
      peers: [down, other.transport],
      owners: [down],
      fanouts: { perSecond: 1, now: () => now, counters },
    });
    for (let i = 0; i < 5; i++) await faulty.locate(`after-a-fault-${i}`);
    assert.equal(other.asked.length, 9, 'asked each time');
  });

  it('asks the owners first and no one else when they know holders', async () => {
    const h2 = peer('h2', { holds: true, holders: [] });
    const h1 = peer('h1', { holds: true, holders: [] });
    const owner = peer('owner', {
      holds: false,
      holders: [
        { nodeId: 'h2', grpc: 'h2:1' },
        { nodeId: 'h1', grpc: 'h1:1' },
        { nodeId: 'stranger', grpc: 'x:1' },
      ],
    });
    const empty = peer('empty', undefined);
    const bystander = peer('bystander', { holds: true, holders: [] });
    const f = fetcher({
      peers: [owner.transport, empty.transport, bystander.transport, h1.transport, h2.transport],
      owners: [owner.transport, empty.transport],
      members: [h1.transport, h2.transport],
    });
    const located = await f.locate('k');
    assert.deepEqual(
      located?.holders.map((h) => h.id),
      ['h1', 'h2'],
      'named members resolved and ranked; strangers dropped',
    );
    assert.deepEqual(bystander.asked, [], 'one hop: nobody but the owners was asked');
    assert.deepEqual(h1.asked, []);
  });

  it('counts a manifest it refuses against the holder by why: a lie, a failed call, or a signer it no longer trusts (nothing)', async () => {
    for (const [error, expected] of [
      [new ManifestTrustError('forged'), ['owner:bad-manifest']],
      [new Error('garbled'), ['owner:failed']],
      [new StaleSignerError('signed under the CA replaced'), []],
    ] as const) {
      const owner = peer('owner', { holds: true, holders: [] });
      const outcomes: string[] = [];
      const f = fetcher({
        peers: [owner.transport],
        owners: [owner.transport],
        verify: () => {
          throw error;
        },
        outcomes,
      });
      assert.equal(await f.locate('k'), undefined);
      assert.deepEqual(outcomes, expected, error.message);
    }
  });

  it('falls back to everyone when no owner knows the key', async () => {
    const owner = peer('owner', undefined);
    const holder = peer('holder', { holds: true, holders: [] });
    const f = fetcher({ peers: [owner.transport, holder.transport], owners: [owner.transport] });
    assert.deepEqual(
      (await f.locate('k'))?.holders.map((h) => h.id),
      ['holder'],
    );
    assert.deepEqual(owner.asked, ['k'], 'the owner was asked once, not again in the fallback');
    assert.equal(await fetcher({ peers: [owner.transport] }).locate('k'), undefined);
  });

  it('asks again when nobody alive knows the key but a member counted dead answers now', async () => {
    const owner = peer('owner', undefined);
    const back = peer('back', { holds: true, holders: [] }); // dead in this node's view, until revived
    const peers = [owner.transport];
    let tries = 0;
    const f = fetcher({
      peers,
      owners: [owner.transport],
      reviveNow: () => {
        tries++;
        peers.push(back.transport); // it answered: alive again
        return Promise.resolve(true);
      },
    });
    assert.deepEqual(
      (await f.locate('k'))?.holders.map((h) => h.id),
      ['back'],
    );
    assert.equal(tries, 1);
    // When no member comes back, the miss stands (and is not asked again).
    const none = peer('none', undefined);
    let asked = 0;
    const g = fetcher({
      peers: [none.transport],
      reviveNow: () => (asked++, Promise.resolve(false)),
    });
    assert.equal(await g.locate('k'), undefined);
    assert.deepEqual([asked, none.asked.length], [1, 1]);
  });

  it('fetches no version its own tombstone covers, whoever offers it, and tells a copy’s caller', async () => {
    // A node back from away offers the copy it kept (created at 1) before it hears of the purge.
    let fetched = 0;
    const stale = stubTransport('stale', 'stale:1', {
      getManifest: () => Promise.resolve({ manifest, holds: true, holders: [] }),
      fetchChunks: () => {
        fetched++;
        throw new Error('not to be asked');
      },
    });
    const purged = fetcher({ peers: [stale], owners: [stale], purgedAt: () => 1 });
    assert.equal(await purged.locate('k'), undefined, 'a read does not get it');
    await assert.rejects(
      purged.copy('k', manifest.root, [stale]),
      (error: Error) => error.name === 'ObjectPurgedError' && (error as ObjectPurgedError).purgedAtMs === 1,
      'a copy is refused as purged, before any download',
    );
    assert.equal(fetched, 0);
    // A version written after the purge is fetched; and a tombstone counts only against versions
    // offered: owners that know nothing still leave the others to be asked.
    const newer = fetcher({ peers: [stale], owners: [stale], purgedAt: () => 0 });
    assert.deepEqual(
      (await newer.locate('k'))?.holders.map((h) => h.id),
      ['stale'],
    );
    const owner = peer('owner', undefined);
    const elsewhere = fetcher({
      peers: [owner.transport, stale],
      owners: [owner.transport],
      purgedAt: () => 0,
    });
    assert.deepEqual(
      (await elsewhere.locate('k'))?.holders.map((h) => h.id),
      ['stale'],
    );
    // An owner knows of a version made since the purge but names no holder this node can use: the
    // others are still asked (the tombstone does not end the search), and a holder found.
    const newer10 = { ...manifest, createdAtMs: 10 };
    const unhelpful = stubTransport('unhelpful', 'unhelpful:1', {
      getManifest: () => Promise.resolve({ manifest: newer10, holds: false, holders: [] }),
    });
    const holding = stubTransport('holding', 'holding:1', {
      getManifest: () => Promise.resolve({ manifest: newer10, holds: true, holders: [] }),
    });
    const afterPurge = fetcher({ peers: [unhelpful, holding], owners: [unhelpful], purgedAt: () => 5 });
    assert.deepEqual(
      (await afterPurge.locate('k'))?.holders.map((h) => h.id),
      ['holding'],
    );
    // A copy of a version the tombstone does not cover is no "purged" answer, whatever else fails.
    await assert.rejects(
      afterPurge.copy('k', manifest.root, [unhelpful]),
      (error: Error) => error.name === 'PeerFetchError',
    );
    const saysPurged = stubTransport('says', 'says:1', {
      getManifest: () => Promise.resolve({ manifest: undefined, holds: false, holders: [], purgedAtMs: 20 }),
    });
    await assert.rejects(
      afterPurge.copy('k', manifest.root, [saysPurged]),
      (error: Error) => error.name === 'PeerFetchError',
    );
  });

  it('under its tombstone, no crafted createdAtMs makes a covered offer win or hides the version made since', async () => {
    const P = Date.now() - 60_000;
    const offer = (id: string, m: unknown) =>
      stubTransport(id, `${id}:1`, {
        getManifest: () => Promise.resolve({ manifest: m, holds: true, holders: [] }),
      });
    const crafted: [string, unknown][] = [
      ['negative', { ...manifest, createdAtMs: -1 }],
      ['zero', { ...manifest, createdAtMs: 0 }],
      ['nan', { ...manifest, createdAtMs: Number.NaN }],
      ['unsafe', { ...manifest, createdAtMs: 2 ** 60 }],
      ['future', { ...manifest, createdAtMs: Date.now() + 3_600_000 }],
      ['at-purge', { ...manifest, createdAtMs: P }],
      ['other-key', { ...manifest, key: 'other', createdAtMs: P + 10 }],
      ['string', { ...manifest, createdAtMs: `${P + 10}` }],
    ];
    for (const [id, m] of crafted) {
      const only = [offer(id, m)];
      assert.equal(
        await fetcher({ peers: only, owners: only, purgedAt: () => P }).locate('k'),
        undefined,
        id,
      );
    }
    const legit = manifestOf(Buffer.from('world!'), P + 1);
    // Every crafted offer, and the legitimate root offered first re-dated before the purge.
    const peers = [
      ...crafted.map(([id, m]) => offer(id, m)),
      offer('redated', { ...legit, createdAtMs: P - 5 }),
      offer('honest', legit),
    ];
    const found = await fetcher({ peers, owners: peers, purgedAt: () => P }).locate('k');
    assert.deepEqual([found?.manifest?.createdAtMs, found?.holders.map((h) => h.id)], [P + 1, ['honest']]);
  });
});
