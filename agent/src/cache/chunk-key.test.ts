import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chunkKey, chunkKeys, digestHex, keyAt } from './chunk-key.ts';
import { digestOf } from './chunking.ts';

describe('chunk keys', () => {
  const a = digestOf(Buffer.from('a'));
  const b = digestOf(Buffer.from('b'));

  it('are 32 one-byte characters, and give back the digest they stand for', () => {
    const key = chunkKey(a);
    assert.equal(key.length, 32);
    assert.equal(Buffer.from(key, 'latin1').toString('hex'), a, 'each character a byte of the digest');
    assert.equal(digestHex(key), a);
    assert.notEqual(chunkKey(b), key);
  });

  it('refuse anything but a lower-case hex digest (upper case would name another file)', () => {
    for (const bad of [a.toUpperCase(), a.slice(1), `${a}0`, `${a.slice(0, 63)}g`, ''])
      assert.throws(() => chunkKey(bad), TypeError, bad);
  });

  it('are read from a list of digests at any offset, and one digest gives one key', () => {
    assert.equal(keyAt(a + b, 64), chunkKey(b));
    assert.equal(keyAt(a + b, 0), chunkKey(a));
    assert.equal(chunkKeys([a]), chunkKey(a));
    assert.deepEqual(chunkKeys([a, b, a]), [chunkKey(a), chunkKey(b), chunkKey(a)]);
  });
});
