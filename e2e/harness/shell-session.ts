import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** What one command printed, and its exit status (for `cmd &`, that of starting it). */
export interface ShellResult {
  status: number;
  stdout: string;
  stderr: string;
  /**
   * What it has printed by now: a background job (`cmd &`) goes on writing to its own output after
   * the command returned, and only to that.
   */
  current(): { stdout: string; stderr: string };
}

/**
 * One `sh`, fed commands one at a time as a user types them into a terminal: variables a command
 * sets (`TOKEN=$(...)`) are there for the next, and a background job (`cmd &`) runs on. Each
 * command runs as written, in a `{ }` group (the current shell) whose output goes to files of its
 * own, with stdin from /dev/null.
 */
export interface ShellSession {
  /** Runs `command`; rejects when it runs longer than `timeoutMs` or the shell exits. */
  run(command: string, opts?: { timeoutMs?: number }): Promise<ShellResult>;
  /** Ends the shell and everything it started (its process group: background jobs too). */
  stop(): Promise<void>;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 600_000;
const MARKER = 'edgemesh-shell-session-done';

export function startShellSession(opts: { cwd: string; env: NodeJS.ProcessEnv }): ShellSession {
  const dir = mkdtempSync(join(tmpdir(), 'edgemesh-shell-'));
  // Its own process group, so that stop() reaches the background jobs as well.
  const shell = spawn('sh', [], { cwd: opts.cwd, env: opts.env, detached: true, stdio: 'pipe' });
  const exited = once(shell, 'exit');
  let shellErrors = '';
  shell.stderr.setEncoding('utf8').on('data', (chunk: string) => (shellErrors += chunk));
  const waiting = new Map<number, (status: number) => void>();
  createInterface({ input: shell.stdout }).on('line', (line) => {
    const [marker, n, status] = line.split(' ');
    if (marker === MARKER) waiting.get(Number(n))?.(Number(status));
  });
  let count = 0;
  let broken: string | undefined;

  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return ''; // not written yet
    }
  };

  return {
    async run(command, { timeoutMs = DEFAULT_COMMAND_TIMEOUT_MS } = {}) {
      if (broken) throw new Error(`the shell can run nothing more: ${broken}`);
      const n = ++count;
      const out = join(dir, `${n}.out`);
      const err = join(dir, `${n}.err`);
      const current = () => ({ stdout: read(out), stderr: read(err) });
      const done = new Promise<number>((resolve) => waiting.set(n, resolve));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          broken = `\`${command}\` did not end in ${timeoutMs / 1000} s`;
          reject(new Error(`${broken}; it printed: ${JSON.stringify(current())}`));
        }, timeoutMs);
      });
      const died = exited.then(([code]) => {
        broken = `the shell exited (${String(code)})`;
        throw new Error(`${broken} running \`${command}\`: ${shellErrors.trim()}`);
      });
      died.catch(() => undefined); // it rejects, if ever, once this command is long done: told to the next
      shell.stdin.write(
        `{\n${command}\n} >'${out}' 2>'${err}' </dev/null\nprintf '${MARKER} ${n} %s\\n' "$?"\n`,
      );
      try {
        const status = await Promise.race([done, timedOut, died]);
        return { status, ...current(), current };
      } finally {
        clearTimeout(timer);
        waiting.delete(n);
      }
    },
    async stop() {
      // The group outlives the shell when the shell exited before its background jobs.
      if (shell.pid !== undefined) {
        try {
          process.kill(-shell.pid, 'SIGTERM');
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error; // all gone already
        }
      }
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
