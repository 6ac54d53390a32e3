import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { isKey } from '../keys.ts';
import { digestOf, MAX_CHUNK_SIZE, rootDigest } from './chunking.ts';
import { InvalidManifestError, parseManifest, parseSignature } from './manifest.ts';

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

describe('parseSignature', () => {
  it('keeps one copy of a certificate however many signatures carry it', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const certificate = Buffer.alloc(600, 7).toString('base64'); // about a node certificate's size
    // As from the network or the disk: every signature a string of its own.
    const texts = Array.from({ length: 20_000 }, (_, i) =>
      JSON.stringify({ certificate, value: Buffer.from(String(i)).toString('base64') }),
    );
    gc();
    const before = process.memoryUsage().heapUsed;
    const kept = texts.map((t) => parseSignature(JSON.parse(t)));
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    assert.equal(kept.length, 20_000);
    assert.equal(kept[5]!.certificate, certificate);
    // Copies would be 20,000 x 800 bytes = 16 MB; shared, the signatures themselves take about 2.
    assert.ok(grown < 6 * 2 ** 20, `the signatures took ${grown} bytes`);
  });
});
