import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzSetting } from '../../harness/fuzz.ts';
import {
  ClientReads,
  encodeRequest,
  errorFrame,
  FRAME,
  frameHeader,
  MAX_REQUEST_BYTES,
  parseRequest,
  RequestReader,
  ResponseReader,
  type ResponseFrame,
} from './bulk-wire.ts';

type FakeSocket = Socket & {
  feed(parts: Buffer[]): void;
  deliver(parts: Buffer[], elsewhere?: (n: number) => boolean): void;
  reads: ClientReads;
  stray: number;
};

/**
 * Enough of a socket for the readers: data and end events, pause and resume. `feed` hands bytes to a
 * RequestReader as `data` events; `deliver` hands them to a ResponseReader as TLS does with `onread`
 * (`reads`): copied into the buffer `reads.onread.buffer()` names, at most its length at a time, or,
 * for the writes `elsewhere` picks, into another buffer (as a buffer named before the answer moved
 * on would be: a slice of Node's pool, like the one named).
 */
function fakeSocket(): FakeSocket {
  const socket = new EventEmitter() as EventEmitter & { paused: boolean; stray: number };
  socket.paused = false;
  socket.stray = 0;
  const reads = new ClientReads(() => socket.stray++);
  let writes = 0;
  return Object.assign(socket, {
    reads,
    pause() {
      socket.paused = true;
      return socket;
    },
    resume() {
      socket.paused = false;
      return socket;
    },
    feed(parts: Buffer[]) {
      for (const part of parts) socket.emit('data', part);
    },
    deliver(parts: Buffer[], elsewhere: (n: number) => boolean = () => false) {
      for (const part of parts)
        for (let at = 0; at < part.length;) {
          const named = reads.onread.buffer();
          // Elsewhere: a small one is a slice of Node's shared pool, as the reader's header is.
          const target = elsewhere(writes++) ? Buffer.allocUnsafe(named.length) : named;
          const n = Math.min(target.length, part.length - at);
          target.set(part.subarray(at, at + n)); // not Buffer#copy: a test counts those
          reads.onread.callback(n, target);
          at += n;
        }
    },
  }) as unknown as FakeSocket;
}

