import type { TestContext } from 'node:test';
import type { Manifest } from '../src/cache/manifest.ts';
import { StoreDb } from '../src/cache/store-db.ts';

/**
 * Holds the next manifest write of `key` (a commit, in its key's turn: as if the database's queue
 * were busy) until `release()`; `atWrite` resolves once the write is held. The store's database is
 * otherwise as it is. The mock ends with the test.
 */
export function holdManifestWrite(t: TestContext, key: string) {
  const write = Object.getOwnPropertyDescriptor(StoreDb.prototype, 'writeManifest')!
    .value as StoreDb['writeManifest'];
  const { promise: atWrite, resolve: reached } = Promise.withResolvers<void>();
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  let armed = true;
  t.mock.method(StoreDb.prototype, 'writeManifest', async function (this: StoreDb, manifest: Manifest) {
    if (armed && manifest.key === key) {
      armed = false;
      reached();
      await released;
    }
    return write.call(this, manifest);
  });
  return { atWrite, release: () => release() };
}
