import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { cutChunks } from './chunker.ts';
import { IncompleteBodyError, ObjectTooLargeError } from './errors.ts';

async function collect(
  body: Iterable<Uint8Array>,
  limits: Parameters<typeof cutChunks>[1],
): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const chunk of cutChunks(body, limits)) out.push(Buffer.from(chunk));
  return out;
}

const open = { maxObjectBytes: 1000, storeBytes: 1000 };

describe('cutChunks', () => {
  it('cuts pieces of any size into fixed chunks and a short tail', async () => {
    const data = randomBytes(25);
    const pieces = [data.subarray(0, 3), data.subarray(3, 4), data.subarray(4, 21), data.subarray(21)];
    for (const expectedSize of [undefined, 25]) {
      const chunks = await collect(pieces, { chunkSize: 10, expectedSize, ...open });
      assert.deepEqual(
        chunks.map((c) => c.length),
        [10, 10, 5],
      );
      assert.deepEqual(Buffer.concat(chunks), data);
    }
    assert.deepEqual(await collect([], { chunkSize: 10, expectedSize: 0, ...open }), []);
  });

  it('refuses bodies past a limit or off their announced length', async () => {
    const ten = [randomBytes(10)];
    await assert.rejects(
      collect(ten, { chunkSize: 4, maxObjectBytes: 9, storeBytes: 100 }),
      ObjectTooLargeError,
    );
    await assert.rejects(
      collect(ten, { chunkSize: 4, maxObjectBytes: 100, storeBytes: 9 }),
      /larger than the whole store/,
    );
    await assert.rejects(
      collect(ten, { chunkSize: 4, expectedSize: 9, ...open }),
      /longer than its announced/,
    );
    await assert.rejects(collect(ten, { chunkSize: 4, expectedSize: 11, ...open }), IncompleteBodyError);
  });
});
