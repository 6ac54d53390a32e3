import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { Inbox } from '../exchange/inbox.ts';
import { stubTransport } from '../transport/stub-transport.ts';
import { type ExchangeDeps, sendHandler } from './exchange.ts';

/** POSTs one message to `target` through sendHandler(deps) on a real HTTP server; its status and answer. */
async function send(deps: ExchangeDeps, target: string): Promise<{ status: number; body: unknown }> {
  const handle = sendHandler(deps);
  const server = createServer((req, res) => void handle(req, res, { target, topic: 't' }));
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/v1/exchange/${target}/t`, {
      method: 'POST',
      body: 'hi',
    });
    return { status: res.status, body: await res.json() };
  } finally {
    server.close();
  }
}

describe('POST /v1/exchange', () => {
  const delivered: string[] = [];
  const n2 = {
    id: 'n2',
    transport: stubTransport('n2', 'n2:1', {
      deliver: (m) => (delivered.push(m.topic), Promise.resolve()),
    }),
  };

  it('tries a named node that is not alive before answering "no such target" (a partition just healed)', async () => {
    let alive = false;
    const tried: string[] = [];
    const deps: ExchangeDeps = {
      inbox: new Inbox(),
      nodeId: 'n1',
      targets: () => ({ self: false, peers: alive ? [n2] : [] }),
      reviveNow: (target) => {
        tried.push(target);
        alive = true; // it answered
        return Promise.resolve(true);
      },
      timeoutMs: 1000,
    };
    const back = await send(deps, 'n2');
    assert.deepEqual([back.status, back.body], [202, { delivered: ['n2'], failed: [] }]);
    assert.deepEqual([tried, delivered], [['n2'], ['t']]);
    // Still not alive after the try: 404, as before.
    const gone = await send({ ...deps, targets: () => ({ self: false, peers: [] }) }, 'n3');
    assert.equal(gone.status, 404);
    assert.deepEqual(tried, ['n2', 'n3']);
  });
});
