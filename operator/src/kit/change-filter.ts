import type { Verb } from './informer.ts';

/**
 * Whether an informer's event changes what a reconcile uses of an object (its `fingerprint`): an
 * update that leaves it as it was (a status write, a Node's heartbeat) is not worth a reconcile.
 * Adds, deletes and resyncs always are. Remembers one fingerprint per key, forgotten at its delete.
 */
export class ChangeFilter {
  readonly #seen = new Map<string, string>();

  changed(key: string, fingerprint: string, verb: Verb): boolean {
    if (verb === 'delete') {
      this.#seen.delete(key);
      return true;
    }
    const same = this.#seen.get(key) === fingerprint;
    this.#seen.set(key, fingerprint);
    return verb !== 'update' || !same;
  }
}
