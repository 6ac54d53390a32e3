import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isKey } from '../keys.ts';
import { digestOf, MAX_CHUNK_SIZE, rootDigest } from './chunking.ts';
import { InvalidManifestError, parseManifest } from './manifest.ts';

/** A self-consistent manifest of one chunk of `size` bytes, chunked by `chunkSize`. */
function manifest(size: number, chunkSize: number) {
  const chunks = [digestOf(Buffer.from('x'))];
  return { key: 'k', size, chunkSize, chunks, root: rootDigest(size, chunkSize, chunks), createdAtMs: 1 };
}

describe('parseManifest', () => {
  it('accepts what this code makes, and refuses a chunk size no receiver should allocate', () => {
    assert.equal(parseManifest(manifest(100, MAX_CHUNK_SIZE), isKey).chunkSize, MAX_CHUNK_SIZE);
    // Self-consistent (one chunk, the right root), but 1 TiB per chunk: a peer's way to make this
    // node allocate what it cannot.
    assert.throws(() => parseManifest(manifest(100, 2 ** 40), isKey), InvalidManifestError);
    assert.throws(() => parseManifest(manifest(100, MAX_CHUNK_SIZE + 1), isKey), /chunkSize above/);
  });
});
