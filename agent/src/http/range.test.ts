import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ifRangeHolds, parseRange, requestedRange } from './range.ts';

describe('parseRange', () => {
  it('serves single byte ranges, open-ended and suffix ranges', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { kind: 'partial', range: { start: 0, end: 9 } });
    assert.deepEqual(parseRange('bytes=90-', 100), { kind: 'partial', range: { start: 90, end: 99 } });
    assert.deepEqual(parseRange('bytes=-10', 100), { kind: 'partial', range: { start: 90, end: 99 } });
    assert.deepEqual(parseRange('bytes=-1000', 100), { kind: 'partial', range: { start: 0, end: 99 } });
    assert.deepEqual(parseRange('bytes=50-1000', 100), { kind: 'partial', range: { start: 50, end: 99 } });
  });

  it('serves a range of one byte: the first, one inside, the last', () => {
    assert.deepEqual(parseRange('bytes=0-0', 100), { kind: 'partial', range: { start: 0, end: 0 } });
    assert.deepEqual(parseRange('bytes=42-42', 100), { kind: 'partial', range: { start: 42, end: 42 } });
    assert.deepEqual(parseRange('bytes=99-99', 100), { kind: 'partial', range: { start: 99, end: 99 } });
    assert.deepEqual(parseRange('bytes=0-0', 1), { kind: 'partial', range: { start: 0, end: 0 } });
    assert.deepEqual(parseRange('bytes=-1', 1), { kind: 'partial', range: { start: 0, end: 0 } });
  });

  it('answers a suffix range of an empty object with the whole of it (no byte), never a range ending before it starts', () => {
    // §14.1.2: satisfiable, but there is no byte to send; a range { start: 0, end: -1 } would be
    // answered as a 206 of "bytes 0--1/0".
    for (const h of ['bytes=-1', 'bytes=-5', 'bytes=-1000'])
      assert.deepEqual(parseRange(h, 0), { kind: 'full' }, h);
    assert.deepEqual(
      requestedRange(
        { method: 'GET', range: 'bytes=-5', ifRange: undefined },
        { size: 0, etag: undefined, lastModified: undefined },
      ),
      { kind: 'full' },
    );
  });

  it('ignores what the RFC lets a server ignore', () => {
    assert.deepEqual(parseRange(undefined, 100), { kind: 'full' });
    assert.deepEqual(parseRange('items=0-1', 100), { kind: 'full' });
    assert.deepEqual(parseRange('bytes=0-1,5-6', 100), { kind: 'full' });
  });

  it('refuses valid byte ranges no byte satisfies', () => {
    for (const h of ['bytes=100-', 'bytes=100-200', 'bytes=-0', 'bytes=99999999999999999999-']) {
      assert.deepEqual(parseRange(h, 100), { kind: 'unsatisfiable' }, h);
    }
    assert.deepEqual(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=-0', 0), { kind: 'unsatisfiable' });
  });

  it('ignores a syntactically invalid byte range (RFC 9110 §14.2), as several ranges are', () => {
    for (const h of [
      'bytes=9-3',
      'bytes=abc',
      'bytes=-',
      'bytes=',
      'bytes=1-2-3',
      'bytes=1-x',
      'bytes=200-3',
    ]) {
      assert.deepEqual(parseRange(h, 100), { kind: 'full' }, h);
    }
    // A suffix of an empty object is satisfiable (§14.1.2): the whole of it, no byte.
    assert.deepEqual(parseRange('bytes=-5', 0), { kind: 'full' });
  });
});

describe('requestedRange', () => {
  const ETAG = '"sha256-tree:aa"';
  const DATE = 'Tue, 03 Jun 2025 10:00:00 GMT';
  const target = { size: 100, etag: ETAG, lastModified: DATE };
  const get = (range: string | undefined, ifRange?: string) =>
    requestedRange({ method: 'GET', range, ifRange }, target);
  const partial = { kind: 'partial', range: { start: 90, end: 99 } };

  it('takes a Range for GET only: HEAD answers as the GET without it would', () => {
    assert.deepEqual(get('bytes=90-'), partial);
    assert.deepEqual(requestedRange({ method: 'HEAD', range: 'bytes=90-', ifRange: undefined }, target), {
      kind: 'full',
    });
    assert.deepEqual(requestedRange({ method: 'HEAD', range: 'bytes=500-', ifRange: undefined }, target), {
      kind: 'full',
    });
    assert.deepEqual(get('bytes=500-'), { kind: 'unsatisfiable' });
  });

  it('takes the Range only when If-Range names this version: its ETag, strongly, or exactly its Last-Modified', () => {
    assert.deepEqual(get('bytes=90-', ETAG), partial);
    assert.deepEqual(get('bytes=90-', ` ${ETAG} `), partial);
    assert.deepEqual(get('bytes=90-', DATE), partial);
    for (const other of [
      '"sha256-tree:bb"', // another version: the key was replaced
      `W/${ETAG}`, // weak: never a strong match
      ETAG.slice(0, -1), // no closing quote
      `${ETAG}, "x"`, // a list (or a repeated header, joined): not one entity tag
      'Tue, 03 Jun 2025 10:00:01 GMT',
      'Tuesday, 03-Jun-25 10:00:00 GMT', // the same moment, not the same value
      '',
    ])
      assert.deepEqual(get('bytes=90-', other), { kind: 'full' }, other);
    // Also an unsatisfiable range: the whole current version, not 416.
    assert.deepEqual(get('bytes=500-', '"sha256-tree:bb"'), { kind: 'full' });
    // An answer with no validators yet (an origin fetch under way elsewhere) matches nothing.
    assert.deepEqual(
      requestedRange(
        { method: 'GET', range: 'bytes=90-', ifRange: ETAG },
        { size: 100, etag: undefined, lastModified: undefined },
      ),
      { kind: 'full' },
    );
    assert.equal(ifRangeHolds(ETAG, target), true);
  });
});
