import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startAgentProcess } from '../harness/agent-process.ts';
import { AGENT_NODE_FLAGS, NO_MEMORY_REDUCER } from '../src/node-flags.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

describe('agent start-up', () => {
  it('stops with exit code 2 and a message naming the field when configuration is invalid', () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [[], {}, /invalid configuration: store: /],
      [['--store.dir', '/tmp/x', '--http.port', 'eighty'], {}, /http\.port/],
      [['--store.dir', '/tmp/x'], { EDGEMESH_STORE_MAX_BYTES: 'huge' }, /store\.maxBytes: not a byte size/],
      [['--store.dir', '/tmp/x', '--bogus'], {}, /Unknown option '--bogus'/],
    ];
    for (const [args, env, message] of cases) {
      const r = spawnSync(process.execPath, [MAIN, ...args], {
        env: { PATH: process.env.PATH, ...env },
        encoding: 'utf8',
      });
      assert.equal(r.status, 2, args.join(' '));
      assert.match(r.stderr, message);
    }
  });

  it('gives back what start-up left once it is over, before /readyz turns 200, with V8’s memory reducer off (the image’s flags) only', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-startup-'));
    const start = (name: string, nodeFlags: string[]) =>
      startAgentProcess(['--node-id', name, '--store.dir', join(dir, name)], 30_000, { nodeFlags });
    const started = await Promise.allSettled([
      start('image', [...AGENT_NODE_FLAGS]),
      start(
        'reducer-on',
        AGENT_NODE_FLAGS.filter((f) => f !== NO_MEMORY_REDUCER),
      ),
    ]);
    const agents = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      for (const r of started) if (r.status === 'rejected') throw r.reason;
      const [image, reducerOn] = await Promise.all(agents.map(async (a) => (await a.status()).counters));
      // One at once; another only after a minute of quiet (quiet-compaction.ts).
      assert.equal(image!.quietCompactions.count, 1, JSON.stringify(image!.quietCompactions));
      // With the reducer on, the compaction would wake it (node-flags.ts): none at start.
      assert.equal(reducerOn!.quietCompactions.count, 0, JSON.stringify(reducerOn!.quietCompactions));
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      await rm(dir, { recursive: true, force: true });
    }
  });
});
