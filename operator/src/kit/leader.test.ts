import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CoordinationV1Api, V1Lease } from '@kubernetes/client-node';
import { pino } from 'pino';
import { LeaderElector } from './leader.ts';

/** One Lease in memory with compare-and-swap writes; `slowNextWrite` holds the next replace until released. */
function leaseStore() {
  let lease: V1Lease | undefined;
  let rv = 0;
  let hold: Promise<void> | undefined;
  let letGo = () => {};
  let held = () => {};
  const conflict = () => Object.assign(new Error('conflict'), { code: 409 });
  const api = {
    readNamespacedLease: () =>
      lease
        ? Promise.resolve(structuredClone(lease))
        : Promise.reject(Object.assign(new Error('nf'), { code: 404 })),
    createNamespacedLease: ({ body }: { body: V1Lease }) => {
      if (lease) return Promise.reject(conflict());
      lease = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
      return Promise.resolve(lease);
    },
    replaceNamespacedLease: async ({ body }: { body: V1Lease }) => {
      const gate = hold;
      hold = undefined;
      if (gate) held();
      await gate;
      if (body.metadata?.resourceVersion !== lease?.metadata?.resourceVersion) throw conflict();
      lease = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
      return lease;
    },
  };
  return {
    api: api as unknown as CoordinationV1Api,
    holder: () => lease?.spec?.holderIdentity,
    /** Another replica writes the lease (a new resourceVersion). */
    put(spec: NonNullable<V1Lease['spec']>) {
      lease = { metadata: { name: 'lease', namespace: 'ns', resourceVersion: String(++rv) }, spec };
    },
    /** Every replace from now on hangs until the returned function is called. */
    hangWrites() {
      let resume = () => {};
      const gate = new Promise<void>((r) => (resume = r));
      const replace = api.replaceNamespacedLease;
      api.replaceNamespacedLease = async (args: { body: V1Lease }) => {
        await gate;
        return replace(args);
      };
      return () => resume();
    },
    /** The next replace waits until `letGo` is called; `held` resolves once it is waiting. */
    slowNextWrite() {
      hold = new Promise((r) => (letGo = r));
      return {
        held: new Promise<void>((r) => (held = r)),
        letGo: () => letGo(),
      };
    },
  };
}

/** An elector "me" on `store` (a 3 s lease, a 2 s renew deadline) whose callbacks do nothing. */
function quietElector(
  store: ReturnType<typeof leaseStore>,
  options: { retryPeriodMs: number; now?: () => number },
): LeaderElector {
  return new LeaderElector({
    api: store.api,
    namespace: 'ns',
    name: 'lease',
    identity: 'me',
    leaseDurationMs: 3000,
    renewDeadlineMs: 2000,
    ...options,
    logger: pino({ level: 'silent' }),
    onStartedLeading: () => {},
    onStoppedLeading: () => {},
  });
}

/** An elector on `store` that counts its starts and step-downs (`stepDownThrows`: a callback that throws). */
function electorOn(store: ReturnType<typeof leaseStore>, renewDeadlineMs: number, stepDownThrows = false) {
  const counts = { started: 0, stopped: 0 };
  const elector = new LeaderElector({
    api: store.api,
    namespace: 'ns',
    name: 'lease',
    identity: 'me',
    leaseDurationMs: 3000,
    renewDeadlineMs,
    retryPeriodMs: 20,
    logger: pino({ level: 'silent' }),
    onStartedLeading: () => counts.started++,
    onStoppedLeading: () => {
      counts.stopped++;
      if (stepDownThrows) throw new Error('the step-down callback failed');
    },
  });
  return { elector, counts };
}

