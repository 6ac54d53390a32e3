import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { every } from './every.ts';

/** Resolves once `check` holds (polled every millisecond). */
function rounds(check: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = setInterval(() => {
      if (!check()) return;
      clearInterval(poll);
      resolve();
    }, 1);
  });
}

describe('every', () => {
  it(
    'survives rounds that throw, reject or have a broken error report, and runs the next round',
    { timeout: 30_000 },
    async () => {
      const uncaught: unknown[] = [];
      const onUncaught = (error: unknown) => uncaught.push(error);
      process.on('uncaughtException', onUncaught);
      process.on('unhandledRejection', onUncaught);
      let round = 0;
      const failures: string[] = [];
      let reports = 0;
      const timer = every(
        1,
        () => {
          round++;
          if (round === 1) throw new Error('thrown');
          if (round === 2) return Promise.reject(new Error('rejected'));
          // eslint-disable-next-line @typescript-eslint/only-throw-error -- what a careless callee may throw
          if (round === 3) throw 'not an Error';
          if (round === 4) throw new Error('report breaks');
          return undefined;
        },
        (error) => {
          reports++;
          if (error.message === 'report breaks') throw new Error('the logger is broken');
          failures.push(error.message);
        },
      );
      try {
        await rounds(() => round >= 6 && reports >= 4);
      } finally {
        clearInterval(timer);
        process.off('uncaughtException', onUncaught);
        process.off('unhandledRejection', onUncaught);
      }
      assert.deepEqual(failures, ['thrown', 'rejected', 'not an Error']);
      assert.deepEqual(uncaught, []);
    },
  );

  it('never starts a round while the one before is pending, and runs again once it settles', async () => {
    let started = 0;
    let running = 0;
    let most = 0;
    const settle: Array<(ok: boolean) => void> = [];
    const failures: string[] = [];
    const timer = every(
      1,
      () => {
        started++;
        running++;
        most = Math.max(most, running);
        return new Promise<void>((resolve, reject) => {
          settle.push((ok) => {
            running--;
            if (ok) resolve();
            else reject(new Error('slow round failed'));
          });
        });
      },
      (error) => failures.push(error.message),
    );
    try {
      await rounds(() => started === 1);
      // Many intervals fall due while the first round is pending (each poll of `rounds` is one more
      // 1 ms interval): none of them starts a round.
      let polls = 0;
      await rounds(() => ++polls >= 20);
      assert.equal(started, 1);
      settle.shift()!(false); // a rejected round frees the timer too
      await rounds(() => started === 2);
      settle.shift()!(true);
      await rounds(() => started === 3);
    } finally {
      clearInterval(timer);
    }
    assert.equal(most, 1);
    assert.deepEqual(failures, ['slow round failed']);
  });

  it('keeps no process alive', () => {
    const timer = every(
      60_000,
      () => undefined,
      () => undefined,
    );
    try {
      assert.equal(timer.hasRef(), false);
    } finally {
      clearInterval(timer);
    }
  });
});
