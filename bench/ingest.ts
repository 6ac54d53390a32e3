/**
 * ingest: a PUT of one large object into an agent, then a GET of it from the same agent (a local read
 * from disk: the object is far larger than the hot tier), side by side with a minimal Node http + fs
 * server (bench/support/static-server.ts, its own process) that writes the same bytes to a file while
 * hashing them with SHA-256, and streams the file back with fs.createReadStream. Both are driven by
 * this process over loopback with the same client code, from one buffer in memory, in alternated
 * reps; every byte read back is compared with what was sent. Each server's CPU is read from /proc
 * around every PUT and GET, in all and by kind of thread (its main thread, V8's helpers, libuv's
 * pool, kernel time apart: bench/support/thread-cpu.ts), so that a run says where the time went.
 * The agent runs as the image runs it (the bundle, the image's V8 flags, malloc settings and
 * NODE_ENV: bench/support/bundle.ts); `--sources` runs it as the bench did before: from the
 * TypeScript sources, without those flags and settings (so the two differ in all four); the last
 * line's `agent_build` says how it ran.
 *
 * Options after --quick: `--fsync` (both sides fsync before answering a PUT: the agent's
 * store.fsync), `--cpu-prof DIR` (the agent writes a V8 CPU profile there when it stops; with
 * `--sources` for positions in the sources: the bundle is minified and removed after the run),
 * `--sources`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, startAgentProcess } from '../agent/harness/agent-process.ts';
import { chunkSizeFor, digestOf, rootDigest } from '../agent/src/cache/chunking.ts';
import { agentBuild, type BuildName, buildOf } from './support/bundle.ts';
import { describeMachine, median, round } from './support/machine.ts';
import {
  cpuReading,
  cpuTableHeader,
  cpuTableRow,
  medianPerGB,
  type ThreadCpu,
} from './support/thread-cpu.ts';

const MiB = 2 ** 20;
const STATIC_SERVER = fileURLToPath(new URL('./support/static-server.ts', import.meta.url));
/** The agent's hot tier: a quarter of the quick object, so every read of the object is from disk. */
const HOT_TIER = '64Mi';
/** What the client hands to the socket per write. */
const PIECE = MiB;

interface Timed {
  MBps: number;
  /** CPU seconds the server process used (user + system), from /proc. */
  serverCpuS: number;
  /** The same by kind of thread (bench/support/thread-cpu.ts). */
  threads: ThreadCpu;
  body: string;
}

/** PUTs `data` to `url` in PIECE writes with backpressure; MB/s from the first byte to the answer. */
function timedPut(url: string, data: Buffer, pid: number): Promise<Timed> {
  const cpu = cpuReading(pid);
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const headers = { 'Content-Length': String(data.length), 'Content-Type': 'application/octet-stream' };
    const req = request(url, { method: 'PUT', headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const body = Buffer.concat(parts).toString();
        if (res.statusCode !== 201) return reject(new Error(`PUT ${url}: ${res.statusCode} ${body}`));
        const seconds = (performance.now() - start) / 1000;
        const { seconds: serverCpuS, threads } = cpu();
        resolve({ MBps: data.length / 1e6 / seconds, serverCpuS, threads, body });
      });
    });
    req.on('error', reject);
    let sent = 0;
    const pump = () => {
      while (sent < data.length) {
        const piece = data.subarray(sent, sent + PIECE);
        sent += piece.length;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/** GETs `url` to the end, comparing every byte with `data`; MB/s from the request to the last byte. */
function timedGet(url: string, data: Buffer, pid: number): Promise<Timed> {
  const cpu = cpuReading(pid);
  const start = performance.now();
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      let n = 0;
      let same = true;
      res.on('data', (d: Buffer) => {
        same &&= n + d.length <= data.length && d.equals(data.subarray(n, n + d.length));
        n += d.length;
      });
      res.on('end', () => {
        if (res.statusCode !== 200 || n !== data.length || !same)
          return reject(new Error(`GET ${url}: ${res.statusCode}, ${n} bytes, same: ${same}`));
        const seconds = (performance.now() - start) / 1000;
        const source = String(res.headers['x-edgemesh-source'] ?? 'file');
        const { seconds: serverCpuS, threads } = cpu();
        resolve({ MBps: data.length / 1e6 / seconds, serverCpuS, threads, body: source });
      });
    })
      .on('error', reject)
      .end();
  });
}

