import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Sieve, type SieveNode } from './sieve.ts';

const all = () => true;

interface Entry extends SieveNode<Entry> {
  key: string;
}

/** A Sieve over entries named by string keys, as the tests speak of them. */
class Keyed {
  readonly sieve = new Sieve<Entry>();
  readonly #entries = new Map<string, Entry>();
  get size(): number {
    return this.sieve.size;
  }
  insert(key: string): void {
    const entry: Entry = { key, visited: false, prev: undefined, next: undefined };
    this.#entries.set(key, entry);
    this.sieve.insert(entry);
  }
  append(key: string): void {
    const entry: Entry = { key, visited: false, prev: undefined, next: undefined };
    this.#entries.set(key, entry);
    this.sieve.append(entry);
  }
  touch(key: string): void {
    this.#entries.get(key)!.visited = true;
  }
  has(key: string): boolean {
    const entry = this.#entries.get(key);
    return entry !== undefined && this.sieve.has(entry);
  }
  delete(key: string): void {
    this.sieve.delete(this.#entries.get(key)!);
  }
  evict(evictable: (key: string) => boolean): string | undefined {
    return this.sieve.evict((e) => evictable(e.key))?.key;
  }
  find(wanted: (key: string) => boolean, maxSteps: number): string | undefined {
    return this.sieve.find((e) => wanted(e.key), maxSteps)?.key;
  }
}

describe('Sieve', () => {
  it('evicts the oldest unvisited entry first', () => {
    const s = new Keyed();
    for (const k of ['a', 'b', 'c']) s.insert(k);
    assert.equal(s.evict(all), 'a');
    assert.equal(s.evict(all), 'b');
    assert.equal(s.size, 1);
  });

  it('appends entries known from before as the oldest, behind those inserted meanwhile', () => {
    const s = new Keyed();
    s.append('x');
    s.insert('new');
    s.append('y'); // older than x
    s.append('z');
    assert.equal(s.evict(all), 'z');
    assert.equal(s.evict(all), 'y');
    assert.equal(s.evict(all), 'x');
    assert.equal(s.evict(all), 'new');
    assert.equal(s.evict(all), undefined);
  });

  it('appends at the hand once it has moved: the entry appended is the next it looks at, not the last', () => {
    const s = new Keyed();
    for (const k of ['a', 'b', 'c', 'd']) s.insert(k);
    s.touch('a');
    assert.equal(s.evict(all), 'b'); // the hand passed a (bit cleared), and stands at c
    s.append('old');
    assert.equal(s.evict(all), 'old');
    assert.equal(s.evict(all), 'c');
    assert.equal(s.evict(all), 'd');
    assert.equal(s.evict(all), 'a');
  });

  it('spares visited entries once, clearing their bit', () => {
    const s = new Keyed();
    for (const k of ['a', 'b', 'c']) s.insert(k);
    s.touch('a');
    assert.equal(s.evict(all), 'b');
    assert.equal(s.evict(all), 'c');
    assert.equal(s.evict(all), 'a');
    assert.equal(s.evict(all), undefined);
  });

  it('keeps a hot set through a one-time scan (unlike FIFO and LRU)', () => {
    const s = new Keyed();
    const hot = ['h1', 'h2', 'h3'];
    for (const k of hot) s.insert(k);
    for (const k of hot) s.touch(k);
    const evicted: string[] = [];
    for (let i = 0; i < 10; i++) {
      s.insert(`scan${i}`);
      if (s.size > 5) evicted.push(s.evict(all)!);
    }
    for (const k of hot) assert.ok(s.has(k), `${k} survived the scan`);
    assert.ok(evicted.every((k) => k.startsWith('scan')));
  });

  it('skips entries the caller refuses, and reports when nothing can go', () => {
    const s = new Keyed();
    for (const k of ['a', 'b']) s.insert(k);
    assert.equal(
      s.evict((k) => k !== 'a'),
      'b',
    );
    assert.equal(
      s.evict((k) => k !== 'a'),
      undefined,
    );
    assert.ok(s.has('a'));
  });

  it('deletes from anywhere, including under the hand', () => {
    const s = new Keyed();
    for (const k of ['a', 'b', 'c', 'd']) s.insert(k);
    s.touch('a');
    assert.equal(s.evict(all), 'b'); // hand now rests at c
    s.delete('c');
    assert.equal(s.evict(all), 'd');
    assert.equal(s.evict(all), 'a');
    assert.equal(s.size, 0);
    s.delete('a'); // not in the list any more: nothing
    assert.equal(s.size, 0);
  });

  it('find looks from the hand without clearing second chances or moving the hand', () => {
    const sieve = new Keyed();
    for (const k of ['a', 'b', 'c', 'd']) sieve.insert(k);
    sieve.touch('a');
    sieve.touch('b');
    assert.equal(
      sieve.find((k) => k !== 'c', 10),
      'd',
      'the first unvisited one it wants',
    );
    assert.equal(
      sieve.find(() => true, 2),
      undefined,
      'a and b are visited: nothing within 2 steps',
    );
    // Nothing changed: eviction still gives a and b their second chance and takes c first.
    assert.equal(
      sieve.evict(() => true),
      'c',
    );
  });
});
