import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzSetting } from '../../harness/fuzz.ts';
import { FakeClock } from '../time/clock.ts';
import { COMPACT_AFTER, Tombstones } from './tombstones.ts';

/** Cases; the seed is fixed (unless FUZZ_SEED is set), so every run tries the same sequences. */
const RUNS = fuzzSetting('TOMBSTONE_RUNS', 500, 1);
const SEED = fuzzSetting('FUZZ_SEED', 20_261_204);
const TTL = 1000;
const CAP = 5;
/** Some of digits only: a snapshot is a JSON object, and a parsed object lists those keys first. */
const KEYS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', '7', '10', '0'];
/** Three nodes' certificates (base64; their content is not read), and `undefined` for no signature. */
const CERTIFICATES = ['node-a', 'node-b', 'node-c'].map((n) =>
  Buffer.from(`certificate of ${n}`).toString('base64'),
);

type Signature = { certificate: string; value: string; by?: string };
type Tombstone = { key: string; at: number; signature?: Signature };
type Op =
  | { kind: 'record'; key: string; offset: number; certificate: string | undefined; by: string | undefined }
  | { kind: 'again'; nth: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'purgedAt'; key: string }
  | { kind: 'reopen' }
  | { kind: 'crash' };

const signerOf = (t: Tombstone) => t.signature?.certificate ?? '';

/** How often the cases reached each path of the policy (over all runs): each must be reached. */
const seen = {
  pushedOut: 0,
  tie: 0,
  expiredFirst: 0,
  ignored: 0,
  lazyDrop: 0,
  replayedOut: 0,
  snapshot: 0,
};

/**
 * The policy, naively: the tombstones held (expired ones too, until something drops them) in a list,
 * oldest recorded first, and the files as lists of records. Counts are scans. `changed` says when
 * each signer's count last changed: of signers holding the most, the one whose count changed first
 * has held that many the longest, and is the one the class's buckets give first.
 */
class Model {
  held: Tombstone[] = [];
  changed = new Map<string, number>();
  tick = 0;
  snapshot: Tombstone[] = [];
  /** Purges, and tombstones the cap pushed out (`out`). */
  journal: (Tombstone | { key: string; at: number; out: true })[] = [];
  torn = false;
  rewrite = false;
  journalRecords = 0;
  snapshotEntries = 0;
  readonly clock: FakeClock;
  constructor(clock: FakeClock) {
    this.clock = clock;
  }

  expired(t: Tombstone): boolean {
    return t.at + TTL <= this.clock.now();
  }
  find(key: string): Tombstone | undefined {
    return this.held.find((t) => t.key === key);
  }
  /** The live tombstones: key to time. */
  live(): Map<string, number> {
    return new Map(this.held.filter((t) => !this.expired(t)).map((t) => [t.key, t.at]));
  }
  remove(key: string): void {
    const i = this.held.findIndex((t) => t.key === key);
    if (i < 0) return;
    const [t] = this.held.splice(i, 1);
    this.changed.set(signerOf(t!), ++this.tick);
  }
  set(t: Tombstone): void {
    this.remove(t.key);
    this.held.push(t);
    this.changed.set(signerOf(t), ++this.tick);
  }
  sweep(): void {
    for (const t of [...this.held]) if (this.expired(t)) this.remove(t.key);
  }
  /** Returns the tombstones the cap pushed out (not the expired ones dropped). */
  trim(): Tombstone[] {
    const out: Tombstone[] = [];
    if (this.held.length <= CAP) return out;
    const before = this.held.length;
    this.sweep();
    if (this.held.length < before) seen.expiredFirst++;
    while (this.held.length > CAP) {
      const count = (s: string) => this.held.filter((t) => signerOf(t) === s).length;
      const signers = [...new Set(this.held.map(signerOf))];
      const most = Math.max(...signers.map(count));
      const tied = signers.filter((s) => count(s) === most);
      if (tied.length > 1) seen.tie++;
      const signer = tied.reduce((a, b) => (this.changed.get(a)! <= this.changed.get(b)! ? a : b));
      const oldest = this.held.find((t) => signerOf(t) === signer)!;
      out.push(oldest);
      this.remove(oldest.key);
      seen.pushedOut++;
    }
    return out;
  }
  record(t: Tombstone): void {
    // Expired already (a purge heard long after): nothing to keep, nothing written.
    if (this.expired(t) || (this.find(t.key)?.at ?? -1) >= t.at) {
      seen.ignored++;
      return;
    }
    this.set(t);
    const out = this.trim();
    const records = this.journalRecords + 1 + out.length;
    if (this.rewrite || records > Math.max(COMPACT_AFTER, this.snapshotEntries)) {
      this.sweep();
      this.snapshot = [...this.held];
      seen.snapshot++;
      this.journal = [];
      this.torn = false;
      this.journalRecords = 0;
      this.snapshotEntries = this.held.length;
      this.rewrite = false;
    } else {
      this.journal.push(t, ...out.map(({ key, at }) => ({ key, at, out: true as const })));
      this.journalRecords = records;
    }
  }
  purgedAt(key: string): number | undefined {
    const t = this.find(key);
    if (t && this.expired(t)) {
      this.remove(key);
      seen.lazyDrop++;
    }
    return t && !this.expired(t) ? t.at : undefined;
  }
  /**
   * A new instance over the files: the snapshot, then the journal, expired records skipped, a record
   * older than the one held skipped (an equal one moves its key to the newest), a tombstone pushed
   * out pushed out again; capped once at the end. Exactly the live tombstones there were.
   */
  reopen(): void {
    this.held = [];
    this.changed.clear();
    const add = (t: Tombstone) => {
      if (this.expired(t) || (this.find(t.key)?.at ?? -1) > t.at) return;
      // What the files give back: an empty `by` is not one.
      const s = t.signature;
      this.set(
        s
          ? { ...t, signature: { certificate: s.certificate, value: s.value, ...(s.by ? { by: s.by } : {}) } }
          : t,
      );
    };
    for (const t of this.snapshot) add(t);
    this.snapshotEntries = this.held.length;
    for (const t of this.journal)
      if (!('out' in t)) add(t);
      else if (this.find(t.key)?.at === t.at) {
        this.remove(t.key);
        seen.replayedOut++;
      }
    this.journalRecords = this.journal.length;
    this.rewrite = this.torn;
    this.trim();
  }
}

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('record' as const),
      key: fc.constantFrom(...KEYS),
      // In steps of 100, so that a key is often purged again at the same time; some already expired.
      offset: fc.integer({ min: -12, max: 3 }).map((n) => n * 100),
      certificate: fc.constantFrom(...CERTIFICATES, undefined),
      by: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
    }),
  },
  // A purge heard before, heard again (the n-th of those recorded so far).
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('again' as const), nth: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.integer({ min: 1, max: 12 }).map((n) => n * 50),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('purgedAt' as const), key: fc.constantFrom(...KEYS) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crash' as const }) },
);

