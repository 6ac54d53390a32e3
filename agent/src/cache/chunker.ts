import { IncompleteBodyError, ObjectTooLargeError } from './errors.ts';
import type { ReusedBuffers } from './reused-buffers.ts';

export interface ChunkerLimits {
  /** Each chunk is this long, but the last. */
  chunkSize: number;
  /** The body's announced length, enforced exactly; undefined when not announced. */
  expectedSize?: number;
  /** The largest object accepted, and the whole store's size (reported differently). */
  maxObjectBytes: number;
  storeBytes: number;
}

/**
 * Cuts a body arriving in pieces of any size into chunks of `chunkSize` (the last shorter), copying
 * each byte once. Throws ObjectTooLargeError as soon as the body passes a limit, and
 * IncompleteBodyError when it ends before, or runs past, its announced length. The caller may keep
 * every chunk yielded, unless it passed `buffers`: then chunks are cut into buffers taken from it
 * (when it has one), which the caller gives back once done with each.
 */
export async function* cutChunks(
  body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  limits: ChunkerLimits,
  buffers?: ReusedBuffers,
): AsyncGenerator<Buffer> {
  const { chunkSize, expectedSize } = limits;
  let cut = 0; // bytes already yielded
  // Sized to what is left of a known-size object, so it never over-allocates.
  const nextBuffer = () => {
    const size = Math.min(chunkSize, (expectedSize ?? Infinity) - cut);
    return buffers?.take(size)?.subarray(0, size) ?? Buffer.allocUnsafe(size);
  };
  let buffer = nextBuffer();
  let filled = 0;
  let total = 0;
  for await (const piece of body) {
    total += piece.length;
    if (total > limits.maxObjectBytes) throw new ObjectTooLargeError(limits.maxObjectBytes);
    if (total > limits.storeBytes) {
      throw new ObjectTooLargeError(limits.storeBytes, 'object is larger than the whole store');
    }
    if (expectedSize !== undefined && total > expectedSize) {
      throw new IncompleteBodyError(`body is longer than its announced ${expectedSize} bytes`);
    }
    for (let offset = 0; offset < piece.length;) {
      const n = Math.min(piece.length - offset, buffer.length - filled);
      buffer.set(piece.subarray(offset, offset + n), filled);
      filled += n;
      offset += n;
      if (filled === buffer.length) {
        yield buffer;
        cut += filled;
        buffer = nextBuffer();
        filled = 0;
      }
    }
  }
  if (expectedSize !== undefined && total !== expectedSize) {
    throw new IncompleteBodyError(`body ended after ${total} of ${expectedSize} bytes`);
  }
  // A short tail is copied out so a kept chunk never pins a mostly empty chunk-sized buffer.
  if (filled > 0) yield Buffer.copyBytesFrom(buffer, 0, filled);
}
