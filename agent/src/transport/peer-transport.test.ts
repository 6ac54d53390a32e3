import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cancelWatch,
  HEARTBEAT_MS,
  heartbeatCheck,
  MAX_QUEUED_MS,
  PeerBusyError,
  PeerError,
} from './peer-transport.ts';

describe('heartbeatCheck', () => {
  const clock = () => {
    let t = 0;
    return { now: () => t, advance: (ms: number) => (t += ms) };
  };

  it('takes an honest holder’s heartbeats, one a second, for as long as MAX_QUEUED_MS, for each chunk anew', () => {
    const c = clock();
    const beats = heartbeatCheck('p', 10, c.now);
    for (let chunk = 0; chunk < 3; chunk++) {
      for (let waited = 0; waited <= MAX_QUEUED_MS; waited += HEARTBEAT_MS) {
        assert.equal(beats.beat(chunk, chunk), undefined, `chunk ${chunk} after ${waited} ms`);
        c.advance(HEARTBEAT_MS);
      }
      beats.progress();
    }
  });

  it('takes an honest holder’s heartbeats that queued behind a slow chunk and arrive together after it', () => {
    // Chunk 0 takes 20 s on a slow link; the holder heartbeats for chunk 1 meanwhile, once a
    // second, and those beats wait in TCP behind chunk 0's bytes.
    const c = clock();
    const beats = heartbeatCheck('p', 10, c.now);
    c.advance(20_000);
    beats.progress();
    for (let i = 0; i < 19; i++) assert.equal(beats.beat(1, 1), undefined, `heartbeat ${i}`);
  });

  it('counts heartbeats over the whole request: chunks in between do not start the count again', () => {
    const c = clock();
    const beats = heartbeatCheck('p', 10, c.now);
    let error: PeerError | undefined;
    for (let chunk = 0; chunk < 10 && !error; chunk++) {
      for (let i = 0; i < 5 && !error; i++) error = beats.beat(chunk, chunk);
      beats.progress();
    }
    assert.match(String(error), /heartbeats in/);
  });

  it('counts a holder busy once one chunk has waited longer than MAX_QUEUED_MS', () => {
    const c = clock();
    const beats = heartbeatCheck('p', 10, c.now);
    assert.equal(beats.beat(0, 0), undefined);
    c.advance(MAX_QUEUED_MS + 1);
    const error = beats.beat(0, 0);
    assert.ok(error instanceof PeerBusyError, String(error));
    assert.match(error.message, /queued for over/);
  });

  it('refuses a heartbeat once every chunk is in, whatever chunk it names', () => {
    const beats = heartbeatCheck('p', 2, () => 0);
    assert.equal(beats.beat(1, 1), undefined);
    for (const index of [2, 1]) {
      const error = beats.beat(index, 2);
      assert.ok(error instanceof PeerError && !(error instanceof PeerBusyError), String(error));
      assert.match(error.message, /a heartbeat after the last chunk/);
    }
  });

  it('refuses a heartbeat for a chunk other than the one expected', () => {
    const error = heartbeatCheck('p', 10, () => 0).beat(5, 0);
    assert.ok(error instanceof PeerError && !(error instanceof PeerBusyError), String(error));
    assert.match(error.message, /chunk 5 \(expected 0\)/);
  });

  it('refuses a flood of heartbeats', () => {
    const c = clock();
    const beats = heartbeatCheck('p', 10, c.now);
    let error: PeerError | undefined;
    let n = 0;
    while (!error && n < 1000) {
      error = beats.beat(0, 0);
      n++;
      c.advance(HEARTBEAT_MS / 100);
    }
    assert.ok(error instanceof PeerError && !(error instanceof PeerBusyError), String(error));
    assert.match(error.message, /heartbeats in/);
    assert.ok(n < 24, `${n} heartbeats taken`);
  });
});

describe('cancelWatch', () => {
  it('cuts the call on the caller’s cancel, at once when it came before, and not once stopped', () => {
    let cuts = 0;
    const live = new AbortController();
    const a = cancelWatch(live.signal, () => cuts++);
    assert.equal(a.cut, false);
    live.abort();
    assert.equal(a.cut, true);
    assert.equal(cuts, 1);

    const before = new AbortController();
    before.abort();
    const b = cancelWatch(before.signal, () => cuts++);
    assert.equal(b.cut, true);
    assert.equal(cuts, 2);

    // Every chunk in: the cancel cuts nothing.
    const late = new AbortController();
    const c = cancelWatch(late.signal, () => cuts++);
    c.stop();
    late.abort();
    assert.equal(c.cut, false);
    assert.equal(cuts, 2);
    assert.equal(cancelWatch(undefined, () => cuts++).cut, false);
  });
});
