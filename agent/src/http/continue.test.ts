import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { continueWhenRead } from './continue.ts';
import { HttpError, sendError } from './errors.ts';
import { sendJson } from './json.ts';

/**
 * Sends the head of a PUT of `size` bytes with `Expect: 100-continue` to `path`, and its body only
 * once `100 Continue` comes; resolves with everything the server sent, once it has closed the
 * connection or sent a final answer after the body, and the body bytes sent.
 */
async function putExpecting(
  port: number,
  path: string,
  size: number,
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
        socket.write(Buffer.alloc(size));
      } else if (sent > 0 && /\r\n\r\nHTTP\/1\.1 [^]*\}$/.test(text)) {
        // The final answer after the body (a JSON one): this connection stays open, so end it here.
        socket.destroy();
        resolve();
      }
    });
  });
  socket.write(`PUT ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\nExpect: 100-continue\r\n\r\n`);
  await done;
  return { text, sent };
}

describe('continueWhenRead', () => {
  let server: Server;
  let port: number;

  before(async () => {
    server = createServer();
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/refused') {
        sendError(res, new HttpError(401, 'Unauthenticated', 'no')); // without reading the body
        return;
      }
      void (async () => {
        let bytes = 0;
        for await (const part of req) bytes += (part as Buffer).length;
        sendJson(res, 201, { bytes });
      })();
    };
    server.on('request', handle);
    server.on(
      'checkContinue',
      continueWhenRead((req, res) => server.emit('request', req, res)),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('answers a request refused before its body is read with no 100 Continue: its body is never sent', async () => {
    const { text, sent } = await putExpecting(port, '/refused', 8 * 2 ** 20);
    assert.match(text, /^HTTP\/1\.1 401 Unauthorized\r\n/, 'the final answer first, no 100 Continue');
    assert.match(text, /\r\nConnection: close\r\n/);
    assert.equal(sent, 0, 'no byte of the body sent');
  });

  // A 100 Continue never sent would leave both sides waiting: the timeout fails the test then.
  it(
    'sends 100 Continue once a handler reads the body, and the request goes on',
    { timeout: 10_000 },
    async () => {
      const { text, sent } = await putExpecting(port, '/read', 2 ** 20);
      assert.equal(sent, 2 ** 20);
      assert.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 Created\r\n/);
      assert.match(text, /\{"bytes":1048576\}$/);
    },
  );
});
