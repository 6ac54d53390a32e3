import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sameStatus } from './reconciler.ts';
import { mergePatchFrom } from './status.ts';

describe('status writes', () => {
  it('compares statuses by value, whatever the order of their keys (a real server sorts them)', () => {
    const written = {
      observedGeneration: 2,
      zones: { b: 1, a: 2 },
      conditions: [{ type: 'Ready', status: 'True' }],
    };
    const read = {
      conditions: [{ status: 'True', type: 'Ready' }],
      observedGeneration: 2,
      zones: { a: 2, b: 1 },
    };
    assert.ok(sameStatus(written as never, read as never));
    assert.ok(!sameStatus(written as never, { ...read, zones: { a: 2 } } as never));
    assert.ok(!sameStatus(written as never, undefined));
  });

  it('patches away what the new status drops, which a merge patch would otherwise keep', () => {
    const previous = { zones: { a: 1, gone: 2 }, hitRatio: '0.5', readyAgents: 3 };
    const next = { zones: { a: 1 }, readyAgents: 2 };
    assert.deepEqual(mergePatchFrom(previous, next), {
      zones: { a: 1, gone: null },
      hitRatio: null,
      readyAgents: 2,
    });
    assert.deepEqual(mergePatchFrom({}, next), next);
    assert.deepEqual(
      mergePatchFrom({ list: [1, 2] }, { list: [1] }),
      { list: [1] },
      'arrays are replaced whole',
    );
  });
});
