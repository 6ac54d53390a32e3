import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChangeFilter } from './change-filter.ts';

describe('ChangeFilter', () => {
  it('passes adds, deletes, resyncs and updates that change the fingerprint; drops updates that do not', () => {
    const filter = new ChangeFilter();
    assert.equal(filter.changed('a', 'x', 'add'), true);
    assert.equal(filter.changed('a', 'x', 'update'), false, 'a status write: nothing to reconcile');
    assert.equal(filter.changed('a', 'x', 'update'), false);
    assert.equal(filter.changed('a', 'y', 'update'), true, 'labels or generation changed');
    assert.equal(filter.changed('a', 'y', 'resync'), true, 'resyncs always pass');
    assert.equal(filter.changed('b', 'y', 'update'), true, 'a key not seen before');
    assert.equal(filter.changed('a', 'y', 'delete'), true);
    assert.equal(filter.changed('a', 'y', 'update'), true, 'forgotten at its delete');
  });
});
