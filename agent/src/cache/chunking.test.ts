import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  chunkCount,
  chunkLength,
  chunkSizeFor,
  digestOf,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  rootDigest,
} from './chunking.ts';

describe('chunking', () => {
  it('keeps small objects in one chunk and sizes large ones at ~512 chunks within 4-64 MiB', () => {
    assert.equal(chunkSizeFor(0), MIN_CHUNK_SIZE);
    assert.equal(chunkCount(1000, chunkSizeFor(1000)), 1);
    assert.equal(chunkCount(MIN_CHUNK_SIZE, chunkSizeFor(MIN_CHUNK_SIZE)), 1);
    assert.equal(chunkSizeFor(2 ** 30), MIN_CHUNK_SIZE); // 1 GiB: 256 chunks of 4 MiB
    assert.equal(chunkSizeFor(2 ** 32), 8 * 2 ** 20); // 4 GiB: 512 chunks of 8 MiB
    assert.equal(chunkSizeFor(2 ** 40), MAX_CHUNK_SIZE);
    assert.equal(chunkSizeFor(undefined), MIN_CHUNK_SIZE);
  });

  it('gives the last chunk the remainder', () => {
    assert.equal(chunkLength(10, 4, 0), 4);
    assert.equal(chunkLength(10, 4, 2), 2);
    assert.equal(chunkCount(10, 4), 3);
  });

  it('derives a root that commits to size, chunk size and every chunk digest in order', () => {
    const a = digestOf(Buffer.from('a'));
    const b = digestOf(Buffer.from('b'));
    const root = rootDigest(2, 1, [a, b]);
    assert.match(root, /^[0-9a-f]{64}$/);
    assert.equal(rootDigest(2, 1, [a, b]), root);
    assert.notEqual(rootDigest(2, 1, [b, a]), root);
    assert.notEqual(rootDigest(3, 1, [a, b]), root);
    assert.notEqual(rootDigest(2, 2, [a, b]), root);
  });
});
