import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import {
  cpuReading,
  cpuSince,
  cpuTableRow,
  kindOf,
  medianPerGB,
  parseStat,
  readThreads,
  type ThreadCpu,
} from './thread-cpu.ts';

/**
 * A child that does one thing each time it is told to, and says when it is done: `main` spends 0.3
 * s of its main thread's CPU in user space and 0.15 s in the kernel (reads of /dev/zero), measured by
 * the thread itself; `pool` has libuv's pool spend 0.3 s or more (PBKDF2 jobs).
 */
const CHILD = `
const { pbkdf2 } = require('node:crypto');
const { openSync, readSync } = require('node:fs');
const { promisify } = require('node:util');
const { createInterface } = require('node:readline');
process.stdout.write('ready\\n');
createInterface({ input: process.stdin }).on('line', async (what) => {
  if (what === 'main') {
    const start = process.threadCpuUsage();
    while (process.threadCpuUsage().user - start.user < 300_000);
    const zero = openSync('/dev/zero', 'r');
    const buffer = Buffer.alloc(16 * 2 ** 20);
    while (process.threadCpuUsage().system - start.system < 150_000) readSync(zero, buffer);
  } else {
    // Jobs until the process has used 0.3 s more (the idle main thread adds next to nothing).
    const at = process.cpuUsage().user;
    while (process.cpuUsage().user - at < 300_000) {
      await Promise.all([1, 2].map((i) => promisify(pbkdf2)('p', 's' + i, 100_000, 32, 'sha256')));
    }
  }
  process.stdout.write(what + ' done\\n');
});
`;

const noProc = existsSync('/proc/self/task') ? false : 'no /proc/PID/task here (not Linux)';

describe('thread-cpu', { skip: noProc }, () => {
  it("puts the main thread's CPU, user and kernel, under main and libuv's pool's under libuv", async () => {
    const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      assert.equal((await lines.next()).value, 'ready');
      const run = async (what: string) => {
        const before = readThreads(child.pid!);
        const reading = cpuReading(child.pid!);
        child.stdin.write(`${what}\n`);
        assert.equal((await lines.next()).value, `${what} done`);
        const used = cpuSince(child.pid!, before);
        // The process's own count covers its threads' (the same ticks, summed by the kernel).
        const { seconds, threads } = reading();
        const sum = Object.values(threads).reduce((n, t) => n + t.user + t.system, 0);
        assert.ok(seconds >= sum - 0.05 && seconds >= 0.25, `process ${seconds} s, threads ${sum} s`);
        return used;
      };
      const main = await run('main');
      // Spent as measured by the thread itself; read here in ticks of 10 ms, each thread's rounded
      // down, and the kernel's user and system split estimated: a margin below what was spent.
      assert.ok(main.main.user >= 0.25, `main ${JSON.stringify(main)}`);
      assert.ok(main.main.system >= 0.1, `main ${JSON.stringify(main)}`);
      const pool = await run('pool');
      // Nothing of it can be missed: the reading before was taken before the child was told.
      assert.ok(pool.libuv.user >= 0.2, `libuv ${JSON.stringify(pool)}`);
      assert.ok(pool.libuv.user > pool.main.user, `pool vs main ${JSON.stringify(pool)}`);
    } finally {
      child.kill();
      if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    }
  });

  it('reads a stat line whose name holds spaces and parentheses, and refuses a malformed one', () => {
    const fields = ['S', ...Array.from({ length: 10 }, (_, i) => String(i + 1)), '37', '12', '0', '0'];
    assert.deepEqual(parseStat(`123 (a) b (c) ${fields.join(' ')}`), {
      name: 'a) b (c',
      userTicks: 37,
      systemTicks: 12,
    });
    assert.equal(parseStat('123 no name 1 2 3'), undefined);
    assert.equal(parseStat('123 (x) S 1 2'), undefined); // cut short: no times
  });

  it("names each of Node 24's threads by kind", () => {
    assert.equal(kindOf(true, 'MainThread'), 'main');
    assert.equal(kindOf(false, 'V8Worker'), 'v8');
    assert.equal(kindOf(false, 'libuv-worker'), 'libuv');
    assert.equal(kindOf(false, 'DelayedTaskSche'), 'other');
    assert.equal(kindOf(false, 'SignalInspector'), 'other');
  });

  it('sums runs into the median CPU per GB of each kind, kernel apart, and prints a row of it', () => {
    const run = (main: number, system: number): ThreadCpu => ({
      main: { user: main, system },
      v8: { user: 0.5, system: 0 },
      libuv: { user: 0, system: 2 * system },
      other: { user: 0, system: 0 },
    });
    // Three runs over 0.5 GB: the medians are the middle run's, doubled.
    const cpu = medianPerGB([run(1, 0.1), run(3, 0.3), run(2, 0.2)], 0.5e9);
    assert.deepEqual(cpu.total, { main: 4.4, v8: 1, libuv: 0.8, other: 0 });
    assert.deepEqual(cpu.kernel, { main: 0.4, v8: 0, libuv: 0.8, other: 0 });
    assert.equal(cpuTableRow('side', cpu), '# side | 4.40 (0.40) | 1.00 (0.00) | 0.80 (0.80) | 0.00 (0.00)');
  });
});
