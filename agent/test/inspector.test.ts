import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { collectGarbage, INSPECT_ON_SIGNAL, openInspector } from '../harness/inspector.ts';

/** A Node process started with `flags`, its stderr gathered as the harness gathers an agent's. */
function node(flags: string[], script: string) {
  const child = spawn(process.execPath, [...flags, '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  const stderr: string[] = [];
  child.stderr.on('data', (d) => stderr.push(String(d)));
  return { child, stderr };
}

describe('the harness’s inspector', () => {
  it('opens on a signal only when asked, then collects the heap', async () => {
    const { child, stderr } = node([INSPECT_ON_SIGNAL], 'setInterval(() => {}, 1000)');
    try {
      // Nothing listens until asked.
      await assert.rejects(collectGarbage(stderr, 1000), /announced no inspector/);
      await openInspector(child, stderr, 20_000);
      const heap = await collectGarbage(stderr, 20_000);
      assert.ok(heap.usedBytes > 0 && heap.usedBytes <= heap.totalBytes, JSON.stringify(heap));
      // Once open, asking again sends nothing and waits for nothing.
      await openInspector(child, stderr, 1);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('fails at once for a process that has exited', async () => {
    const { child, stderr } = node([INSPECT_ON_SIGNAL], '');
    await once(child, 'exit');
    await assert.rejects(openInspector(child, stderr, 20_000), /exited \(0\) before its inspector opened/);
  });
});