/**
 * The class holds what the model holds, and each live tombstone with its time and signature. Asks
 * nothing of a tombstone the model holds expired: asking drops it, which the model would not do.
 */
function matches(t: Tombstones, model: Model, step: string): void {
  assert.equal(t.size, model.held.length, `${step}: tombstones held`);
  for (const key of KEYS) {
    const held = model.find(key);
    if (held && model.expired(held)) continue;
    assert.equal(t.purgedAt(key), held?.at, `${step}: ${key}`);
    if (held) assert.deepEqual(t.signatureOf(key), held.signature, `${step}: ${key}'s signature`);
  }
}

describe('Tombstones (property)', () => {
  it(`past a cap (${CAP}), drops the expired, then the oldest of the signer holding the most, as a naive model does, running and across restarts`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40, size: 'max' }), async (ops) => {
        const dir = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-prop-'));
        try {
          const clock = new FakeClock(1_000_000);
          const model = new Model(clock);
          let t = await Tombstones.open(dir, clock, TTL, CAP);
          const heard: Tombstone[] = [];
          const record = async (tombstone: Tombstone) => {
            heard.push(tombstone);
            await t.record(tombstone.key, tombstone.at, tombstone.signature);
            model.record(tombstone);
          };
          for (const [i, o] of ops.entries()) {
            const step = `op ${i} (${JSON.stringify(o)})`;
            switch (o.kind) {
              case 'record': {
                const signature =
                  o.certificate === undefined
                    ? undefined
                    : {
                        certificate: o.certificate,
                        value: 'U0lH',
                        ...(o.by === undefined ? {} : { by: o.by }),
                      };
                await record({ key: o.key, at: clock.now() + o.offset, ...(signature ? { signature } : {}) });
                break;
              }
              case 'again':
                if (heard.length > 0) await record(heard[o.nth % heard.length]!);
                break;
              case 'advance':
                clock.advance(o.ms);
                break;
              case 'purgedAt':
                assert.equal(t.purgedAt(o.key), model.purgedAt(o.key), step);
                break;
              case 'reopen':
              case 'crash': {
                if (o.kind === 'crash') {
                  // A write torn by a crash: part of a line at the journal's end.
                  await appendFile(join(dir, 'tombstones.log'), '["torn",10');
                  model.torn = true;
                }
                const before = model.live();
                t = await Tombstones.open(dir, clock, TTL, CAP);
                model.reopen();
                // Exactly the live tombstones there were, each with its time.
                assert.deepEqual(model.live(), before, `${step}: a restart keeps the live tombstones`);
                break;
              }
            }
            matches(t, model, step);
          }
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    for (const [path, times] of Object.entries(seen)) assert.ok(times > 0, `no case reached ${path}`);
  });
});
