import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('./local-mesh.ts', import.meta.url));

describe('the README main-job command (npm start)', () => {
  it('runs the local mesh demo end to end', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-demo-'));
    try {
      const r = spawnSync(
        process.execPath,
        [SCRIPT, '--once', '--size-mib', '9', '--dir', join(dir, 'demo')],
        { encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 0, r.stderr);
      // Replicas reach the other owners in the background, so a read is local or from a peer.
      assert.match(r.stdout, /GET {2}from edge-b: source=(peer|local) .* identical=true/);
      assert.match(r.stdout, /GET {2}from edge-c: source=(peer|local) .* identical=true/);
      assert.match(r.stdout, /GET {2}from edge-b: source=local .* identical=true/);
      assert.match(r.stdout, /the origin served 1 request\(s\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
