import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgentProcess } from '../harness/agent-process.ts';

const MiB = 2 ** 20;

/** Mounts a 12 MiB tmpfs (a disk that really fills up); the reason when it cannot. */
async function smallDisk(): Promise<{ dir: string } | { skip: string }> {
  if (process.getuid?.() !== 0) return { skip: 'needs root to mount a small tmpfs' };
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-fulldisk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    return { skip: `cannot mount tmpfs here: ${(error as Error).message.split('\n')[0]}` };
  }
}

const disk = await smallDisk();

describe('a full disk', { skip: 'skip' in disk ? disk.skip : false }, () => {
  const dir = 'dir' in disk ? disk.dir : '';
  let agent: AgentProcess;

  before(async () => {
    // The configured limit (1 GiB) is far above what the disk holds, as when a volume is shared.
    agent = await startAgentProcess([
      '--store.dir',
      dir,
      '--store.max-bytes',
      '1Gi',
      '--store.scrub-on-start',
      'false',
    ]);
  });
  after(async () => {
    await agent?.stop();
    execFileSync('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  });

  it('answers 507, keeps nothing of the failed write, and keeps serving', async () => {
    const small = randomBytes(MiB);
    assert.equal((await fetch(`${agent.url}/v1/objects/before`, { method: 'PUT', body: small })).status, 201);
    const res = await fetch(`${agent.url}/v1/objects/too/much`, {
      method: 'PUT',
      body: randomBytes(20 * MiB),
    });
    assert.equal(res.status, 507);
    const body = (await res.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'InsufficientStorage');
    const status = await agent.status();
    assert.equal(status.cache.chunkBytes, small.length);
    assert.deepEqual(Buffer.from(await (await fetch(`${agent.url}/v1/objects/before`)).arrayBuffer()), small);
    assert.equal((await fetch(`${agent.url}/v1/objects/after`, { method: 'PUT', body: small })).status, 201);
  });
});