/** `bytes` of content no two MiB of which are equal (so no chunk deduplicates). */
function content(bytes: number): Buffer {
  const block = randomBytes(MiB);
  const data = Buffer.allocUnsafe(bytes);
  for (let offset = 0; offset < bytes; offset += MiB) {
    block.writeUInt32BE(offset / MiB, 0);
    block.copy(data, offset);
  }
  return data;
}

function option(args: readonly string[], name: string): string | undefined {
  const at = args.indexOf(name);
  return at === -1 ? undefined : args[at + 1];
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const bytes = (quick ? 256 : 1024) * MiB;
  // Three reps, alternated, in a quick run too (11-13 s): with one, the baseline always went first
  // and a single rep's noise made the ratios (docs/benchmarks.md, ingest --quick).
  const reps = 3;
  const fsync = args.includes('--fsync');
  const profileDir = option(args, '--cpu-prof');
  const build = agentBuild(args);
  console.log(
    `# ingest: PUT then local GET of ${bytes / MiB} MiB on one agent vs a Node http server doing fs write + ` +
      `SHA-256 and fs.createReadStream, ${reps} rep(s) each, alternating; fsync ${fsync ? 'on' : 'off'} on both; ` +
      `the agent ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-ingest-'));
  const data = content(bytes);
  const expectedRoot = rootDigest(bytes, chunkSizeFor(bytes), chunkDigests(data, chunkSizeFor(bytes)));
  const expectedSha = createHash('sha256').update(data).digest('hex');
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const rows: { rep: number; side: string; put: Timed; get: Timed }[] = [];
  let agent: AgentProcess | undefined;
  let server: ChildProcess | undefined;
  let ran: BuildName;
  try {
    const place = build.place(dir);
    agent = await startAgentProcess(
      [
        ...['--store.dir', join(dir, 'store'), '--store.fsync', String(fsync)],
        ...['--store.max-bytes', '8Gi', '--store.max-object-bytes', '8Gi', '--store.memory-bytes', HOT_TIER],
        ...['--store.scrub-on-start', 'false'],
      ],
      20_000,
      { ...place, nodeFlags: [...(place.nodeFlags ?? []), ...profile] },
    );
    ran = buildOf(agent.child.pid!);
    server = spawn(process.execPath, [STATIC_SERVER, join(dir, 'files'), ...(fsync ? ['--fsync'] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const agentUrl = agent.url;
    const first = await createInterface({ input: server.stdout! })[Symbol.asyncIterator]().next();
    const { port } = JSON.parse(String(first.value)) as { port: number };
    const sides = {
      baseline: { pid: server.pid!, url: (name: string) => `http://127.0.0.1:${port}/${name}` },
      edgemesh: { pid: agent.child.pid!, url: (name: string) => `${agentUrl}/v1/objects/bench/${name}` },
    };
    // Warm-up: JIT, connections and the first file and chunk writes, on both.
    const warm = data.subarray(0, 32 * MiB);
    for (const side of Object.values(sides)) {
      await timedPut(side.url('warm-up'), warm, side.pid);
      await timedGet(side.url('warm-up'), warm, side.pid);
    }
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? (['baseline', 'edgemesh'] as const) : (['edgemesh', 'baseline'] as const);
      const name = `object-${rep}`;
      const puts: Record<string, Timed> = {};
      for (const side of order) puts[side] = await timedPut(sides[side].url(name), data, sides[side].pid);
      for (const side of order) {
        const get = await timedGet(sides[side].url(name), data, sides[side].pid);
        rows.push({ rep, side, put: puts[side]!, get });
      }
      checkDigests(puts, expectedRoot, expectedSha);
      for (const row of rows.slice(-2)) {
        if (row.side === 'edgemesh' && row.get.body !== 'local') throw new Error(`source ${row.get.body}`);
      }
      const removed = await fetch(sides.edgemesh.url(name), { method: 'DELETE' });
      if (removed.status !== 204) throw new Error(`DELETE: ${removed.status}`);
      await rm(join(dir, 'files', name), { force: true });
    }
  } finally {
    server?.kill();
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  }
  report(rows, bytes, reps, fsync, ran);
}

