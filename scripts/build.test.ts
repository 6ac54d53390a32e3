import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { isBuiltin } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { eventually, startAgentProcess } from '../agent/harness/agent-process.ts';
import { AGENT_MALLOC_ENV, AGENT_NODE_FLAGS } from '../agent/src/node-flags.ts';

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

  it('reaches Node built-ins by require, never by a static ES import that would run their getters', () => {
    // `import 'node:http'` alone makes Node load its copy of undici (the namespace reads the
    // module's `WebSocket` getter); the banner's `import ... from 'node:module'` is the one allowed.
    // (Dynamic imports stay: they run when reached; the OTLP test below needs them whole.)
    const imports: string[] = [];
    for (const f of readdirSync(join(dir, 'dist')).filter((n) => n.endsWith('.mjs'))) {
      const code = readFileSync(join(dir, 'dist', f), 'utf8');
      for (const m of code.matchAll(/\bimport\s*(?:[\w${},*\s]+?\s*from\s*)?["']([^"']+)["']/g))
        if (isBuiltin(m[1]!) && m[1] !== 'node:module') imports.push(`${f}: ${m[1]}`);
    }
    assert.deepEqual(imports, []);
  });

  it('gives an agent that starts from the bundle alone (no node_modules, no TypeScript) and exports its traces', async () => {
    // An OTLP receiver: the exporter reaches node:http by a dynamic import the bundle must keep whole.
    const exported: string[] = [];
    const receiver = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        exported.push(`${req.method} ${req.url}`);
        res.end('{}');
      });
    });
    receiver.listen(0, '127.0.0.1');
    await once(receiver, 'listening');
    const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    // The bundle sits in a temporary directory with no node_modules above it, as in the image.
    const agent = await startAgentProcess(
      ['--node-id', 'b1', '--zone', 'z', '--region', 'r', '--store.dir', join(dir, 'store')].concat([
        '--telemetry.otlp-endpoint',
        endpoint,
      ]),
      20_000,
      { main: join(dir, 'dist', 'agent.mjs'), nodeFlags: AGENT_NODE_FLAGS },
    );
    try {
      const put = await fetch(`${agent.url}/v1/objects/bundle/check`, { method: 'PUT', body: 'bundled' });
      assert.equal(put.status, 201);
      assert.equal(await (await fetch(`${agent.url}/v1/objects/bundle/check`)).text(), 'bundled');
      assert.match(await (await fetch(`${agent.url}/metrics`)).text(), /^edgemesh_cache_entries\{/m);
      await eventually(
        () => Promise.resolve(exported.includes('POST /v1/traces') ? true : undefined),
        15_000,
        `the PUT's trace at the OTLP receiver (agent log: ${agent.logs.join('').slice(-600)})`,
      );
    } finally {
      await agent.stop('SIGKILL');
      receiver.close();
    }
  });

  it('is what the Dockerfile runs: its ENTRYPOINT carries the flags of agent/src/node-flags.ts', () => {
    const entry = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(DOCKERFILE, 'utf8'))?.[1];
    assert.deepEqual(JSON.parse(entry ?? '[]'), ['node', ...AGENT_NODE_FLAGS, 'dist/agent.mjs']);
  });

  it('sets the environment of AGENT_MALLOC_ENV (node-flags.ts) in the image', () => {
    const lines = [...readFileSync(DOCKERFILE, 'utf8').matchAll(/^ENV (.*)$/gm)].map((m) => m[1]!);
    const set = Object.fromEntries(
      lines.flatMap((l) => l.split(/\s+/)).map((kv) => kv.split('=', 2) as [string, string]),
    );
    for (const [k, v] of Object.entries(AGENT_MALLOC_ENV)) assert.equal(set[k], v, k);
  });
});
