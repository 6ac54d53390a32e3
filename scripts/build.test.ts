import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../agent/src/node-flags.ts';

const SCRIPT = fileURLToPath(new URL('./build.ts', import.meta.url));
const DOCKERFILE = fileURLToPath(new URL('../Dockerfile', import.meta.url));

/** The bundles the image runs, checked where no container engine is needed. */
describe('the image build (scripts/build.ts)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-build-'));
    const r = spawnSync(process.execPath, [SCRIPT, join(dir, 'dist')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes both entry points and the .proto beside them', () => {
    for (const f of ['agent.mjs', 'operator.mjs', 'proto/edgemesh/peer/v1/peer.proto'])
      assert.ok(existsSync(join(dir, 'dist', f)), f);
  });

  it('gives an agent that starts from the bundle alone (no node_modules, no TypeScript)', async () => {
    // Run from a directory with no node_modules above it, as in the image.
    const child = spawn(
      process.execPath,
      [
        ...AGENT_NODE_FLAGS,
        join(dir, 'dist', 'agent.mjs'),
        ...['--node-id', 'b1', '--zone', 'z', '--region', 'r', '--store.dir', join(dir, 'store')],
        ...['--http.port', '0', '--grpc.port', '0'],
      ],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      const ready = await new Promise<{ httpPort: number }>((resolve, reject) => {
        const errors: string[] = [];
        child.stderr.on('data', (d: Buffer) => errors.push(d.toString()));
        child.on('exit', (code) => reject(new Error(`agent exited ${code}: ${errors.join('')}`)));
        createInterface({ input: child.stdout }).on('line', (line) => {
          const entry = JSON.parse(line) as { msg?: string; httpPort?: number };
          if (entry.msg === 'agent ready') resolve({ httpPort: entry.httpPort! });
        });
      });
      const base = `http://127.0.0.1:${ready.httpPort}`;
      const put = await fetch(`${base}/v1/objects/bundle/check`, { method: 'PUT', body: 'bundled' });
      assert.equal(put.status, 201);
      assert.equal(await (await fetch(`${base}/v1/objects/bundle/check`)).text(), 'bundled');
      assert.match(await (await fetch(`${base}/metrics`)).text(), /^edgemesh_cache_entries\{/m);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('is what the Dockerfile runs: its ENTRYPOINT carries the flags of agent/src/node-flags.ts', () => {
    const entry = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(DOCKERFILE, 'utf8'))?.[1];
    assert.deepEqual(JSON.parse(entry ?? '[]'), ['node', ...AGENT_NODE_FLAGS, 'dist/agent.mjs']);
  });
});
