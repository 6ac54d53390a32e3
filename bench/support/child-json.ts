import { spawn } from 'node:child_process';
import { once } from 'node:events';

/**
 * Runs `node <args>` in a process of its own (so that one measurement's memory is not another's)
 * and returns the JSON object its last line of output holds; its stderr goes to ours.
 */
export async function childJson<T>(
  args: readonly string[],
  what: string,
  env?: NodeJS.ProcessEnv,
): Promise<T> {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    ...(env ? { env } : {}),
  });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`${what} exited with ${code}`);
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}
