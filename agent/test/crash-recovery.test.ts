import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';
import { chunkSizeFor, digestOf } from '../src/cache/chunking.ts';

const MiB = 2 ** 20;

describe('an agent killed with SIGKILL mid-write, with a chunk rotting on disk meanwhile', () => {
  let dir: string;
  let agent: AgentProcess;
  const keep = randomBytes(9 * MiB);
  const rot = randomBytes(6 * MiB);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-crash-'));
  });
  after(async () => {
    await agent?.stop('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('restarts with a rebuilt index, the damaged object dropped and the interrupted write gone', async () => {
    const store = join(dir, 'store');
    agent = await startAgentProcess(['--node-id', 'crashy', '--store.dir', store]);
    for (const [key, body] of [
      ['keep/me', keep],
      ['rot/me', rot],
    ] as const) {
      assert.equal((await fetch(`${agent.url}/v1/objects/${key}`, { method: 'PUT', body })).status, 201);
    }

    // A large upload in progress when the process dies.
    const upload = request(`${agent.url}/v1/objects/interrupted`, {
      method: 'PUT',
      headers: { 'Content-Length': String(64 * MiB) },
    });
    upload.on('error', () => undefined); // the connection dies with the process
    for (let i = 0; i < 20; i++) upload.write(randomBytes(MiB));
    await eventually(
      async () => ((await agent.status()).cache.chunks >= 6 ? true : undefined),
      10_000,
      'upload chunks on disk',
    );
    assert.equal(await agent.stop('SIGKILL'), 'SIGKILL');

    // Silent corruption of one stored chunk while the node is down.
    const victim = digestOf(rot.subarray(chunkSizeFor(rot.length)));
    const file = join(store, 'chunks', victim.slice(0, 2), victim);
    const bytes = await readFile(file);
    bytes[12345]! ^= 0x40;
    await writeFile(file, bytes);

    agent = await startAgentProcess(['--node-id', 'crashy', '--store.dir', store]);
    const status = await eventually(async () => {
      const s = await agent.status();
      return s.scrub.state === 'done' ? s : undefined;
    });
    assert.equal(status.scrub.corrupt, 1);
    assert.equal(status.counters.corruptChunks, 1);
    assert.equal(status.cache.entries, 1);
    assert.equal(status.cache.chunkBytes, keep.length);

    const kept = await fetch(`${agent.url}/v1/objects/keep/me`);
    assert.equal(kept.status, 200);
    assert.deepEqual(Buffer.from(await kept.arrayBuffer()), keep);
    assert.equal((await fetch(`${agent.url}/v1/objects/rot/me`)).status, 404);
    assert.equal((await fetch(`${agent.url}/v1/objects/interrupted`)).status, 404);
    assert.deepEqual(await readdir(join(store, 'tmp')), []);
    const chunkFiles = (
      await readdir(join(store, 'chunks'), { recursive: true, withFileTypes: true })
    ).filter((e) => e.isFile());
    assert.equal(chunkFiles.length, 3, "only the kept object's chunks remain");
  });
});
