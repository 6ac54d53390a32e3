import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runInNewContext } from 'node:vm';
import { compactWhenQuiet } from './quiet-compaction.ts';

const PERIOD_MS = 40;

/** Keeps the event loop busy (spinning 30 ms of every 35) for `ms`. */
async function busyFor(ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const spinUntil = performance.now() + 30;
    while (performance.now() < spinUntil);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('compactWhenQuiet', () => {
  it('compacts once the loop has been quiet for its periods, then not again too soon', async () => {
    const compactions: { rssBefore: number; rssAfter: number; ms: number }[] = [];
    let first: () => void = () => undefined;
    const compacted = new Promise<void>((resolve) => (first = resolve));
    const stop = compactWhenQuiet({
      periodMs: PERIOD_MS,
      quietPeriods: 2,
      maxUtilization: 0.5,
      workDone: () => 0,
      minGrowthBytes: 0,
      minIntervalMs: 60_000, // not again within the test
      maxHeapBytes: 2 ** 40,
      onCompacted: (result) => {
        compactions.push(result);
        first();
      },
      onError: (error) => assert.fail(error),
    });
    try {
      await compacted;
      assert.equal(compactions.length, 1);
      assert.ok(compactions[0]!.rssAfter > 0 && compactions[0]!.ms >= 0);
      // Quiet for many more periods: too soon after the last, so no second one.
      await new Promise((resolve) => setTimeout(resolve, 10 * PERIOD_MS));
      assert.equal(compactions.length, 1);
    } finally {
      stop();
    }
  });

  it('compacts again only once RSS has grown by its threshold', async () => {
    let compactions = 0;
    let first: () => void = () => undefined;
    const compacted = new Promise<void>((resolve) => (first = resolve));
    const stop = compactWhenQuiet({
      periodMs: PERIOD_MS,
      quietPeriods: 1,
      maxUtilization: 0.5,
      workDone: () => 0,
      minGrowthBytes: 2 ** 40, // more than RSS will ever grow here
      minIntervalMs: 0,
      maxHeapBytes: 2 ** 40,
      onCompacted: () => {
        compactions++;
        first();
      },
      onError: (error) => assert.fail(error),
    });
    try {
      await compacted;
      await new Promise((resolve) => setTimeout(resolve, 10 * PERIOD_MS));
      assert.equal(compactions, 1);
    } finally {
      stop();
    }
  });

  it('never compacts while work is done, however little', async () => {
    let compactions = 0;
    let work = 0;
    const stop = compactWhenQuiet({
      periodMs: PERIOD_MS,
      quietPeriods: 2,
      maxUtilization: 0.5,
      workDone: () => work++, // a request every period: light load, an idle loop
      minGrowthBytes: 0,
      minIntervalMs: 0,
      maxHeapBytes: 2 ** 40,
      onCompacted: () => compactions++,
      onError: (error) => assert.fail(error),
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 20 * PERIOD_MS));
      assert.equal(compactions, 0);
      assert.ok(work >= 5, 'it looked');
    } finally {
      stop();
    }
  });

  it('never compacts with more of the heap in use than it allows (the pause grows with it)', async () => {
    let compactions = 0;
    const stop = compactWhenQuiet({
      periodMs: PERIOD_MS,
      quietPeriods: 1,
      maxUtilization: 0.9,
      workDone: () => 0,
      minGrowthBytes: 0,
      minIntervalMs: 0,
      maxHeapBytes: 1024, // always less than in use
      onCompacted: () => compactions++,
      onError: (error) => assert.fail(error),
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 10 * PERIOD_MS));
      assert.equal(compactions, 0);
    } finally {
      stop();
    }
  });

  it("sets --expose-gc back once it has `gc` (the flag changes V8's hash: no code cache for built-ins)", () => {
    // The tests before compacted in this process: a context made now does not get `gc`.
    assert.equal(runInNewContext('typeof gc'), 'undefined');
  });

  it('never compacts while the loop is busy', async () => {
    let compactions = 0;
    const stop = compactWhenQuiet({
      periodMs: PERIOD_MS,
      quietPeriods: 2,
      maxUtilization: 0.5,
      workDone: () => 0,
      minGrowthBytes: 0,
      minIntervalMs: 0,
      maxHeapBytes: 2 ** 40,
      onCompacted: () => compactions++,
      onError: (error) => assert.fail(error),
    });
    try {
      await busyFor(20 * PERIOD_MS);
      assert.equal(compactions, 0, 'busy: none');
    } finally {
      stop();
    }
  });

  it('gives back what a burst left (RSS lower after than before)', async () => {
    // A burst that held a million small objects (old space, tens of MB), then let them go: V8 keeps
    // their pages until a collection that gives them back.
    let keep: { i: number; s: string }[] = [];
    for (let i = 0; i < 1_000_000; i++) keep.push({ i, s: `k${i}` });
    keep = [];
    const result = await new Promise<{ rssBefore: number; rssAfter: number }>((resolve) => {
      const stop = compactWhenQuiet({
        periodMs: PERIOD_MS,
        quietPeriods: 1,
        maxUtilization: 0.9,
        workDone: () => 0,
        minGrowthBytes: 0,
        minIntervalMs: 0,
        maxHeapBytes: 2 ** 40,
        onCompacted: (r) => {
          stop();
          resolve(r);
        },
        onError: (error) => assert.fail(error),
      });
    });
    assert.equal(keep.length, 0);
    const MiB = 2 ** 20;
    assert.ok(
      result.rssAfter < result.rssBefore - 16 * MiB,
      `RSS ${Math.round(result.rssBefore / MiB)} -> ${Math.round(result.rssAfter / MiB)} MiB`,
    );
  });
});
