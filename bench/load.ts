/**
 * load: throughput of local hits under load, for a 4 KiB and a 1 MiB object, with wrk (64 keep-alive
 * connections), against an agent, a bare Node http + fs.readFile server and, when installed, nginx
 * (one worker), all serving the same bytes. Servers take turns, size by size, after a warm-up each.
 * The agent runs as in the image (bench/support/bundle.ts); `--sources` runs it from the
 * TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV; the last line's
 * `agent_build` says how it ran.
 * Each Node server's CPU per request is read from /proc during the measured runs (main thread, and
 * all threads): with wrk on the same cores, a Node server's throughput here is bounded by its main
 * thread (the agent's was busy 98% of a run while the machine was 72% busy), so that figure says
 * what a change costs with less noise than req/s. V8's CPU profile is no guide to it: it showed that
 * thread 58% idle in the same runs.
 * EDGEMESH_BENCH_PROFILE=DIR runs the agent with --cpu-prof into DIR (with `--sources` for positions
 * in the sources: the bundle is minified and removed after the run).
 * `--after-quiet` leaves the agent alone after its start until it has given memory back while quiet
 * (agent/src/quiet-compaction.ts; a minute and more), as an agent a client comes back to: what that
 * compaction leaves behind is measured with the rest (docs/benchmarks.md, load after quiet). The
 * agent rests while the other servers take their turns: some 20 s between its rounds in a full run
 * with nginx, 10 s without; a quick run's rests (about 6 s) are shorter than the 8 s after which
 * V8's memory reducer would act (node-flags.ts), so only a full run shows what it cost. With
 * `--sources`, or `--drop-flag no-memory-reducer`, the agent runs with the reducer on, and without
 * the compaction at the end of its start-up (which needs the reducer off). `--drop-flag NAME` and
 * `--add-flag FLAG` run the agent without one of the image's Node flags, or with one more, as `idle`
 * does. The last line's `after_quiet`, `dropped_flag` and `added_flag` say what ran.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, eventually, startAgentProcess } from '../agent/harness/agent-process.ts';
import { agentBuild, askedFlags, buildOf } from './support/bundle.ts';
import { describeMachine, median, round } from './support/machine.ts';
import { nginxUnavailable, type StaticNginx, startStaticNginx } from './support/nginx.ts';
import { strictOptions } from './support/options.ts';
import { cpuReading } from './support/thread-cpu.ts';
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
  /** The server's CPU per request, in microseconds: its main thread's, and all its threads'. */
  mainUs?: number;
  cpuUs?: number;
}

/** A wrk run, with the CPU the server used during it (a Node server's; nginx's workers are not read). */
type Run = WrkResult & { mainUs?: number; cpuUs?: number };

