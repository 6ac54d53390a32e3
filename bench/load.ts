/**
 * load: throughput of local hits under load, for a 4 KiB and a 1 MiB object, with wrk (64 keep-alive
 * connections), against an agent, a bare Node http + fs.readFile server and, when installed, nginx
 * (one worker), all serving the same bytes. Servers take turns, size by size, after a warm-up each.
 * The agent runs as in the image (bench/support/bundle.ts); `--sources` runs it from the
 * TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how it ran.
 * EDGEMESH_BENCH_PROFILE=DIR runs the agent with --cpu-prof into DIR (with `--sources` for positions
 * in the sources: the bundle is minified and removed after the run).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, startAgentProcess } from '../agent/harness/agent-process.ts';
import { agentBuild, buildOf } from './support/bundle.ts';
import { describeMachine, median, round } from './support/machine.ts';
import { nginxUnavailable, type StaticNginx, startStaticNginx } from './support/nginx.ts';
import { runWrk, type WrkResult, wrkUnavailable } from './support/wrk.ts';

const STATIC_SERVER = fileURLToPath(new URL('./support/static-server.ts', import.meta.url));
const CONNECTIONS = 64;
const THREADS = 2;
const SIZES = [
  ['4KiB', 4096],
  ['1MiB', 2 ** 20],
] as const;
type Server = 'agent' | 'node' | 'nginx';

interface Figures {
  rps: number;
  p99Ms: number;
  errors: number;
}

/** Median rps and p99 over the rounds; errors summed (non-2xx and socket errors). */
function summarise(runs: WrkResult[]): Figures {
  return {
    rps: median(runs.map((r) => r.rps)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    errors: runs.reduce((sum, r) => sum + r.non2xx + r.socketErrors, 0),
  };
}

async function startNodeServer(files: string) {
  const child = spawn(process.execPath, [STATIC_SERVER, files, '--read-file'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
  const { port } = JSON.parse(String(first.value)) as { port: number };
  return { url: `http://127.0.0.1:${port}`, stop: () => child.kill() };
}

/** Fails unless `url` answers 200 with exactly `body` (wrk counts statuses, never bytes). */
async function expectBody(url: string, body: Buffer): Promise<void> {
  const res = await fetch(url);
  const got = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200 || !got.equals(body))
    throw new Error(`GET ${url}: ${res.status}, ${got.length} bytes`);
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const build = agentBuild(args);
  const seconds = quick ? 3 : 10;
  const rounds = quick ? 1 : 3;
  const warmUp = quick ? 1 : 2;
  const missingWrk = wrkUnavailable();
  if (missingWrk) throw new Error(`the load bench needs wrk: ${missingWrk}`);
  console.log(
    `# load: local hits with wrk (${CONNECTIONS} connections, ${THREADS} threads), ${rounds} x ${seconds} s per size per server, taking turns after a ${warmUp} s warm-up; the agent ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  if (cpus().length <= 4)
    console.log(
      `# note: wrk runs on the same ${cpus().length} cores as the server it loads: figures are shared-CPU figures`,
    );
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-load-'));
  const files = join(dir, 'files');
  await mkdir(files, { recursive: true });
  const profile = process.env.EDGEMESH_BENCH_PROFILE;
  const nginxMissing = nginxUnavailable();
  if (nginxMissing) console.log(`# nginx baseline skipped: ${nginxMissing}`);
  let agent: AgentProcess | undefined;
  let node: Awaited<ReturnType<typeof startNodeServer>> | undefined;
  let nginx: StaticNginx | undefined;
  try {
    const place = build.place(dir);
    agent = await startAgentProcess(['--store.dir', join(dir, 'store')], 20_000, {
      ...place,
      nodeFlags: [...(place.nodeFlags ?? []), ...(profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : [])],
    });
    node = await startNodeServer(files);
    if (!nginxMissing) nginx = await startStaticNginx(files, join(dir, 'nginx'));
    const results: Record<string, Partial<Record<Server, Figures>>> = {};
    for (const [name, size] of SIZES) {
      const body = randomBytes(size);
      await writeFile(join(files, name), body);
      const put = await fetch(`${agent.url}/v1/objects/bench/${name}`, { method: 'PUT', body });
      if (put.status !== 201) throw new Error(`PUT failed: ${put.status}`);
      const urls: Partial<Record<Server, string>> = {
        agent: `${agent.url}/v1/objects/bench/${name}`,
        node: `${node.url}/${name}`,
        ...(nginx ? { nginx: `${nginx.url}/${name}` } : {}),
      };
      const runs: Partial<Record<Server, WrkResult[]>> = {};
      for (const [server, url] of Object.entries(urls) as [Server, string][]) {
        await expectBody(url, body);
        await runWrk(url, { connections: CONNECTIONS, threads: THREADS, seconds: warmUp });
        runs[server] = [];
      }
      for (let r = 0; r < rounds; r++) {
        for (const [server, url] of Object.entries(urls) as [Server, string][])
          runs[server]!.push(await runWrk(url, { connections: CONNECTIONS, threads: THREADS, seconds }));
      }
      const figures: Partial<Record<Server, Figures>> = {};
      for (const [server, list] of Object.entries(runs) as [Server, WrkResult[]][]) {
        const f = summarise(list);
        figures[server] = f;
        console.log(
          `# ${name} ${server.padEnd(6)} ${f.rps.toFixed(0).padStart(7)} req/s  p99 ${f.p99Ms.toFixed(2).padStart(7)} ms  errors ${f.errors}`,
        );
      }
      results[name] = figures;
    }
    const ratio = (a: Figures | undefined, b: Figures | undefined) =>
      a && b ? round(a.rps / b.rps, 3) : null;
    const small = results['4KiB']!;
    const large = results['1MiB']!;
    console.log('# goals: ratio_node (agent/node req/s, 4 KiB) >= 1.0, errors = 0');
    console.log(
      JSON.stringify({
        bench: 'load',
        connections: CONNECTIONS,
        agent_build: buildOf(agent.child.pid!),
        seconds: rounds * seconds,
        rps: round(small.agent!.rps, 0),
        node_rps: round(small.node!.rps, 0),
        nginx_rps: small.nginx ? round(small.nginx.rps, 0) : null,
        ratio_node: ratio(small.agent, small.node),
        ratio_nginx: ratio(small.agent, small.nginx),
        p99_ms: round(small.agent!.p99Ms, 2),
        node_p99_ms: round(small.node!.p99Ms, 2),
        nginx_p99_ms: small.nginx ? round(small.nginx.p99Ms, 2) : null,
        errors: small.agent!.errors + large.agent!.errors,
        large_rps: round(large.agent!.rps, 0),
        large_node_rps: round(large.node!.rps, 0),
        large_nginx_rps: large.nginx ? round(large.nginx.rps, 0) : null,
        large_ratio_node: ratio(large.agent, large.node),
        large_ratio_nginx: ratio(large.agent, large.nginx),
        large_p99_ms: round(large.agent!.p99Ms, 2),
      }),
    );
  } finally {
    node?.stop();
    await nginx?.stop();
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