function chunkDigests(data: Buffer, chunkSize: number): string[] {
  const digests: string[] = [];
  for (let offset = 0; offset < data.length; offset += chunkSize) {
    digests.push(digestOf(data.subarray(offset, offset + chunkSize)));
  }
  return digests;
}

function checkDigests(puts: Record<string, Timed>, root: string, sha: string): void {
  const ours = JSON.parse(puts.edgemesh!.body) as { digest: string };
  if (ours.digest !== `sha256-tree:${root}`) throw new Error(`agent digest ${ours.digest}, expected ${root}`);
  if (puts.baseline!.body !== sha) throw new Error(`baseline digest ${puts.baseline!.body}, expected ${sha}`);
}

function report(
  rows: { rep: number; side: string; put: Timed; get: Timed }[],
  bytes: number,
  reps: number,
  fsync: boolean,
  agentBuildName: BuildName,
): void {
  const gb = bytes / 1e9;
  console.log('# rep | side     | PUT MB/s | server CPU s/GB | GET MB/s | server CPU s/GB');
  for (const r of rows) {
    console.log(
      `# ${r.rep + 1}   | ${r.side.padEnd(8)} | ${r.put.MBps.toFixed(0).padStart(8)} | ` +
        `${(r.put.serverCpuS / gb).toFixed(2).padStart(15)} | ${r.get.MBps.toFixed(0).padStart(8)} | ` +
        `${(r.get.serverCpuS / gb).toFixed(2).padStart(15)}`,
    );
  }
  const med = (side: string, pick: (r: (typeof rows)[number]) => number) =>
    median(rows.filter((r) => r.side === side).map(pick));
  const put = med('edgemesh', (r) => r.put.MBps);
  const get = med('edgemesh', (r) => r.get.MBps);
  const basePut = med('baseline', (r) => r.put.MBps);
  const baseGet = med('baseline', (r) => r.get.MBps);
  console.log(
    `# medians: PUT ${put.toFixed(0)} vs ${basePut.toFixed(0)} MB/s (ratio ${(put / basePut).toFixed(2)}), ` +
      `local GET ${get.toFixed(0)} vs ${baseGet.toFixed(0)} MB/s (ratio ${(get / baseGet).toFixed(2)}); goals: both ratios >= 0.7`,
  );
  const cpu = (side: string, pick: (r: (typeof rows)[number]) => number) => round(med(side, pick) / gb, 2);
  // Where each side's CPU went, by kind of thread (libuv's kernel time is mostly the file writes'
  // and reads').
  const byThread = (side: string, op: 'put' | 'get') =>
    medianPerGB(
      rows.filter((r) => r.side === side).map((r) => r[op].threads),
      bytes,
    );
  console.log(cpuTableHeader('server CPU'));
  for (const side of ['baseline', 'edgemesh'])
    for (const op of ['put', 'get'] as const)
      console.log(cpuTableRow(`${side.padEnd(8)} ${op.toUpperCase().padEnd(3)}`, byThread(side, op)));
  console.log(
    JSON.stringify({
      bench: 'ingest',
      bytes,
      reps,
      fsync,
      agent_build: agentBuildName,
      put_MBps: round(put, 1),
      baseline_put_MBps: round(basePut, 1),
      put_ratio: round(put / basePut, 3),
      read_MBps: round(get, 1),
      baseline_read_MBps: round(baseGet, 1),
      read_ratio: round(get / baseGet, 3),
      put_cpu_s_per_GB: cpu('edgemesh', (r) => r.put.serverCpuS),
      baseline_put_cpu_s_per_GB: cpu('baseline', (r) => r.put.serverCpuS),
      read_cpu_s_per_GB: cpu('edgemesh', (r) => r.get.serverCpuS),
      baseline_read_cpu_s_per_GB: cpu('baseline', (r) => r.get.serverCpuS),
      put_cpu_by_thread: {
        edgemesh: byThread('edgemesh', 'put').total,
        baseline: byThread('baseline', 'put').total,
      },
    }),
  );
}
