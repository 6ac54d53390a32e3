import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Sieve } from './sieve.ts';

const all = () => true;

describe('Sieve', () => {
  it('evicts the oldest unvisited entry first', () => {
    const s = new Sieve<string>();
    for (const k of ['a', 'b', 'c']) s.insert(k);
    assert.equal(s.evict(all), 'a');
    assert.equal(s.evict(all), 'b');
    assert.equal(s.size, 1);
  });

  it('spares visited entries once, clearing their bit', () => {
    const s = new Sieve<string>();
    for (const k of ['a', 'b', 'c']) s.insert(k);
    s.touch('a');
    assert.equal(s.evict(all), 'b');
    assert.equal(s.evict(all), 'c');
    assert.equal(s.evict(all), 'a');
    assert.equal(s.evict(all), undefined);
  });

  it('keeps a hot set through a one-time scan (unlike FIFO and LRU)', () => {
    const s = new Sieve<string>();
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
    const s = new Sieve<string>();
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
    const s = new Sieve<string>();
    for (const k of ['a', 'b', 'c', 'd']) s.insert(k);
    s.touch('a');
    assert.equal(s.evict(all), 'b'); // hand now rests at c
    s.delete('c');
    assert.equal(s.evict(all), 'd');
    assert.equal(s.evict(all), 'a');
    assert.equal(s.size, 0);
  });

  it('find looks from the hand without clearing second chances or moving the hand', () => {
    const sieve = new Sieve<string>();
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
