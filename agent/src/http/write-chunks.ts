import type { ServerResponse } from 'node:http';
import { once } from 'node:events';
import { chunkLength } from '../cache/chunking.ts';
import type { PassReader } from '../cache/object-store.ts';
import type { ObjectHead } from '../domain.ts';
import { drained } from '../transport/drained.ts';
import type { ByteRange } from './range.ts';

/**
 * Writes the bytes `bytes` of an object to `res` and ends it, with backpressure, reading each next
 * chunk while one is sent. `firstData` is the first chunk, already read (so a failure to read it was
 * the caller's to answer cleanly); `onPart` hears each part as it is given to the response, never
 * one read but not sent (the client gone). Each chunk's bytes go back to `pass` (`done`) once the
 * socket has taken them (the last once the response has closed), or, when the client went away,
 * once the response has closed (parts never written at once), each once: so a long read, and a
 * download being read, can reuse their buffers.
 * Resolves when the response has closed (finished, or the client went away); rejects when a later
 * chunk cannot be read (the caller aborts the response).
 */
export async function writeChunks(
  res: ServerResponse,
  head: Pick<ObjectHead, 'size' | 'chunkSize'>,
  bytes: ByteRange,
  pass: PassReader,
  firstData: Buffer,
  onPart: (part: Buffer) => void,
): Promise<void> {
  const first = Math.floor(bytes.start / head.chunkSize);
  const last = Math.floor(bytes.end / head.chunkSize);
  const slice = (index: number, data: Buffer) => {
    const offset = index * head.chunkSize;
    const from = Math.max(0, bytes.start - offset);
    const to = Math.min(chunkLength(head.size, head.chunkSize, index), bytes.end - offset + 1);
    return from === 0 && to === data.length ? data : data.subarray(from, to);
  };
  if (first === last) {
    // One part (every small object, a range within one chunk): ended at once and given back at the
    // response's end, as below, without the bookkeeping of parts in flight (2-3 us of the main
    // thread a 4 KiB hit under load, measured A/B against the general path).
    const part = slice(first, firstData);
    if (res.destroyed) return pass.done(part);
    try {
      onPart(part);
      res.end(part);
      if (!res.closed) await once(res, 'close');
    } finally {
      pass.done(part);
    }
    return;
  }
  // Parts given to the socket and not yet given back, each as many times as it was written. A part
  // whose write failed, or whose callback never comes (a socket destroyed before the response
  // knows it), goes back once the response has closed: the socket then reads
  // it no more.
  const sending = new Map<Buffer, number>();
  const giveBack = (sent: Buffer) => {
    const n = sending.get(sent);
    if (n === undefined) return; // given back already
    if (n > 1) sending.set(sent, n - 1);
    else sending.delete(sent);
    pass.done(sent);
  };
  const send = (sent: Buffer, end: boolean) => {
    onPart(sent);
    sending.set(sent, (sending.get(sent) ?? 0) + 1);
    if (end) return void res.end(sent);
    return res.write(sent, (error) => error || giveBack(sent));
  };
  const giveBackAll = () => {
    for (const [sent, n] of sending) for (let i = 0; i < n; i++) giveBack(sent);
  };
  // The response's end: its `close`, after it finished or when its client went away (an `error`
  // event rejects). One wait, not `stream.finished`: each of its calls puts six listeners on the
  // response, and two of them cost a 4 KiB local hit a fifth of the agent's main thread under load
  // (docs/benchmarks.md, eighth session).
  const ended = res.closed ? Promise.resolve() : once(res, 'close');
  ended.then(giveBackAll, giveBackAll);
  let part = slice(first, firstData);
  for (let index = first; index < last; index++) {
    if (res.destroyed) return pass.done(part); // the client went away: never given to the socket
    const next = pass.read(index + 1);
    next.catch(() => {}); // awaited below, unless the client goes away first
    if (!send(part, false)) await drained(res);
    if (res.destroyed) {
      // Read ahead and never sent.
      next.then(
        (data) => pass.done(data),
        () => {},
      );
      return;
    }
    part = slice(index + 1, await next);
  }
  if (res.destroyed) return pass.done(part);
  send(part, true); // given back once the response has ended
  await ended;
}
