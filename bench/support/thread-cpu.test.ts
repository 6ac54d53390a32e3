import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { cpuSince, readThreads } from './thread-cpu.ts';

/**
 * A child that, once told to, spends 0.3 s of its main thread's CPU (measured by the thread itself)
 * and then 0.3 s or more of CPU in libuv's pool (PBKDF2 jobs), and says when each is done.
 */
const CHILD = `
const { pbkdf2 } = require('node:crypto');
const { promisify } = require('node:util');
process.stdout.write('ready\\n');
process.stdin.once('data', async () => {
  const start = process.threadCpuUsage().user;
  while (process.threadCpuUsage().user - start < 300_000);
  process.stdout.write('main done\\n');
  const at = process.cpuUsage().user;
  // Jobs until the pool has used 0.3 s (the process's CPU less what the idle main thread adds).
  while (process.cpuUsage().user - at < 300_000) {
    await Promise.all([1, 2].map((i) => promisify(pbkdf2)('p', 's' + i, 100_000, 32, 'sha256')));
  }
  process.stdout.write('pool done\\n');
});
`;

describe('thread-cpu', () => {
  it("puts the main thread's CPU under main and libuv's pool's under libuv", async () => {
    const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      assert.equal((await lines.next()).value, 'ready');
      const before = readThreads(child.pid!);
      assert.equal([...before.values()].filter((t) => t.kind === 'main').length, 1);
      child.stdin.write('go\n');
      assert.equal((await lines.next()).value, 'main done');
      const afterMain = cpuSince(child.pid!, before);
      // 0.3 s spent, read in ticks of 10 ms: at least 0.29 (nothing else ran on it meanwhile).
      assert.ok(afterMain.main.user >= 0.29, `main ${JSON.stringify(afterMain)}`);
      const middle = readThreads(child.pid!);
      assert.equal((await lines.next()).value, 'pool done');
      const afterPool = cpuSince(child.pid!, middle);
      assert.ok(afterPool.libuv.user >= 0.2, `libuv ${JSON.stringify(afterPool)}`);
      assert.ok(afterPool.libuv.user > afterPool.main.user, `pool vs main ${JSON.stringify(afterPool)}`);
    } finally {
      child.kill();
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    }
  });
});
