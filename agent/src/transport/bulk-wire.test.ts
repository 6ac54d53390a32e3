import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  encodeRequest,
  errorFrame,
  FRAME,
  frameHeader,
  parseRequest,
  RequestReader,
  ResponseReader,
  type ResponseFrame,
} from './bulk-wire.ts';

/** Enough of a socket for the readers: data and end events, pause and resume. */
function fakeSocket(): Socket & { feed(parts: Buffer[]): void } {
  const socket = new EventEmitter() as EventEmitter & { paused: boolean };
  socket.paused = false;
  return Object.assign(socket, {
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
  }) as unknown as Socket & { feed(parts: Buffer[]): void };
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
      fc.asyncProperty(fc.array(fc.nat(), { maxLength: 40 }), async (cuts) => {
        const socket = fakeSocket();
        const reader = new ResponseReader(socket, (i) => chunks[i]?.length);
        socket.feed(split(stream, cuts));
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
      { seed: 7, numRuns: 300 },
    );
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
        const reader = new ResponseReader(socket, (i) => (i === 0 ? 4 : undefined));
        socket.feed([bytes]);
        await assert.rejects(
          (async () => {
            for (;;) if ((await reader.next()).type === FRAME.END) await reader.next();
          })(),
          expected,
        );
      }
    },
  );

  it('reads an error frame’s status and message, and the connection ending mid-answer', async () => {
    const socket = fakeSocket();
    const reader = new ResponseReader(socket, () => 4);
    socket.feed([errorFrame({ code: 8, message: 'busy' })]);
    assert.deepEqual(await reader.next(), { type: FRAME.ERROR, error: { code: 8, message: 'busy' } });
    assert.ok(reader.clean, 'an error ends the answer');
    socket.feed([Buffer.from('x')]);
    await assert.rejects(reader.next(), /after the end/, 'nothing may follow it');

    const cut = fakeSocket();
    const cutReader = new ResponseReader(cut, () => 4);
    cut.feed([frameHeader(FRAME.DATA, 0, 4), Buffer.from('ab')]);
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
});
