import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_RELEASED_KEYS } from '../transport/peer-service.ts';
import { PendingReleases } from './pending-releases.ts';

describe('PendingReleases', () => {
  it('tells each owner its keys in one call, and no one a key held again before it was told', () => {
    const pending = new PendingReleases();
    for (const key of ['a', 'b', 'c', 'a']) pending.add(key);
    pending.cancel('c');
    const owners: Record<string, string[]> = { a: ['o1', 'o2'], b: ['o2'], c: ['o1'] };
    assert.deepEqual(
      pending.take((key) => owners[key]!),
      [
        ['o1', ['a']],
        ['o2', ['a', 'b']],
      ],
    );
    assert.equal(pending.size, 0, 'taken: told once');
    assert.deepEqual(
      pending.take((key) => owners[key]!),
      [],
    );
  });

  it('splits an owner’s keys into calls of at most MAX_RELEASED_KEYS, and holds at most its bound', () => {
    const pending = new PendingReleases(MAX_RELEASED_KEYS * 2 + 1);
    for (let i = 0; i < MAX_RELEASED_KEYS * 3; i++) pending.add(`k/${i}`);
    assert.equal(pending.size, MAX_RELEASED_KEYS * 2 + 1, 'the rest are not told (their records expire)');
    assert.equal(pending.add('k/0'), true, 'a key already waiting is no more');
    assert.equal(pending.add('one/more'), false);
    const calls = pending.take(() => ['o']);
    assert.deepEqual(
      calls.map(([owner, keys]) => [owner, keys.length]),
      [
        ['o', MAX_RELEASED_KEYS],
        ['o', MAX_RELEASED_KEYS],
        ['o', 1],
      ],
    );
    assert.equal(new Set(calls.flatMap(([, keys]) => keys)).size, MAX_RELEASED_KEYS * 2 + 1);
  });
});
