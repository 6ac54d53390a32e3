import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingMessage, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';

const unavailable = natsUnavailable();

interface Received {
  topic: string;
  from: string;
  body: string;
}

/** Opens GET /v1/exchange/{topic} and collects what arrives. */
async function listen(agent: AgentProcess, topic: string) {
  const got: Received[] = [];
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    request(`${agent.url}/v1/exchange/${topic}`, resolve).on('error', reject).end();
  });
  assert.equal(res.statusCode, 200);
  createInterface({ input: res }).on('line', (line) => {
    const m = JSON.parse(line) as Received;
    got.push({ ...m, body: Buffer.from(m.body, 'base64').toString() });
  });
  return { got, close: () => res.destroy() };
}

describe('direct exchange between nodes', { skip: unavailable ?? false }, () => {
  let dir: string;
  let nats: NatsServer;
  const agents: AgentProcess[] = [];
  const send = (from: number, target: string, topic: string, body: string) =>
    fetch(`${agents[from]!.url}/v1/exchange/${target}/${topic}`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'text/plain' },
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-exchange-'));
    nats = await startNatsServer();
    for (const [i, zone] of ['z0', 'z1', 'z1'].entries()) {
      agents.push(
        await startAgentProcess([
          ...['--node-id', `n${i}`, '--zone', zone, '--region', 'r1', '--store.dir', join(dir, `n${i}`)],
          ...['--mesh', 'exchange', '--control-plane.servers', nats.url],
        ]),
      );
    }
    for (const agent of agents) await peersAlive(agent, 2);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('delivers to a named node, to a zone, in order, node to node', async () => {
    const on1 = await listen(agents[1]!, 'greetings');
    const on2 = await listen(agents[2]!, 'greetings');
    for (const text of ['one', 'two', 'three']) {
      const res = await send(0, 'n1', 'greetings', text);
      assert.equal(res.status, 202);
      assert.deepEqual(((await res.json()) as { delivered: string[] }).delivered, ['n1']);
    }
    const zone = await send(0, 'zone:z1', 'greetings', 'to the zone');
    assert.deepEqual(((await zone.json()) as { delivered: string[] }).delivered.sort(), ['n1', 'n2']);
    await eventually(
      () => Promise.resolve(on1.got.length === 4 && on2.got.length === 1 ? true : undefined),
      5000,
      'messages',
    );
    assert.deepEqual(
      on1.got.map((m) => m.body),
      ['one', 'two', 'three', 'to the zone'],
    );
    assert.deepEqual(
      on2.got.map(({ topic, from, body }) => ({ topic, from, body })),
      [{ topic: 'greetings', from: 'n0', body: 'to the zone' }],
    );
    on1.close();
    on2.close();
  });

  it('keeps messages for a topic nobody reads yet, and delivers to this node too', async () => {
    assert.equal((await send(1, 'all', 'later', 'hello everyone')).status, 202);
    const mine = await listen(agents[1]!, 'later');
    const theirs = await listen(agents[0]!, 'later');
    await eventually(
      () => Promise.resolve(mine.got.length === 1 && theirs.got.length === 1 ? true : undefined),
      5000,
      'queued',
    );
    mine.close();
    theirs.close();
  });

  it('refuses bad targets, bad topics and oversize messages', async () => {
    assert.equal((await send(0, 'nobody', 't', 'x')).status, 404);
    assert.equal((await send(0, 'zone:nowhere', 't', 'x')).status, 404);
    assert.equal((await send(0, 'n1', 'bad topic!', 'x')).status, 400);
    assert.equal((await send(0, 'n1', 'big', 'x'.repeat(1024 * 1024 + 1))).status, 413);
  });
});
