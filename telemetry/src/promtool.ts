import { spawn } from 'node:child_process';

/**
 * For tests: `promtool check metrics` (Prometheus's linter, from Debian's `prometheus` package) on
 * a scrape. Resolves to what it complains of ('' when nothing, with exit code 0), or undefined when
 * promtool is not installed.
 */
export function promtoolCheck(
  scrape: string,
  promtool = process.env.PROMTOOL ?? 'promtool',
): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'ENOENT' ? resolve(undefined) : reject(error),
    );
    child.on('close', (code) => resolve(code === 0 ? output.trim() : `exit ${code}: ${output.trim()}`));
    child.stdin.on('error', () => {}); // a missing promtool closes it; 'error' above says why
    child.stdin.end(scrape);
  });
}
