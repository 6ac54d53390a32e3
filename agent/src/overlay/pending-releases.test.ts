import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_RELEASED_KEYS } from '../transport/peer-service.ts';
import { PendingReleases, RELEASE_SLICE } from './pending-releases.ts';

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

  it('takes a slice at a time, oldest first, never more than one call holds; holds at most its bound', () => {
    const pending = new PendingReleases(RELEASE_SLICE * 2 + 1);
    for (let i = 0; i < RELEASE_SLICE * 3; i++) pending.add(`k/${i}`);
    assert.equal(pending.size, RELEASE_SLICE * 2 + 1, 'the rest are not told (their records expire)');
    assert.equal(pending.add('k/0'), true, 'a key already waiting is no more');
    assert.equal(pending.add('one/more'), false);
    let asked = 0;
    const first = pending.take(() => (asked++, ['o']));
    assert.equal(asked, RELEASE_SLICE, 'owners found for the slice only');
    assert.deepEqual(first, [['o', Array.from({ length: RELEASE_SLICE }, (_, i) => `k/${i}`)]]);
    assert.equal(pending.take(() => ['o'])[0]![1].length, RELEASE_SLICE);
    assert.deepEqual(
      pending.take(() => ['o']),
      [['o', [`k/${RELEASE_SLICE * 2}`]]],
    );
    assert.equal(pending.size, 0);
    const many = new PendingReleases();
    for (let i = 0; i < MAX_RELEASED_KEYS + 1; i++) many.add(`m/${i}`);
    assert.equal(many.take(() => ['o'], Infinity)[0]![1].length, MAX_RELEASED_KEYS, 'one call at most');
  });
});
