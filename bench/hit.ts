/**
 * hit: latency of GETs served from an agent's local cache, for 4 KiB and 1 MiB objects, side by side
 * with a plain static file server (Node http + fs, in its own process) serving the same bytes from
 * disk. Requests alternate between the two in blocks, one at a time over keep-alive connections.
 * The agent runs as in the image (bench/support/bundle.ts); `--sources` runs it from the
 * TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how it ran.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, startAgentProcess } from '../agent/harness/agent-process.ts';
import { agentBuild, buildOf } from './support/bundle.ts';
import { describeMachine, percentile, round } from './support/machine.ts';

const STATIC_SERVER = fileURLToPath(new URL('./support/static-server.ts', import.meta.url));
const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });

function timedGet(url: string, size: number): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    request(url, { agent: keepAlive }, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => {
        n += d.length;
      });
      res.on('end', () =>
        n === size && res.statusCode === 200
          ? resolve(performance.now() - start)
          : reject(new Error(`GET ${url}: ${res.statusCode}, ${n} bytes`)),
      );
    })
      .on('error', reject)
      .end();
  });
}

async function measure(urls: { ours: string; baseline: string }, size: number, count: number) {
  const ours: number[] = [];
  const baseline: number[] = [];
  const block = 50;
  for (let i = 0; i < 20; i++) await timedGet(urls.ours, size); // warm-up both
  for (let i = 0; i < 20; i++) await timedGet(urls.baseline, size);
  for (let done = 0; done < count; done += block) {
    for (let i = 0; i < block; i++) ours.push(await timedGet(urls.ours, size));
    for (let i = 0; i < block; i++) baseline.push(await timedGet(urls.baseline, size));
  }
  const sort = (v: number[]) => v.sort((a, b) => a - b);
  const o = sort(ours);
  const b = sort(baseline);
  return {
    p50: percentile(o, 50),
    p99: percentile(o, 99),
    baseP50: percentile(b, 50),
    baseP99: percentile(b, 99),
  };
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const count = quick ? 500 : 3000;
  const build = agentBuild(args);
  console.log(
    `# hit: local-hit GET latency vs a Node http+fs static server, ${count} requests per size per server; the agent ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-hit-'));
  let agent: AgentProcess | undefined;
  let server: ChildProcess | undefined;
  try {
    agent = await startAgentProcess(['--store.dir', join(dir, 'store')], 20_000, build.place(dir));
    server = spawn(process.execPath, [STATIC_SERVER, join(dir, 'files')], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const first = await createInterface({ input: server.stdout! })[Symbol.asyncIterator]().next();
    const { port } = JSON.parse(String(first.value)) as { port: number };
    const results: Record<string, Awaited<ReturnType<typeof measure>>> = {};
    for (const [name, size] of [
      ['4KiB', 4096],
      ['1MiB', 2 ** 20],
    ] as const) {
      const body = randomBytes(size);
      await writeFile(join(dir, 'files', name), body);
      const put = await fetch(`${agent.url}/v1/objects/bench/${name}`, { method: 'PUT', body });
      if (put.status !== 201) throw new Error(`PUT failed: ${put.status}`);
      results[name] = await measure(
        { ours: `${agent.url}/v1/objects/bench/${name}`, baseline: `http://127.0.0.1:${port}/${name}` },
        size,
        count,
      );
      const r = results[name];
      console.log(
        `# ${name}: edgemesh p50 ${r.p50.toFixed(3)} ms p99 ${r.p99.toFixed(3)} ms | static p50 ${r.baseP50.toFixed(3)} ms p99 ${r.baseP99.toFixed(3)} ms | p99 ratio ${(r.p99 / r.baseP99).toFixed(2)}`,
      );
    }
    const big = results['1MiB']!;
    const small = results['4KiB']!;
    console.log('# goal: ratio (ours/baseline at p99, 1 MiB) <= 1.5');
    console.log(
      JSON.stringify({
        bench: 'hit',
        requests: count,
        agent_build: buildOf(agent.child.pid!),
        p50_ms: round(big.p50, 3),
        p99_ms: round(big.p99, 3),
        baseline_p50_ms: round(big.baseP50, 3),
        baseline_p99_ms: round(big.baseP99, 3),
        ratio: round(big.p99 / big.baseP99, 3),
        small_p50_ms: round(small.p50, 3),
        small_p99_ms: round(small.p99, 3),
        small_baseline_p99_ms: round(small.baseP99, 3),
        small_ratio: round(small.p99 / small.baseP99, 3),
      }),
    );
  } finally {
    keepAlive.destroy();
    server?.kill();
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
