import type { EventEmitter } from 'node:events';

/**
 * Resolves when `stream` (a socket, an HTTP response) asks for more after write() said false, or
 * closes: a writer awaits it, then checks whether the other side went away.
 */
export function drained(stream: Pick<EventEmitter, 'once' | 'off'>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}
