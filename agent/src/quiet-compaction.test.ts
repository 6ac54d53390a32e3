import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { runInNewContext } from 'node:vm';
import { compactWhenQuiet, type QuietCompactionOptions } from './quiet-compaction.ts';

const PERIOD_MS = 40;
const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Keeps the event loop busy (spinning 30 ms of every 35) for `ms`. */
async function busyFor(ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const spinUntil = performance.now() + 30;
    while (performance.now() < spinUntil);
    await wait(5);
  }
}

type Compaction = Parameters<QuietCompactionOptions['onCompacted']>[0];

/**
 * compactWhenQuiet with `options` over quick defaults (40 ms periods, one quiet period, no growth,
 * spacing or heap bound), stopped when the test ends: its compactions, and the first one awaited.
 */
function watch(t: TestContext, options: Partial<QuietCompactionOptions> = {}) {
  const compactions: Compaction[] = [];
  let compacted: (c: Compaction) => void = () => undefined;
  const first = new Promise<Compaction>((resolve) => (compacted = resolve));
  const stop = compactWhenQuiet({
    periodMs: PERIOD_MS,
    quietPeriods: 1,
    maxUtilization: 0.5,
    workDone: () => 0,
    minGrowthBytes: 0,
    minIntervalMs: 0,
    maxHeapBytes: 2 ** 40,
    onCompacted: (c) => {
      compactions.push(c);
      compacted(c);
    },
    onError: (error) => assert.fail(error),
    ...options,
  });
  t.after(stop);
  return { compactions, first };
}

describe('compactWhenQuiet', () => {
  it('compacts once the loop has been quiet for its periods, then not again too soon', async (t) => {
    const { compactions, first } = watch(t, { quietPeriods: 2, minIntervalMs: 60_000 });
    const compaction = await first;
    assert.ok(compaction.rssAfter > 0 && compaction.ms >= 0);
    // Quiet for many more periods: too soon after the last, so no second one.
    await wait(10 * PERIOD_MS);
    assert.equal(compactions.length, 1);
  });

  it('compacts again only once RSS has grown by its threshold', async (t) => {
    const { compactions, first } = watch(t, { minGrowthBytes: 2 ** 40 }); // more than RSS will grow
    await first;
    await wait(10 * PERIOD_MS);
    assert.equal(compactions.length, 1);
  });

  it('compacts once at once with atStart, and the next one only its interval after that one', async (t) => {
    const { compactions } = watch(t, { atStart: true, minIntervalMs: 60_000 });
    assert.equal(compactions.length, 1, 'before any period');
    // Quiet for many periods, but within the interval of the one at start.
    await wait(10 * PERIOD_MS);
    assert.equal(compactions.length, 1);
    const without = watch(t, { quietPeriods: 1000 });
    assert.equal(without.compactions.length, 0, 'none at once without atStart');
  });

  it('does not compact at start with more of the heap in use than it allows', (t) => {
    const { compactions } = watch(t, { atStart: true, quietPeriods: 1000, maxHeapBytes: 1024 });
    assert.equal(compactions.length, 0);
  });

  it('never compacts while work is done, however little', async (t) => {
    let work = 0;
    // A request every period: light load, an idle loop.
    const { compactions } = watch(t, { quietPeriods: 2, workDone: () => work++ });
    await wait(20 * PERIOD_MS);
    assert.equal(compactions.length, 0);
    assert.ok(work >= 5, 'it looked');
  });

  it('never compacts with more of the heap in use than it allows (the pause grows with it)', async (t) => {
    const { compactions } = watch(t, { maxHeapBytes: 1024 }); // always less than in use
    await wait(10 * PERIOD_MS);
    assert.equal(compactions.length, 0);
  });

  it("sets --expose-gc back once it has `gc` (the flag changes V8's hash: no code cache for built-ins)", async (t) => {
    await watch(t).first;
    assert.equal(runInNewContext('typeof gc'), 'undefined', 'a context made after it has no `gc`');
  });

  it('never compacts while the loop is busy', async (t) => {
    const { compactions } = watch(t, { quietPeriods: 2 });
    await busyFor(20 * PERIOD_MS);
    assert.equal(compactions.length, 0, 'busy: none');
  });

  it('gives back what a burst left (RSS lower after than before)', async (t) => {
    // A burst that held a million small objects (old space, tens of MB), then let them go: V8 keeps
    // their pages until a collection that gives them back.
    let keep: { i: number; s: string }[] = [];
    for (let i = 0; i < 1_000_000; i++) keep.push({ i, s: `k${i}` });
    keep = [];
    const result = await watch(t, { maxUtilization: 0.9 }).first;
    assert.equal(keep.length, 0);
    const MiB = 2 ** 20;
    assert.ok(
      result.rssAfter < result.rssBefore - 16 * MiB,
      `RSS ${Math.round(result.rssBefore / MiB)} -> ${Math.round(result.rssAfter / MiB)} MiB`,
    );
  });
});
