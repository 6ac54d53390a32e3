import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { putExpectingContinue } from '../../harness/expect-continue.ts';
import { continueWhenRead } from './continue.ts';
import { HttpError, sendError } from './errors.ts';
import { sendJson } from './json.ts';

const putExpecting = (port: number, path: string, size: number) => putExpectingContinue(port, path, size);

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