/** `bytes` cut at `cuts` (offsets, any order, duplicates allowed). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let from = 0;
  for (const c of [...at, bytes.length]) {
    if (c > from) parts.push(bytes.subarray(from, c));
    from = c;
  }
  return parts;
}

describe('bulk-stream framing', () => {
  it('reads the same frames and digests however TLS cuts the bytes', async () => {
    const chunks = [randomBytes(1000), randomBytes(1), Buffer.alloc(0), randomBytes(3000)];
    const stream = Buffer.concat([
      frameHeader(FRAME.WAIT, 0, 0),
      ...chunks.flatMap((c, i) => [frameHeader(FRAME.DATA, i, c.length), c]),
      frameHeader(FRAME.END, 0, 0),
    ]);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(), { maxLength: 40 }), fc.array(fc.boolean()), async (cuts, away) => {
        const socket = fakeSocket();
        const reader = new ResponseReader(socket, socket.reads, (i) => chunks[i]?.length);
        // Most writes land where the reader named (in place), the writes `away` picks elsewhere.
        socket.deliver(split(stream, cuts), (n) => away[n] === true);
        const frames: ResponseFrame[] = [];
        for (let f = await reader.next(); ; f = await reader.next()) {
          frames.push(f);
          if (f.type === FRAME.END) break;
        }
        assert.equal(frames[0]!.type, FRAME.WAIT);
        const data = frames.filter((f) => f.type === FRAME.DATA);
        assert.deepEqual(
          data.map((f) => f.data),
          chunks,
        );
        assert.deepEqual(
          data.map((f) => f.digest),
          chunks.map((c) => createHash('sha256').update(c).digest('hex')),
        );
        assert.ok(reader.clean);
      }),
      { seed: fuzzSetting('FUZZ_SEED', 7), numRuns: fuzzSetting('FUZZ_RUNS', 300, 1) },
    );
  });

  it('takes a chunk’s bytes where TLS wrote them, copying none, and closes on bytes outside an answer', async (t) => {
    const chunk = randomBytes(50_000);
    const socket = fakeSocket();
    const reader = new ResponseReader(socket, socket.reads, () => chunk.length);
    const copies = t.mock.method(Buffer.prototype, 'copy');
    socket.deliver(
      split(Buffer.concat([frameHeader(FRAME.DATA, 0, chunk.length), chunk]), [3, 9, 100, 16393]),
    );
    const frame = await reader.next();
    assert.equal(frame.type, FRAME.DATA);
    assert.deepEqual(frame.data, chunk);
    assert.equal(copies.mock.callCount(), 0, 'the bytes were in place: nothing to copy');
    socket.deliver([frameHeader(FRAME.END, 0, 0)]);
    assert.equal((await reader.next()).type, FRAME.END);
    assert.ok(reader.clean);
    reader.detach();
    assert.equal(socket.stray, 0);
    socket.deliver([Buffer.from('x')]);
    assert.equal(socket.stray, 1, 'a byte while no answer is read: the connection is closed');
  });

  it(
    'refuses what breaks the framing: a length not asked for, an unknown type, bytes after the end',
    { timeout: 10_000 },
    async () => {
      const cases: [Buffer, RegExp][] = [
        [frameHeader(FRAME.DATA, 0, 5), /5 bytes, not 4/],
        [frameHeader(FRAME.DATA, 3, 4), /not asked for/],
        [frameHeader(9, 0, 0), /unknown frame type/],
        [frameHeader(FRAME.WAIT, 0, 2), /with a body/],
        [frameHeader(FRAME.ERROR, 0, 1 << 20), /an error of/],
        [Buffer.concat([frameHeader(FRAME.END, 0, 0), Buffer.from('x')]), /after the end/],
      ];
      for (const [bytes, expected] of cases) {
        const socket = fakeSocket();
        const reader = new ResponseReader(socket, socket.reads, (i) => (i === 0 ? 4 : undefined));
        socket.deliver([bytes]);
        await assert.rejects(
          (async () => {
            for (;;) if ((await reader.next()).type === FRAME.END) await reader.next();
          })(),
          expected,
        );
      }
      // A stray byte in the same read as END: the answer is whole, but the connection is not reusable
      // (the byte would be taken for the start of the next answer on it).
      const socket = fakeSocket();
      const reader = new ResponseReader(socket, socket.reads, () => 4);
      socket.deliver([Buffer.concat([frameHeader(FRAME.END, 0, 0), Buffer.from('x')])]);
      assert.equal((await reader.next()).type, FRAME.END);
      assert.equal(reader.clean, false);
    },
  );

  it('receives chunks into the caller’s buffers, refuses a repeated or skipped chunk before taking one, and lists the bodies not handed over', async () => {
    const chunk = (n: number) => Buffer.alloc(4, n);
    const data = (index: number) => Buffer.concat([frameHeader(FRAME.DATA, index, 4), chunk(index)]);
    const taken: Buffer[] = [];
    const into = {
      take: (size: number) => {
        if (taken.length >= 2) return undefined; // none left: the reader makes its own
        taken.push(Buffer.alloc(size));
        return taken.at(-1);
      },
      giveBack: () => {},
    };
    const socket = fakeSocket();
    const reader = new ResponseReader(socket, socket.reads, () => 4, into);
    socket.deliver([data(0), data(1), data(2)]);
    const got = [await reader.next(), await reader.next(), await reader.next()].map((f) =>
      f.type === FRAME.DATA ? f.data : Buffer.alloc(0),
    );
    assert.deepEqual(got, [chunk(0), chunk(1), chunk(2)]);
    assert.equal(got[0]!.buffer, taken[0]!.buffer, 'in the caller’s buffer');
    assert.equal(got[1]!.buffer, taken[1]!.buffer);
    assert.notEqual(got[2]!.buffer, taken[0]!.buffer);
    // A peer repeating (or skipping) a chunk is refused at its header, before a buffer is taken.
    for (const frames of [[data(0), data(0)], [data(1)]]) {
      const bad = fakeSocket();
      let takes = 0;
      const counting = { take: (size: number) => (takes++, Buffer.alloc(size)), giveBack: () => {} };
      const badReader = new ResponseReader(bad, bad.reads, () => 4, counting);
      bad.deliver(frames);
      await assert.rejects(
        (async () => {
          for (;;) await badReader.next();
        })(),
        /unexpected chunk/,
      );
      assert.equal(takes, frames.length - 1);
    }
    // Bodies received, or being received, and not handed over: the caller's to give back.
    const left = fakeSocket();
    const leftReader = new ResponseReader(left, left.reads, () => 4);
    left.deliver([data(0), data(1), frameHeader(FRAME.DATA, 2, 4), Buffer.alloc(2)]);
    assert.equal((await leftReader.next()).type, FRAME.DATA);
    assert.deepEqual(
      leftReader.unread().map((b) => b.length),
      [4, 4],
      'chunk 1 whole, chunk 2 half received',
    );
  });

  it('reads an error frame’s status and message, and the connection ending mid-answer', async () => {
    const socket = fakeSocket();
    const reader = new ResponseReader(socket, socket.reads, () => 4);
    socket.deliver([errorFrame({ code: 8, message: 'busy' })]);
    assert.deepEqual(await reader.next(), { type: FRAME.ERROR, error: { code: 8, message: 'busy' } });
    assert.ok(reader.clean, 'an error ends the answer');
    socket.deliver([Buffer.from('x')]);
    await assert.rejects(reader.next(), /after the end/, 'nothing may follow it');

    const cut = fakeSocket();
    const cutReader = new ResponseReader(cut, cut.reads, () => 4);
    cut.deliver([frameHeader(FRAME.DATA, 0, 4), Buffer.from('ab')]);
    cut.emit('end');
    await assert.rejects(cutReader.next(), /closed mid-answer/);
  });

  it('reads requests one at a time, cut anywhere, and refuses an oversized one', async () => {
    const a = encodeRequest({ digests: ['00'.repeat(32)], from: 'x', meta: { traceparent: 't' } });
    const b = encodeRequest({ digests: [], from: 'y', meta: {} });
    const socket = fakeSocket();
    const reader = new RequestReader(socket);
    socket.feed(split(Buffer.concat([a, b]), [1, 2, 3, 7, a.length + 1]));
    assert.deepEqual(parseRequest((await reader.next())!), {
      digests: ['00'.repeat(32)],
      from: 'x',
      meta: { traceparent: 't' },
    });
    assert.equal(parseRequest((await reader.next())!).from, 'y');
    socket.emit('end');
    assert.equal(await reader.next(), undefined);

    const big = fakeSocket();
    const refusing = new RequestReader(big);
    big.feed([Buffer.from([0xff, 0xff, 0xff, 0xff])]);
    await assert.rejects(refusing.next(), /a request of/);
    for (const body of ['[]', '{"digests":"x","from":"a"}', '{"digests":[1],"from":"a"}', 'null'])
      assert.throws(() => parseRequest(Buffer.from(body)), Error);
  });

  it('takes a request of MAX_REQUEST_BYTES and refuses one a byte longer', async () => {
    const framed = (length: number) => {
      const out = Buffer.alloc(4 + length, 0x20);
      out.writeUInt32BE(length, 0);
      return out;
    };
    const atLimit = fakeSocket();
    const taking = new RequestReader(atLimit);
    atLimit.feed([framed(MAX_REQUEST_BYTES)]);
    assert.equal((await taking.next())?.length, MAX_REQUEST_BYTES);

    // The whole body is sent: were it read, next() would resolve with it rather than hang.
    const over = fakeSocket();
    const refusing = new RequestReader(over);
    over.feed([framed(MAX_REQUEST_BYTES + 1)]);
    await assert.rejects(refusing.next(), new RegExp(`a request of ${MAX_REQUEST_BYTES + 1} bytes`));
  });
});
