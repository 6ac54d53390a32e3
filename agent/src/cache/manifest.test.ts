import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { isKey } from '../keys.ts';
import {
  chunkSizeFor,
  digestOf,
  MAX_CHUNK_SIZE,
  MAX_CHUNKS,
  MAX_OBJECT_BYTES,
  MIN_CHUNK_SIZE,
  rootDigest,
} from './chunking.ts';
import { InternTable, InvalidManifestError, parseManifest, parseSignature } from './manifest.ts';

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

  /** A self-consistent manifest of `size` bytes in `chunkSize` chunks (every chunk the same digest). */
  function cut(size: number, chunkSize: number) {
    const count = Math.ceil(size / chunkSize);
    const chunks = Array.from({ length: count }, () => digestOf(Buffer.from('x')));
    return { key: 'k', size, chunkSize, chunks, root: rootDigest(size, chunkSize, chunks), createdAtMs: 1 };
  }

  it('accepts every shape the writers make: one chunk of a small object, chunkSizeFor, 4 MiB chunks of a PUT of unknown size', () => {
    const sizes = [
      0,
      1,
      MIN_CHUNK_SIZE - 1,
      MIN_CHUNK_SIZE,
      MIN_CHUNK_SIZE + 1,
      2 * 2 ** 30 + 1,
      40 * 2 ** 30,
    ];
    for (const size of [...sizes, MAX_OBJECT_BYTES]) {
      assert.equal(parseManifest(cut(size, chunkSizeFor(size)), isKey).size, size, `${size} bytes`);
      assert.equal(parseManifest(cut(size, MIN_CHUNK_SIZE), isKey).size, size, `${size} bytes, unknown size`);
    }
    assert.equal(parseManifest(cut(MAX_OBJECT_BYTES, MIN_CHUNK_SIZE), isKey).chunks.length, MAX_CHUNKS);
    // An object smaller than a chunk is its only chunk, whatever the chunk size says.
    assert.equal(parseManifest(cut(1, 1), isKey).chunks.length, 1);
    assert.equal(parseManifest(cut(100, 4096), isKey).chunks.length, 1);
  });

  it('refuses a chunk size finer than any writer cuts, and more chunks than the largest object has', () => {
    // 2 million digests of 1-byte chunks: what a 64 MiB message could carry (the root unchecked: the
    // chunk size alone refuses it).
    const digest = digestOf(Buffer.from('x'));
    const fine = { ...manifest(2_000_000, 1), chunks: Array<string>(2_000_000).fill(digest) };
    assert.throws(
      () => parseManifest(fine, isKey),
      /chunkSize 1 below 4194304 for an object of more than one/,
    );
    assert.throws(() => parseManifest(cut(2 * MIN_CHUNK_SIZE - 2, MIN_CHUNK_SIZE - 1), isKey), /below/);
    assert.throws(
      () => parseManifest(cut(MAX_OBJECT_BYTES + MIN_CHUNK_SIZE, MIN_CHUNK_SIZE), isKey),
      /above the largest object/,
    );
    // A chunk list longer than the largest object needs, whatever size it claims: refused on its
    // length, before a digest is looked at (these are not digests) or the root hashed.
    const long = { ...cut(MIN_CHUNK_SIZE, MIN_CHUNK_SIZE), chunks: Array<string>(MAX_CHUNKS + 1).fill('zz') };
    assert.throws(() => parseManifest(long, isKey), /65537 chunks: more than an object of/);
    assert.throws(() => parseManifest({ ...long, chunks: ['zz'] }, isKey), /bad chunk list/);
  });
  it('refuses a chunk list whose length does not match size and chunk size, even under its own root', () => {
    // Two chunks for an object of one (and one for an object of two), each with the root of the
    // list it carries: only the count check refuses them.
    const x = digestOf(Buffer.from('x'));
    const y = digestOf(Buffer.from('y'));
    const one = cut(MIN_CHUNK_SIZE, MIN_CHUNK_SIZE);
    const extra = { ...one, chunks: [x, y], root: rootDigest(one.size, one.chunkSize, [x, y]) };
    assert.throws(() => parseManifest(extra, isKey), /chunk count does not match size/);
    const two = cut(2 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE);
    const short = { ...two, chunks: [x], root: rootDigest(two.size, two.chunkSize, [x]) };
    assert.throws(() => parseManifest(short, isKey), /chunk count does not match size/);
    // An empty object has no chunks.
    const empty = { ...cut(0, MIN_CHUNK_SIZE), chunks: [x], root: rootDigest(0, MIN_CHUNK_SIZE, [x]) };
    assert.throws(() => parseManifest(empty, isKey), /chunk count does not match size/);
  });

  it('refuses a root that is not the root of its chunk list (a genuine root paired with other chunks)', () => {
    const genuine = cut(2 * MIN_CHUNK_SIZE, MIN_CHUNK_SIZE);
    assert.equal(parseManifest(genuine, isKey).root, genuine.root);
    // The signature covers the root, not the chunks: a peer keeping the root and swapping a chunk
    // digest must be refused here.
    const swapped = { ...genuine, chunks: [genuine.chunks[0]!, digestOf(Buffer.from('other'))] };
    assert.throws(() => parseManifest(swapped, isKey), /root mismatch/);
    // The same chunks in another order, and a root of the right chunks but another size.
    const reordered = { ...genuine, chunks: [digestOf(Buffer.from('a')), digestOf(Buffer.from('b'))] };
    const rootAB = rootDigest(genuine.size, genuine.chunkSize, reordered.chunks);
    assert.equal(parseManifest({ ...reordered, root: rootAB }, isKey).root, rootAB);
    assert.throws(
      () => parseManifest({ ...reordered, chunks: [...reordered.chunks].reverse(), root: rootAB }, isKey),
      /root mismatch/,
    );
    const otherSize = rootDigest(genuine.size - 1, genuine.chunkSize, genuine.chunks);
    assert.throws(() => parseManifest({ ...genuine, root: otherSize }, isKey), /root mismatch/);
  });
});