describe('leader election', () => {
  it('dates a renewal it sees from when the read answered, not from when it was sent (a slow read)', async () => {
    const store = leaseStore();
    const stamp = new Date(0);
    await store.api.createNamespacedLease({
      namespace: 'ns',
      body: {
        metadata: { name: 'lease' },
        spec: { holderIdentity: 'other', leaseDurationSeconds: 3, renewTime: stamp },
      },
    });
    // The leader "other" renews no more. The first read takes 2.5 s (of the 3 s lease), the second
    // answers at 3.1 s: 0.6 s after the renewal was seen, so the lease has not expired.
    let clock = 0;
    let reads = 0;
    type Read = (args: { name: string; namespace: string }) => Promise<V1Lease>;
    const api = store.api as unknown as { readNamespacedLease: Read };
    const read = api.readNamespacedLease.bind(api);
    api.readNamespacedLease = async (args) => {
      const lease = await read(args);
      reads++;
      if (reads === 1) clock = 2500;
      else if (reads === 2) clock = 3100;
      return lease;
    };
    const elector = quietElector(store, { retryPeriodMs: 1, now: () => clock });
    elector.start();
    try {
      while (reads < 4) await new Promise((r) => setTimeout(r, 1));
      assert.equal(store.holder(), 'other', 'not taken over 0.6 s after the renewal was seen');
      clock = 2500 + 3001; // the lease's duration after it was seen: taken over
      while (store.holder() !== 'me') await new Promise((r) => setTimeout(r, 1));
    } finally {
      elector.close();
    }
  });

  it('a renewal in flight when the lease is released neither keeps the lease nor starts leading again', async () => {
    const store = leaseStore();
    const { elector, counts } = electorOn(store, 2000);
    elector.start();
    while (!elector.leading) await new Promise((r) => setTimeout(r, 5));
    const { held, letGo } = store.slowNextWrite();
    await held; // the next renewal is in flight, held at its write: now shut down
    elector.close();
    const released = elector.release();
    letGo();
    await released;
    assert.equal(store.holder(), '', 'the lease was handed back');
    assert.equal(counts.started, 1, 'leading started once');
    assert.equal(counts.stopped, 0, 'it never stepped down');
    assert.equal(elector.leading, false);
  });

  it('steps down when a lease call hangs past the renew deadline, and ignores its late answer', async () => {
    const store = leaseStore();
    const { elector, counts } = electorOn(store, 300);
    elector.start();
    while (!elector.leading) await new Promise((r) => setTimeout(r, 5));
    const resume = store.hangWrites();
    const deadline = performance.now() + 5000;
    while (counts.stopped === 0) {
      assert.ok(performance.now() < deadline, 'it never stepped down: the hung call held it');
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(elector.leading, false, 'it stepped down instead of waiting on the hung call');
    await elector.release(); // no more attempts of its own
    resume(); // the hung renewals answer now, long after they were given up
    // A window, not an event: nothing should happen in it (the fake answers in microtasks, so 50 ms
    // is ample for a late answer to be acted on, were it acted on).
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(elector.leading, false, 'a late answer did not make it the leader again');
    assert.equal(counts.started, 1);
  });

  it('keeps electing after a step-down callback that throws: it leads again once the lease calls answer', async () => {
    const store = leaseStore();
    const { elector, counts } = electorOn(store, 300, true);
    elector.start();
    try {
      while (!elector.leading) await new Promise((r) => setTimeout(r, 5));
      const resume = store.hangWrites();
      while (counts.stopped === 0) await new Promise((r) => setTimeout(r, 10));
      resume(); // the lease calls answer again: the next tick must come, and take the lease back
      const deadline = performance.now() + 10_000;
      while (!elector.leading) {
        assert.ok(performance.now() < deadline, 'election stopped after the callback threw');
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(counts.started, 2);
    } finally {
      await elector.release();
    }
  });

  /**
   * A standby on a clock of the test's, the lease held by "other" (last renewed at 0). Each read
   * moves the clock on by 500 ms, then calls `onRead` while "other" holds the lease (it may renew
   * it). Returns who held the lease as each read began: [k] is the holder after k reads.
   */
  async function standby(
    reads: number,
    onRead: (store: ReturnType<typeof leaseStore>, clock: number) => void,
  ) {
    const store = leaseStore();
    store.put({ holderIdentity: 'other', leaseDurationSeconds: 3, renewTime: new Date(0) });
    let clock = 0;
    const holders: (string | undefined)[] = [];
    type Read = (args: { name: string; namespace: string }) => Promise<V1Lease>;
    const api = store.api as unknown as { readNamespacedLease: Read };
    const read = api.readNamespacedLease.bind(api);
    api.readNamespacedLease = (args) => {
      holders.push(store.holder());
      clock += 500;
      if (store.holder() === 'other') onRead(store, clock);
      return read(args);
    };
    const elector = quietElector(store, { retryPeriodMs: 1, now: () => clock });
    elector.start();
    try {
      while (holders.length <= reads) await new Promise((r) => setTimeout(r, 1));
    } finally {
      elector.close();
      await elector.release();
    }
    return holders;
  }

  it('a standby leaves a live lease alone, and takes it once unchanged for a whole lease duration', async () => {
    // The standby first sees the renewal at 500 ms (its clock); the k-th read answers at k * 500 ms.
    const holders = await standby(10, () => {});
    for (let k = 2; k <= 7; k++)
      assert.equal(
        holders[k],
        'other',
        `taken at ${k * 500} ms, ${(k - 1) * 500} ms after the renewal was seen`,
      );
    assert.equal(holders[10], 'me', 'taken over once the lease went unrenewed for longer than its duration');
  });

  it('a standby that sees the holder keep renewing never takes over, however long it watches', async () => {
    // "other" renews once a second: 10 s of it, more than three lease durations.
    const holders = await standby(20, (store, clock) => {
      if (clock % 1000 === 0)
        store.put({ holderIdentity: 'other', leaseDurationSeconds: 3, renewTime: new Date(clock) });
    });
    assert.deepEqual(new Set(holders), new Set(['other']), 'a renewing leader was taken over');
  });

  it('a leader that finds the lease held by another replica steps down and leaves it', async () => {
    const store = leaseStore();
    const { elector, counts } = electorOn(store, 2000);
    elector.start();
    try {
      while (!elector.leading) await new Promise((r) => setTimeout(r, 5));
      // Another replica holds it now (it took over while this one was cut off), freshly renewed.
      store.put({ holderIdentity: 'other', leaseDurationSeconds: 3, renewTime: new Date() });
      const deadline = performance.now() + 2000;
      while (elector.leading) {
        assert.ok(performance.now() < deadline, 'still leading beside another holder: two leaders');
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(counts.stopped, 1, 'onStoppedLeading was called');
      assert.equal(store.holder(), 'other', 'the lease was left to its holder');
    } finally {
      await elector.release();
    }
  });

  it('release() hands back only its own lease, never one another replica holds by then', async () => {
    const store = leaseStore();
    // No renewal of its own comes to notice the new holder before release().
    const elector = quietElector(store, { retryPeriodMs: 60_000 });
    elector.start();
    while (!elector.leading) await new Promise((r) => setTimeout(r, 5));
    store.put({ holderIdentity: 'other', leaseDurationSeconds: 3, renewTime: new Date() });
    await elector.release();
    assert.equal(store.holder(), 'other', "another replica's lease was not cleared");
  });
});
