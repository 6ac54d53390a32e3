import { isDigest } from './chunking.ts';

/**
 * A chunk's SHA-256 digest as 32 one-byte characters (each a byte of the digest): how the store's
 * index and chunk ledger hold a digest. A store may hold millions: V8 keeps such a string in 48
 * bytes, the 64 hex digits everything else speaks in 80 (measured at a million objects: 251 against
 * 219 heap bytes an object, index and ledger together). Everything outside them speaks hex.
 */
export type ChunkKey = string & { readonly __chunkKey: unique symbol };

/** One buffer for the conversions: each is synchronous, and none is kept. */
const scratch = Buffer.allocUnsafeSlow(32);

/** The key of a digest written in hex (`isDigest`); a TypeError for anything else. */
export function chunkKey(digest: string): ChunkKey {
  if (!isDigest(digest))
    throw new TypeError(`not a chunk digest: ${JSON.stringify(String(digest).slice(0, 80))}`);
  return keyAt(digest, 0);
}

/** The key of a digest written in hex; undefined for anything else (a name from a peer, a client). */
export function chunkKeyOf(digest: string): ChunkKey | undefined {
  return isDigest(digest) ? keyAt(digest, 0) : undefined;
}

/**
 * The key of the digest at hex digit `start` of `hex`, which the caller knows to be lower-case hex
 * (SQLite's hex() of a digest column, lowered): no check.
 */
export function keyAt(hex: string, start: number): ChunkKey {
  scratch.write(start === 0 && hex.length === 64 ? hex : hex.slice(start, start + 64), 0, 32, 'hex');
  return scratch.toString('latin1', 0, 32) as ChunkKey;
}

/** The keys of `digests` (hex): one key for one digest (most objects), else the list. */
export function chunkKeys(digests: readonly string[]): ChunkKey | ChunkKey[] {
  return digests.length === 1 ? chunkKey(digests[0]!) : digests.map(chunkKey);
}

/** The digest, in hex, a key stands for. */
export function digestHex(key: ChunkKey): string {
  scratch.write(key, 0, 32, 'latin1');
  return scratch.toString('hex', 0, 32);
}