/** Heap bytes `work` leaves held, measured after a full collection on each side of it. */
function heapGrowth(work: () => void): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().heapUsed;
  work();
  gc();
  return process.memoryUsage().heapUsed - before;
}

describe('parseSignature', () => {
  it('keeps one copy of a certificate however many signatures carry it', () => {
    const certificate = Buffer.alloc(600, 7).toString('base64'); // about a node certificate's size
    // As from the network or the disk: every signature a string of its own.
    const texts = Array.from({ length: 20_000 }, (_, i) =>
      JSON.stringify({ certificate, value: Buffer.from(String(i)).toString('base64') }),
    );
    let kept: ReturnType<typeof parseSignature>[] = [];
    const grown = heapGrowth(() => (kept = texts.map((t) => parseSignature(JSON.parse(t)))));
    assert.equal(kept.length, 20_000);
    assert.equal(kept[5]!.certificate, certificate);
    // Copies would be 20,000 x 800 bytes = 16 MB; shared, the signatures themselves take about 2.
    assert.ok(grown < 6 * 2 ** 20, `the signatures took ${grown} bytes`);
  });

  it('shares the certificates of a mesh of many signers too (more than a table of a fixed count)', () => {
    const signers = 1000;
    const certificates = Array.from({ length: signers }, (_, i) => {
      const der = Buffer.alloc(600, 7);
      der.writeUInt32BE(i);
      return der.toString('base64');
    });
    const kept: ReturnType<typeof parseSignature>[] = [];
    const grown = heapGrowth(() => {
      for (let i = 0; i < 20 * signers; i++) {
        const text = JSON.stringify({
          certificate: certificates[i % signers],
          value: Buffer.from(String(i)).toString('base64'),
        });
        kept.push(parseSignature(JSON.parse(text)));
      }
    });
    assert.equal(kept[1234]!.certificate, certificates[234]);
    // Copies would be 20,000 x 800 bytes = 16 MB; shared, 1,000 certificates and the signatures about 3.
    assert.ok(grown < 6 * 2 ** 20, `the signatures took ${grown} bytes`);
  });

  it('keeps at most 4 MiB of certificates, whoever sends them (before any check)', () => {
    const grown = heapGrowth(() => {
      for (let i = 0; i < 2000; i++) {
        const junk = Buffer.alloc(6000, 9); // 8,000 characters of base64, the most parseSignature takes
        junk.writeUInt32BE(i);
        parseSignature({ certificate: junk.toString('base64'), value: 'U0lH' });
      }
    });
    // 2,000 of them kept would be 16 MB.
    assert.ok(grown < 5 * 2 ** 20, `the table holds ${grown} bytes`);
  });

  it('holds a flood of tiny certificates to the budget too (each entry costs more than its text)', () => {
    const grown = heapGrowth(() => {
      for (let i = 0; i < 200_000; i++) {
        const tiny = Buffer.alloc(6);
        tiny.writeUIntBE(i, 0, 6);
        parseSignature({ certificate: tiny.toString('base64'), value: 'U0lH' }); // 8 characters each
      }
    });
    // 200,000 entries kept would be about 18 MB.
    assert.ok(grown < 5 * 2 ** 20, `the table holds ${grown} bytes`);
  });
});

describe('InternTable', () => {
  it('keeps one copy of each string, letting go of the least recently seen past its budget', () => {
    const cost = (text: string) => text.length + InternTable.ENTRY_COST;
    const a = 'a'.repeat(100);
    const b = 'b'.repeat(100);
    const table = new InternTable(cost(a) * 4); // room for four such strings
    assert.equal(table.intern(a), a);
    table.intern(b);
    table.intern('c'.repeat(100));
    table.intern('a'.repeat(100)); // seen again: now the most recent
    table.intern('d'.repeat(100));
    assert.ok(table.has(a) && table.has(b), 'four fit');
    // A fifth: past the budget, down to three quarters of it: the two least recently seen go.
    table.intern('e'.repeat(100));
    assert.equal(table.has(b), false, 'b, the least recently seen, went');
    assert.equal(table.has('c'.repeat(100)), false);
    assert.equal(table.has(a), true, 'a, seen again, stays');
    assert.equal(table.has('e'.repeat(100)), true);
  });
});
