import { once } from 'node:events';
import { connect } from 'node:net';

/**
 * Sends the head of a PUT of `size` bytes with `Expect: 100-continue` (and `headers`, each ending in
 * CRLF) to `path` on 127.0.0.1:`port`, and its body only once `100 Continue` comes; resolves with
 * everything the server sent, once it has closed the connection or sent a final answer after the
 * body, and the body bytes sent.
 */
export async function putExpectingContinue(
  port: number,
  path: string,
  size: number,
  headers = '',
): Promise<{ text: string; sent: number }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let text = '';
  let sent = 0;
  socket.on('error', () => undefined); // a reset is a close too
  const done = new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    socket.on('data', (data: Buffer) => {
      text += data.toString();
      if (sent === 0 && text.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        sent = size;
        socket.write(Buffer.alloc(size, 1));
      } else if (sent > 0 && /\r\n\r\nHTTP\/1\.1 [^]*\}$/.test(text)) {
        // The final answer after the body (a JSON one): this connection stays open, so end it here.
        socket.destroy();
        resolve();
      }
    });
  });
  socket.write(
    `PUT ${path} HTTP/1.1\r\nHost: x\r\n${headers}Content-Length: ${size}\r\nExpect: 100-continue\r\n\r\n`,
  );
  await done;
  return { text, sent };
}
