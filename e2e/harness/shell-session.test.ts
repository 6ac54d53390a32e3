import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startShellSession } from './shell-session.ts';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('a shell session (commands one at a time, as typed into a terminal)', () => {
  it('keeps what a command sets for the next, in its working directory and environment', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'edgemesh-shell-test-'));
    writeFileSync(join(cwd, 'here'), 'a file\n');
    const shell = startShellSession({ cwd, env: { ...process.env, GREETING: 'hello' } });
    try {
      assert.equal((await shell.run('TOKEN=$(echo "$GREETING edge")')).status, 0);
      const echoed = await shell.run('echo "token: $TOKEN" # and a comment; cat here');
      assert.deepEqual([echoed.status, echoed.stdout, echoed.stderr], [0, 'token: hello edge\n', '']);
      const failed = await shell.run('cat missing-file');
      assert.equal(failed.status, 1);
      assert.match(failed.stderr, /missing-file/);
      assert.equal((await shell.run('cat here')).stdout, 'a file\n');
      assert.equal((await shell.run('read line; echo "read: $line"')).stdout, 'read: \n', 'stdin is empty');
    } finally {
      await shell.stop();
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('lets a background job run on, its output its own, and stop() ends it', async () => {
    const shell = startShellSession({ cwd: tmpdir(), env: process.env });
    const job = await shell.run("(echo started; echo $$ $(sh -c 'echo $PPID'); sleep 30; echo never) &");
    assert.equal(job.status, 0);
    let pid = 0;
    for (let i = 0; i < 100 && !pid; i++) {
      pid = Number(job.current().stdout.split('\n')[1]?.split(' ')[1] ?? 0);
      if (!pid) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(pid > 0 && alive(pid), 'the job runs after its command returned');
    assert.equal(
      (await shell.run('echo next')).stdout,
      'next\n',
      "the job's output is not the next command's",
    );
    await shell.stop();
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!alive(pid), 'stop() ended the background job');
    assert.doesNotMatch(job.current().stdout, /never/);
  });

  it('gives up on a command that does not end, and then runs nothing more', async () => {
    const shell = startShellSession({ cwd: tmpdir(), env: process.env });
    try {
      await assert.rejects(
        shell.run('echo waiting; sleep 30', { timeoutMs: 300 }),
        /did not end in 0.3 s.*waiting/,
      );
      await assert.rejects(shell.run('echo more'), /can run nothing more/);
    } finally {
      await shell.stop();
    }
  });

  it('says so when the shell itself exits (a syntax error ends a non-interactive sh)', async () => {
    const shell = startShellSession({ cwd: tmpdir(), env: process.env });
    try {
      await assert.rejects(shell.run('echo (('), /the shell exited .* running `echo \(\(`: .*syntax error/is);
    } finally {
      await shell.stop();
    }
  });
});