/** Median rps, p99 and CPU per request over the rounds; errors summed (non-2xx and socket errors). */
function summarise(runs: Run[]): Figures {
  const cpu = (pick: (r: Run) => number | undefined) =>
    runs.every((r) => pick(r) !== undefined) ? median(runs.map((r) => pick(r)!)) : undefined;
  return {
    rps: median(runs.map((r) => r.rps)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    errors: runs.reduce((sum, r) => sum + r.non2xx + r.socketErrors, 0),
    mainUs: cpu((r) => r.mainUs),
    cpuUs: cpu((r) => r.cpuUs),
  };
}

/** wrk against `url`, and the CPU process `pid` (if any) used per request meanwhile. */
async function measured(url: string, seconds: number, pid: number | undefined): Promise<Run> {
  const reading = pid === undefined ? undefined : cpuReading(pid);
  const result = await runWrk(url, { connections: CONNECTIONS, threads: THREADS, seconds });
  if (!reading || result.requests === 0) return result;
  const { seconds: all, threads } = reading();
  const us = (s: number) => (s * 1e6) / result.requests;
  return { ...result, mainUs: us(threads.main.user + threads.main.system), cpuUs: us(all) };
}

async function startNodeServer(files: string) {
  const child = spawn(process.execPath, [STATIC_SERVER, files, '--read-file'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
  const { port } = JSON.parse(String(first.value)) as { port: number };
  return { url: `http://127.0.0.1:${port}`, pid: child.pid, stop: () => child.kill() };
}

/** Fails unless `url` answers 200 with exactly `body` (wrk counts statuses, never bytes). */
async function expectBody(url: string, body: Buffer): Promise<void> {
  const res = await fetch(url);
  const got = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200 || !got.equals(body))
    throw new Error(`GET ${url}: ${res.status}, ${got.length} bytes`);
}

/** The options `load` takes (`--quick` is run.ts's, passed on), parsed strictly. */
const options = (args: readonly string[]) =>
  strictOptions(
    args,
    {
      quick: { type: 'boolean' },
      sources: { type: 'boolean' },
      'after-quiet': { type: 'boolean' },
      'drop-flag': { type: 'string' },
      'add-flag': { type: 'string' },
    },
    '--quick, --sources, --after-quiet, --drop-flag NAME, --add-flag FLAG',
  );

/**
 * Waits until `agent` has given memory back while quiet once more than it had when called (its
 * status counts them, the one at the end of start-up included), up to `ms`; returns the seconds
 * waited.
 */
async function untilQuietCompaction(agent: AgentProcess, ms: number): Promise<number> {
  const started = performance.now();
  const before = (await agent.status()).counters.quietCompactions.count;
  await eventually(
    async () => ((await agent.status()).counters.quietCompactions.count > before ? true : undefined),
    ms,
    'the agent to give memory back while quiet',
    1000,
  );
  return (performance.now() - started) / 1000;
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const values = options(args);
  const afterQuiet = values['after-quiet'] ?? false;
  const changing = values['drop-flag'] !== undefined || values['add-flag'] !== undefined;
  if (changing && values.sources)
    throw new RangeError("--drop-flag and --add-flag change the image's flags, which --sources runs without");
  const flags = askedFlags(values['drop-flag'], values['add-flag']);
  const build = agentBuild(args);
  const seconds = quick ? 3 : 10;
  const rounds = quick ? 1 : 3;
  // Three seconds of warm-up per size per server, quick or full (before: 1 and 2): an agent just
  // started served 4 KiB hits at 6.5-8.7k a second, p99 200-300 ms, in its first two seconds under
  // wrk, and 12.6-18.8k after; with one, a quick run's rates were half to three quarters of a full
  // run's (docs/benchmarks.md).
  const warmUp = 3;
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
    const nodeFlags = [
      ...(values.sources ? [] : flags.nodeFlags),
      ...(profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : []),
    ];
    if (!values.sources)
      console.log(`# node flags: ${nodeFlags.join(' ')} ${flags.described}${profile ? ', profiled' : ''}`);
    agent = await startAgentProcess(['--store.dir', join(dir, 'store')], 20_000, { ...place, nodeFlags });
    if (afterQuiet)
      console.log(
        `# the agent left alone after its start: memory given back while quiet after ${(await untilQuietCompaction(agent, 300_000)).toFixed(0)} s`,
      );
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
      const pids: Partial<Record<Server, number>> = { agent: agent.child.pid, node: node.pid };
      const runs: Partial<Record<Server, Run[]>> = {};
      for (const [server, url] of Object.entries(urls) as [Server, string][]) {
        await expectBody(url, body);
        await runWrk(url, { connections: CONNECTIONS, threads: THREADS, seconds: warmUp });
        runs[server] = [];
      }
      for (let r = 0; r < rounds; r++) {
        for (const [server, url] of Object.entries(urls) as [Server, string][])
          runs[server]!.push(await measured(url, seconds, pids[server]));
      }
      const figures: Partial<Record<Server, Figures>> = {};
      for (const [server, list] of Object.entries(runs) as [Server, Run[]][]) {
        const f = summarise(list);
        figures[server] = f;
        const cpu =
          f.mainUs === undefined
            ? ''
            : `  CPU per request ${f.mainUs.toFixed(1)} us main thread, ${f.cpuUs!.toFixed(1)} all`;
        console.log(
          `# ${name} ${server.padEnd(6)} ${f.rps.toFixed(0).padStart(7)} req/s  p99 ${f.p99Ms.toFixed(2).padStart(7)} ms  errors ${f.errors}${cpu}`,
        );
      }
      results[name] = figures;
    }
    const perRequest = (us: number | undefined) => (us === undefined ? null : round(us, 1));
    const ratio = (a: Figures | undefined, b: Figures | undefined) =>
      a && b ? round(a.rps / b.rps, 3) : null;
    const small = results['4KiB']!;
    const large = results['1MiB']!;
    console.log('# goals: ratio_node (agent/node req/s, 4 KiB) >= 1.0, errors = 0');
    console.log(
      JSON.stringify({
        bench: 'load',
        connections: CONNECTIONS,
        // Read from the agent's process: with a flag added (which buildOf does not look for), `mixed`.
        agent_build: flags.added === undefined ? buildOf(agent.child.pid!) : 'mixed',
        after_quiet: afterQuiet,
        dropped_flag: flags.dropped ?? null,
        added_flag: flags.added ?? null,
        seconds: rounds * seconds,
        rps: round(small.agent!.rps, 0),
        node_rps: round(small.node!.rps, 0),
        nginx_rps: small.nginx ? round(small.nginx.rps, 0) : null,
        ratio_node: ratio(small.agent, small.node),
        ratio_nginx: ratio(small.agent, small.nginx),
        p99_ms: round(small.agent!.p99Ms, 2),
        node_p99_ms: round(small.node!.p99Ms, 2),
        nginx_p99_ms: small.nginx ? round(small.nginx.p99Ms, 2) : null,
        // CPU per 4 KiB request (us), the median run's: the main thread is what bounds a Node server here.
        main_us_per_req: perRequest(small.agent!.mainUs),
        node_main_us_per_req: perRequest(small.node!.mainUs),
        cpu_us_per_req: perRequest(small.agent!.cpuUs),
        node_cpu_us_per_req: perRequest(small.node!.cpuUs),
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
