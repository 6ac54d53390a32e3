import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkLedger } from './chunk-ledger.ts';
import { MAX_CHUNK_SIZE } from './chunking.ts';

describe('ChunkLedger', () => {
  it('counts a chunk repeated in one object once, and forgets it with the last holder', () => {
    const ledger = new ChunkLedger();
    ledger.stored('z', 4, true);
    // An object of zeros: the same chunk eight times, one reference.
    ledger.take(['z', 'z', 'z', 'z', 'z', 'z', 'z', 'z']);
    assert.equal(ledger.refs('z'), 1);
    // A second object with the same content.
    ledger.take(['z', 'z']);
    assert.equal(ledger.refs('z'), 2);
    assert.deepEqual(ledger.release(['z', 'z']), [], 'one object gone: the other still holds it');
    assert.deepEqual(ledger.release(['z', 'z', 'z']), ['z'], 'the last: forgotten');
    assert.equal(ledger.bytes, 0);
    assert.equal(ledger.has('z'), false);
  });

  it('counts the bytes of small chunks apart, once each, until the removal of a forgotten one ends', () => {
    const ledger = new ChunkLedger(100);
    ledger.stored('small', 100, true);
    ledger.stored('small', 100, true); // written twice: counted once
    ledger.storedAndTaken('other', 40);
    ledger.stored('large', 101, true);
    assert.equal(ledger.bytes, 241);
    assert.equal(ledger.smallBytes, 140, 'the 101-byte chunk is not small');
    ledger.take(['small', 'large']);
    assert.deepEqual(ledger.release(['small', 'large']), ['small', 'large']);
    assert.equal(ledger.bytes, 40);
    assert.equal(ledger.smallBytes, 140, 'forgotten, still on disk until removed');
    ledger.removed('small');
    ledger.removed('small');
    assert.equal(ledger.smallBytes, 40);
    assert.equal(ledger.drop('other'), true);
    ledger.stored('other', 40, true); // stored again before its removal ended: counted once
    assert.equal(ledger.smallBytes, 40);
    ledger.removed('other'); // the old removal's end: the new copy stays counted
    assert.equal(ledger.smallBytes, 40);
    ledger.clear();
    assert.equal(ledger.smallBytes, 0);
  });

  it('keeps a chunk two downloads write at once, whichever finishes or gives up first', () => {
    const ledger = new ChunkLedger();
    // Two leases write the same chunk at once; the first lands, the second is still writing.
    ledger.startWrite('c');
    ledger.startWrite('c');
    ledger.stored('c', 10, true);
    ledger.endWrite('c');
    ledger.take(['c']); // the first lease holds it
    assert.equal(ledger.bytes, 10, 'counted once');
    assert.deepEqual(ledger.release(['c']), [], 'the first lease gives up: the second still writes it');
    assert.ok(ledger.has('c'));
    ledger.stored('c', 10, true);
    ledger.endWrite('c');
    ledger.take(['c']); // the second commits
    assert.equal(ledger.bytes, 10);
    assert.deepEqual(ledger.release(['c']), ['c']);
  });

  it('forgets a chunk whose download was deleted while it was written, unless someone else holds it', () => {
    const ledger = new ChunkLedger();
    ledger.startWrite('d');
    ledger.stored('d', 7, true);
    ledger.endWrite('d');
    assert.equal(ledger.abandon('d'), true, 'the lease was released during the write: nobody holds it');
    assert.equal(ledger.bytes, 0);
    // The same, but another object holds the chunk meanwhile: kept.
    ledger.stored('e', 3, true);
    ledger.take(['e']);
    ledger.startWrite('e');
    ledger.endWrite('e');
    assert.equal(ledger.abandon('e'), false);
    assert.equal(ledger.refs('e'), 1);
    // And a delete while another write of it is under way: the writer decides.
    ledger.startWrite('e');
    assert.deepEqual(ledger.release(['e']), []);
    ledger.endWrite('e');
    assert.equal(ledger.abandon('e'), true);
  });

  it('does not forget an abandoned chunk while another writer still writes it', () => {
    const ledger = new ChunkLedger();
    // Two leases write the same chunk; the first lands, and its lease was released meanwhile.
    ledger.startWrite('w');
    ledger.startWrite('w');
    ledger.stored('w', 8, true);
    ledger.endWrite('w');
    assert.equal(ledger.abandon('w'), false, 'the second writer is still writing it: kept');
    assert.ok(ledger.has('w'));
    assert.equal(ledger.bytes, 8);
    // The second lands and takes it (its download commits): held, counted once.
    ledger.stored('w', 8, true);
    ledger.endWrite('w');
    ledger.take('w');
    assert.equal(ledger.refs('w'), 1);
    assert.equal(ledger.bytes, 8);
    assert.deepEqual(ledger.release('w'), ['w']);
    // Had the second given up too, its abandon forgets it.
    ledger.startWrite('v');
    ledger.startWrite('v');
    ledger.stored('v', 2, true);
    ledger.endWrite('v');
    assert.equal(ledger.abandon('v'), false);
    ledger.endWrite('v');
    assert.equal(ledger.abandon('v'), true);
    assert.equal(ledger.bytes, 0);
  });

  it('drops a damaged chunk whoever holds it, and refuses to count an unknown one', () => {
    const ledger = new ChunkLedger();
    ledger.stored('bad', 5, true);
    ledger.take(['bad']);
    assert.equal(ledger.drop('bad'), true);
    assert.equal(ledger.bytes, 0);
    assert.deepEqual(ledger.release(['bad']), [], 'a release after the drop changes nothing');
    assert.throws(() => ledger.take(['never-stored']), /not stored/);
  });

  it('keeps sizes up to the largest chunk, many references and the verified bit apart in its packed entries', () => {
    const ledger = new ChunkLedger();
    const largest = MAX_CHUNK_SIZE;
    ledger.stored('big', largest, false);
    ledger.stored('one', 1, true);
    for (let i = 0; i < 1000; i++) ledger.take('big'); // past what a small integer holds
    assert.equal(ledger.refs('big'), 1000);
    assert.equal(ledger.verified('big'), false);
    ledger.markVerified('big');
    ledger.markVerified('big');
    assert.equal(ledger.verified('big'), true, 'set once, whatever the references');
    assert.equal(ledger.refs('big'), 1000);
    ledger.stored('big', largest, true); // a second writer: counted once, still verified
    assert.equal(ledger.bytes, largest + 1);
    for (let i = 0; i < 999; i++) assert.deepEqual(ledger.release('big'), []);
    assert.deepEqual(ledger.release('big'), ['big']);
    assert.equal(ledger.bytes, 1, 'its whole size left the count');
    assert.equal(ledger.verified('one'), true);
    assert.deepEqual(ledger.release('one'), ['one'], 'never taken: forgotten at the first release');
    assert.equal(ledger.bytes, 0);
  });

  it('takes a chunk found at start with its object in one step, as stored and take would', () => {
    const ledger = new ChunkLedger();
    ledger.storedAndTaken('a', 10);
    ledger.storedAndTaken('a', 10); // a second object with the same content
    ledger.storedAndTaken('b', 5);
    assert.equal(ledger.bytes, 15, 'each counted once');
    assert.equal(ledger.refs('a'), 2);
    assert.equal(ledger.verified('a'), false, 'found on disk: not hashed yet');
    assert.deepEqual(ledger.release('a'), []);
    assert.deepEqual(ledger.release('a'), ['a']);
    assert.equal(ledger.bytes, 5);
  });
});
