import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { keyProblem } from './keys.ts';

describe('keys', () => {
  it('accepts the documented alphabet and nested paths', () => {
    for (const key of ['a', 'A-z_0.9~', 'images/v1/layer.tar', '.hidden/x', 'a..b', 'x'.repeat(512)]) {
      assert.equal(keyProblem(key), undefined, key);
    }
  });

  it('rejects everything else with a reason', () => {
    const bad = [
      '',
      'x'.repeat(513),
      '/lead',
      'trail/',
      'a//b',
      '.',
      '..',
      'a/../b',
      'a/./b',
      '../etc/passwd',
      'sp ace',
      'pct%2e%2e',
      'q?x',
      'back\\slash',
      'nul\0',
      'ünicode',
      'a/..',
    ];
    for (const key of bad) assert.ok(keyProblem(key), JSON.stringify(key));
  });
});
