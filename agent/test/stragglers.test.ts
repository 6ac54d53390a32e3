import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, peersAlive, startAgentProcess } from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';

const MiB = 2 ** 20;

/**
 * The endgame over the real transports (bulk stream, gRPC, mutual TLS), between agent processes:
 * fetch/download.test.ts tests the rules with scripted holders; this shows a real slow holder is
 * overtaken and that the calls ended for it are neither a failure nor a lost byte.
 */
describe(
  'a download with a holder far slower than the other (three agent processes on a real NATS control plane)',
  { skip: natsUnavailable() ?? false },
  () => {
    let dir: string;
    let nats: NatsServer;
    let slow: AgentProcess;
    let fast: AgentProcess;
    let reader: AgentProcess;
    // 12 chunks of 4 MiB. At its cap, the slow holder sends a chunk every 32 s, after a burst of two or
    // three at once (its budget counts from its own start): what it is asked for at the start (six
    // chunks, without the endgame) takes it minutes.
    const data = randomBytes(48 * MiB);
    const cap = 128 * 1024;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'edgemesh-stragglers-'));
      nats = await startNatsServer();
      const args = (id: string) => [
        ...['--node-id', id, '--store.dir', join(dir, id)],
        ...['--mesh', 'stragglers', '--control-plane.servers', nats.url],
      ];
      fast = await startAgentProcess(args('fast'));
      slow = await startAgentProcess([...args('slow'), '--transfer.upload-bytes-per-second', String(cap)]);
      // The reader owns no keys (weight 0): no copy is made on it, it downloads.
      reader = await startAgentProcess([...args('reader'), '--weight', '0']);
      await Promise.all([peersAlive(fast, 2), peersAlive(slow, 2), peersAlive(reader, 2)]);
    });
    after(async () => {
      await Promise.all([slow?.stop(), fast?.stop(), reader?.stop()]);
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    it(
      "gets the slow holder's chunks from the other, whole, without blaming the slow one",
      { timeout: 120_000 },
      async () => {
        const put = await fetch(`${fast.url}/v1/objects/wide/blob`, { method: 'PUT', body: data });
        assert.equal(put.status, 201);
        // The slow holder owns the key too (R = 3): its copy comes from the fast one (its cap is on
        // what it sends, not what it gets).
        await eventually(
          async () => ((await slow.status()).cache.entries >= 1 ? true : undefined),
          30_000,
          'the copy on the slow holder',
        );
        const slowBefore = (await slow.status()).counters.bytesToPeers;
        // The fast holder sent the slow one its copy: counted from here on.
        const fastBefore = (await fast.status()).counters.bytesToPeers;

        const got = await fetch(`${reader.url}/v1/objects/wide/blob`);
        assert.equal(got.status, 200);
        assert.equal(got.headers.get('x-edgemesh-source'), 'peer');
        assert.deepEqual(Buffer.from(await got.arrayBuffer()), data);

        const status = await reader.status();
        const from = status.counters.bytesFromPeer;
        const fromSlow = from.slow ?? 0;
        const fromFast = from.fast ?? 0;
        // The reader kept each chunk once; the holders sent each chunk once, but for at most one: a
        // chunk the slow holder's cap lets through while the fast one brings it may cross twice.
        assert.equal(fromSlow + fromFast, data.length, JSON.stringify(from));
        const slowSent = (await slow.status()).counters.bytesToPeers - slowBefore;
        const fastSent = (await fast.status()).counters.bytesToPeers - fastBefore;
        assert.ok(
          slowSent + fastSent >= data.length && slowSent + fastSent <= data.length + 4 * MiB,
          `sent: slow ${slowSent}, fast ${fastSent}`,
        );
        // The slow holder was asked (it holds the key) and got the download nothing past its burst and
        // what its cap let through meanwhile; the rest it owed came from the fast one.
        assert.ok(fromSlow <= 3 * 4 * MiB, JSON.stringify(from));
        assert.ok(slowSent > 0, 'the slow holder was asked');
        assert.deepEqual(status.counters.badChunksByPeer, {});
        assert.ok(
          !reader.logs.some((l) => /peer failed during fetch/.test(l) && l.includes('"peer":"slow"')),
          'no failure logged for the slow holder',
        );
      },
    );
  },
);
