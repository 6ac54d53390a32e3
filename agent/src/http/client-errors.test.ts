import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Counters } from '../telemetry/counters.ts';
import { checkExpectationListener, clientErrorListener } from './client-errors.ts';

/** An answer as it came off the wire: its status, headers (lower-case names) and body. */
interface Wire {
  text: string;
  status: number;
  headers: Record<string, string>;
  body: string;
}

function parse(text: string): Wire {
  const end = text.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = text.slice(0, end < 0 ? text.length : end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return {
    text,
    status: Number(statusLine.split(' ')[1]),
    headers,
    body: end < 0 ? '' : text.slice(end + 4),
  };
}

/**
 * Opens a connection, sends `request`, and resolves with everything the server sent once it has
 * closed the connection (an end or a reset). `onData`: called with the socket on each part received.
 */
async function exchange(
  port: number,
  request: string,
  onData?: (socket: Socket, received: string) => void,
): Promise<Wire> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let received = '';
  socket.on('data', (data: Buffer) => {
    received += data.toString('latin1');
    onData?.(socket, received);
  });
  socket.on('error', () => undefined); // a reset is a close too
  const closed = once(socket, 'close');
  socket.write(request);
  await closed;
  return parse(received);
}

describe('clientErrorListener and checkExpectationListener', () => {
  let server: Server;
  let port: number;
  let counters: Counters;
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (text: string) => void lines.push(JSON.parse(text)) });

  before(async () => {
    counters = new Counters();
    server = createServer(
      // Short limits so that each refusal comes soon.
      { maxHeaderSize: 1024, headersTimeout: 300, requestTimeout: 0, connectionsCheckingInterval: 25 },
      (req, res) => {
        if (req.url === '/stream') {
          // The answer starts before the body is read.
          res.writeHead(200, { 'Content-Type': 'text/plain' });
          res.write('partial');
          return;
        }
        req.resume();
        req.on('end', () => res.end('ok'));
      },
    );
    server.on('clientError', clientErrorListener({ counters, logger }));
    server.on('checkExpectation', checkExpectationListener({ counters }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  /** Checks `answer` is the API's JSON error `code` with `status`, closing the connection. */
  function assertJsonError(answer: Wire, status: number, code: string) {
    assert.equal(answer.status, status, answer.text);
    assert.equal(answer.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(answer.headers.connection, 'close');
    assert.equal(answer.headers['content-length'], String(Buffer.from(answer.body, 'latin1').length));
    const error = (JSON.parse(answer.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, code);
    assert.ok(error.message.length > 0);
    return error;
  }

  it('answers a malformed request line or header 400 BadRequest with the JSON error body, and closes', async () => {
    const line = await exchange(port, 'HELLO\r\n\r\n');
    assert.match(assertJsonError(line, 400, 'BadRequest').message, /^the request is not valid HTTP: /);
    const header = await exchange(port, 'GET /v1/status HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n');
    assertJsonError(header, 400, 'BadRequest');
    // Node's parser's own refusal of a transfer coding it cannot decode.
    const coding = await exchange(port, 'PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc');
    assertJsonError(coding, 400, 'BadRequest');
  });

  it('answers a HEAD it refuses with the same headers and no body', async () => {
    const answer = await exchange(port, 'HEAD / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n');
    assert.equal(answer.status, 400);
    assert.equal(answer.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(answer.headers.connection, 'close');
    assert.ok(Number(answer.headers['content-length']) > 0);
    assert.equal(answer.body, '', 'no body after the head');
  });

  it('answers a request that said Connection: close though bytes follow it, and ignores them', async () => {
    // As Node's client sends a HEAD with a body: no Content-Length, the byte after the head.
    const answer = await exchange(port, 'HEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\0');
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.headers.connection, 'close');
    assert.equal(answer.body, '');
  });

  it('answers headers larger than maxHeaderSize 431 RequestHeaderFieldsTooLarge', async () => {
    const answer = await exchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(2048)}\r\n\r\n`);
    assertJsonError(answer, 431, 'RequestHeaderFieldsTooLarge');
  });

  it('answers headers that do not come within headersTimeout 408 RequestTimeout', async () => {
    const answer = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n');
    assertJsonError(answer, 408, 'RequestTimeout');
  });

  it('answers an Expect other than 100-continue 417 ExpectationFailed with the JSON error body', async () => {
    const answer = await exchange(
      port,
      'GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n',
    );
    const error = assertJsonError(answer, 417, 'ExpectationFailed');
    assert.equal(error.message, 'Expect: 200-ok cannot be met: only 100-continue is supported');
  });

  it('never writes an answer into a response that has started: the connection is destroyed', async () => {
    const answer = await exchange(
      port,
      'POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      (socket, received) => {
        // Once the answer has started, a chunk size that is no number.
        if (received.endsWith('partial\r\n')) socket.write('zz\r\n');
      },
    );
    assert.equal(answer.status, 200);
    assert.doesNotMatch(answer.text, /HTTP\/1\.1 400/, 'nothing written after the start of the response');
  });

  it('does not count a connection reset as a refusal, and destroys its socket', async () => {
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const refused = { ...Object.fromEntries(counters.clientsRefused) };
    const failed = once(server, 'clientError') as Promise<[NodeJS.ErrnoException, Socket]>;
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n');
    socket.resetAndDestroy();
    const [error, serverSide] = await failed;
    assert.equal(error.code, 'ECONNRESET');
    assert.ok(serverSide.destroyed);
    assert.deepEqual(Object.fromEntries(counters.clientsRefused), refused);
  });

  it('counts each refusal by its reason, and logs none above debug level', () => {
    assert.deepEqual(Object.fromEntries(counters.clientsRefused), {
      malformed: 5, // three, a HEAD, and the chunk size in a started response (not the bytes after a close)
      'too-large': 1,
      timeout: 1,
      expectation: 1,
    });
    assert.deepEqual(
      lines.filter((line) => line.level > 20),
      [],
    );
  });
});
