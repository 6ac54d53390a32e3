import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRange } from './range.ts';

describe('parseRange', () => {
  it('serves single byte ranges, open-ended and suffix ranges', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { kind: 'partial', range: { start: 0, end: 9 } });
    assert.deepEqual(parseRange('bytes=90-', 100), { kind: 'partial', range: { start: 90, end: 99 } });
    assert.deepEqual(parseRange('bytes=-10', 100), { kind: 'partial', range: { start: 90, end: 99 } });
    assert.deepEqual(parseRange('bytes=-1000', 100), { kind: 'partial', range: { start: 0, end: 99 } });
    assert.deepEqual(parseRange('bytes=50-1000', 100), { kind: 'partial', range: { start: 50, end: 99 } });
  });

  it('ignores what the RFC lets a server ignore', () => {
    assert.deepEqual(parseRange(undefined, 100), { kind: 'full' });
    assert.deepEqual(parseRange('items=0-1', 100), { kind: 'full' });
    assert.deepEqual(parseRange('bytes=0-1,5-6', 100), { kind: 'full' });
  });

  it('refuses unsatisfiable and malformed byte ranges', () => {
    for (const h of [
      'bytes=100-',
      'bytes=100-200',
      'bytes=9-3',
      'bytes=-0',
      'bytes=abc',
      'bytes=-',
      'bytes=1-2-3',
      'bytes=0-0',
    ]) {
      const size = h === 'bytes=0-0' ? 0 : 100;
      assert.deepEqual(parseRange(h, size), { kind: 'unsatisfiable' }, h);
    }
  });
});
