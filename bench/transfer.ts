/**
 * transfer: an object PUT on agent A, fetched by a client of agent B (B pulls it from A on the bulk
 * stream, verifying every chunk and writing it to its store while streaming it out), with mutual TLS
 * between the agents (the default). Side by side: the same with chunk bodies on gRPC's FetchChunks
 * (`--grpc.bulk-stream false`: what the bulk stream gains), and a
 * raw TCP stream between two Node processes, the practical limit for moving bytes between two
 * processes here, and the limit pipeline (support/limit-pipeline.ts: mutual TLS, a SHA-256 per chunk,
 * the file written and the bytes served, nothing else), the limit for what a fetch must do.
 * Each rep uses two fresh agents, warmed up with a 32 MiB transfer first, run as the image runs them
 * (the bundle, the image's V8 flags, malloc settings and NODE_ENV: bench/support/bundle.ts);
 * `--sources` runs them as the bench did before: from the TypeScript sources, without those flags
 * and settings; the last line's `agent_build` says how they ran. The sender's and the
 * receiver's CPU over the measured transfer is read from /proc by kind of thread (its main thread,
 * V8's helpers, libuv's pool: bench/support/thread-cpu.ts), for the mesh and the limit pipeline, so
 * that a run says where the time went.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, type PlaceOptions, startAgentProcess } from '../agent/harness/agent-process.ts';
import { sharedTestCa } from '../agent/harness/test-ca.ts';
import { agentBuild, type BuildName, buildOfAll, sameBuild } from './support/bundle.ts';
import { describeMachine, median, round } from './support/machine.ts';
import {
  cpuReading,
  cpuTableHeader,
  cpuTableRow,
  medianPerGB,
  type ThreadCpu,
} from './support/thread-cpu.ts';

const MiB = 2 ** 20;
const RAW_TCP = fileURLToPath(new URL('./support/raw-tcp.ts', import.meta.url));
const LIMIT = fileURLToPath(new URL('./support/limit-pipeline.ts', import.meta.url));

/** The CPU a transfer cost its two processes, by kind of thread. */
interface TransferCpu {
  sender: ThreadCpu;
  receiver: ThreadCpu;
}

/** Measures `transfer` with the CPU the processes `senderPid` and `receiverPid` spend on it. */
async function withCpu<T>(
  senderPid: number,
  receiverPid: number,
  transfer: () => Promise<T>,
): Promise<{ result: T; cpu: TransferCpu }> {
  const sender = cpuReading(senderPid);
  const receiver = cpuReading(receiverPid);
  const result = await transfer();
  return { result, cpu: { sender: sender().threads, receiver: receiver().threads } };
}

/** Starts one side of the limit pipeline; resolves with its port, its pid and a stop. */
async function limitSide(args: string[]): Promise<{ port: number; pid: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [LIMIT, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  const stop = () => (child.kill(), exited.then(() => undefined));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done) {
    await stop();
    throw new Error(`limit pipeline ${args[0]} did not start`);
  }
  const { port } = JSON.parse(first.value) as { port: number };
  return { port, pid: child.pid!, stop };
}

/**
 * The limit pipeline (support/limit-pipeline.ts): a sender process streams the object's file over
 * mutual TLS, a receiver process hashes each chunk, writes the file and streams it to a client of its
 * HTTP server. MB/s as that client saw it, from request to last byte.
 */
async function limitTransfer(
  dir: string,
  bytes: number,
  rep: number,
): Promise<{ MBps: number; cpu: TransferCpu }> {
  const { certFile, keyFile } = await sharedTestCa();
  const from = join(dir, `limit-a${rep}`);
  const to = join(dir, `limit-b${rep}`);
  await mkdir(from);
  await mkdir(to);
  const sides: { stop: () => Promise<void> }[] = [];
  try {
    await writeObject(join(from, 'warm-up'), 32 * MiB);
    await writeObject(join(from, 'object'), bytes);
    const sender = await limitSide(['send', certFile, keyFile, from]);
    sides.push(sender);
    const receiver = await limitSide(['receive', certFile, keyFile, to]);
    sides.push(receiver);
    // Warm-up, as the mesh's: JIT and TLS, so the figure is the steady state.
    await get(`http://127.0.0.1:${receiver.port}/${sender.port}/warm-up`, 32 * MiB);
    const url = `http://127.0.0.1:${receiver.port}/${sender.port}/object`;
    const { result, cpu } = await withCpu(sender.pid, receiver.pid, () => get(url, bytes));
    return { MBps: result.MBps, cpu };
  } finally {
    await Promise.all(sides.map((s) => s.stop()));
    await rm(from, { recursive: true, force: true });
    await rm(to, { recursive: true, force: true });
  }
}

/** Writes `bytes` of distinct 1 MiB blocks to `file` (the sender's copy, as A's store has it). */
async function writeObject(file: string, bytes: number): Promise<void> {
  const handle = await open(file, 'w');
  try {
    const block = randomBytes(MiB);
    for (let at = 0; at < bytes; at += MiB) {
      block.writeUInt32BE(at / MiB, 0);
      await handle.write(block, 0, Math.min(MiB, bytes - at), at);
    }
  } finally {
    await handle.close();
  }
}

/** Runs a raw TCP transfer of `bytes` between two fresh processes; MB/s as the receiver saw it. */
async function rawTcp(bytes: number): Promise<number> {
  const server = spawn(process.execPath, [RAW_TCP, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: server.stdout })[Symbol.asyncIterator]();
  const { port } = JSON.parse((await lines.next()).value as string) as { port: number };
  const sender = spawn(process.execPath, [RAW_TCP, 'send', String(port), String(bytes)], {
    stdio: 'inherit',
  });
  const result = JSON.parse((await lines.next()).value as string) as { bytes: number; seconds: number };
  await new Promise((r) => sender.once('exit', r));
  if (result.bytes !== bytes) throw new Error(`raw tcp moved ${result.bytes} of ${bytes} bytes`);
  return bytes / 1e6 / result.seconds;
}

function put(url: string, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PUT', headers: { 'Content-Length': String(bytes) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`PUT: ${res.statusCode}`))));
    });
    req.on('error', reject);
    const block = randomBytes(MiB);
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        block.writeUInt32BE(sent / MiB, 0); // distinct chunks, no deduplication
        sent += MiB;
        if (!req.write(Buffer.from(block))) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

/** GETs `url` to the end, discarding the body; MB/s from request to last byte, and the source. */
function get(url: string, bytes: number): Promise<{ MBps: number; source: string }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      let n = 0;
      res.on('data', (d: Buffer) => {
        n += d.length;
      });
      res.on('end', () => {
        if (n !== bytes)
          return reject(new Error(`GET moved ${n} of ${bytes} bytes (status ${res.statusCode})`));
        resolve({
          MBps: bytes / 1e6 / ((performance.now() - start) / 1000),
          source: String(res.headers['x-edgemesh-source']),
        });
      });
    })
      .on('error', reject)
      .end();
  });
}

/**
 * One mesh transfer between two fresh agents, with mutual TLS between them; chunk bodies on the bulk
 * stream, or on gRPC's FetchChunks with `grpc`.
 */
async function meshTransfer(dir: string, bytes: number, rep: number, place: PlaceOptions, grpc = false) {
  const agents: AgentProcess[] = [];
  const security = grpc ? ['--grpc.bulk-stream', 'false'] : [];
  try {
    // Each agent: its node id, a store of its own, room for the object; `peers` to join.
    const start = (node: 'a' | 'b', peers: string[] = []) =>
      startAgentProcess(
        [
          ...security,
          ...['--node-id', node, '--store.dir', join(dir, `${node}${rep}`)],
          ...['--store.max-bytes', '8Gi', '--store.max-object-bytes', '8Gi'],
          ...peers,
        ],
        20_000,
        place,
      );
    const a = await start('a');
    agents.push(a);
    const b = await start('b', ['--peers', `127.0.0.1:${a.grpcPort}`]);
    agents.push(b);
    // Warm-up: JIT and the connections, so the figure is the steady state, not start-up.
    await put(`${a.url}/v1/objects/bench/warm-up`, 32 * MiB);
    await get(`${b.url}/v1/objects/bench/warm-up`, 32 * MiB);
    const putStart = performance.now();
    await put(`${a.url}/v1/objects/bench/object`, bytes);
    const putMBps = bytes / 1e6 / ((performance.now() - putStart) / 1000);
    const stored = (await b.status()).cache.entries;
    const fetched = await withCpu(a.child.pid!, b.child.pid!, async () => {
      const answer = await get(`${b.url}/v1/objects/bench/object`, bytes);
      // B writes behind what it serves and commits after the last byte: its CPU is read once it
      // holds the object, as the limit receiver's is once its file is written.
      while ((await b.status()).cache.entries <= stored) await delay(20);
      return answer;
    });
    const peer = fetched.result;
    if (peer.source !== 'peer') throw new Error(`expected a peer fetch, got ${peer.source}`);
    const local = await get(`${b.url}/v1/objects/bench/object`, bytes);
    return {
      meshMBps: peer.MBps,
      putMBps,
      localMBps: local.MBps,
      cpu: fetched.cpu,
      build: buildOfAll(agents.map((agent) => agent.child.pid)),
    };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await rm(join(dir, `a${rep}`), { recursive: true, force: true });
    await rm(join(dir, `b${rep}`), { recursive: true, force: true });
  }
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  // The quick run's object too is larger than the agents' hot tier (store.memoryBytes, 256 MiB by
  // default), as the full run's is: such an object is received into reused buffers and written
  // behind, where one that fits is received into new buffers kept in the tier (a 256 MiB quick run
  // measured that other path: bulk_gain 1.05-1.28 against the full run's 1.77).
  const bytes = (quick ? 512 : 1024) * MiB;
  const reps = quick ? 1 : 3;
  const build = agentBuild(args);
  console.log(
    `# transfer: ${bytes / MiB} MiB A -> B with mTLS on the bulk stream, on gRPC's FetchChunks, the limit pipeline (mTLS, hash, write, serve) and raw TCP, ${reps} rep(s) each, alternating; the agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-transfer-'));
  const raw: number[] = [];
  const mesh: { meshMBps: number; putMBps: number; localMBps: number; cpu: TransferCpu; build: BuildName }[] =
    [];
  const grpc: number[] = [];
  const limit: { MBps: number; cpu: TransferCpu }[] = [];
  try {
    // Built once, outside the reps' folders (each rep removes its agents' stores).
    const place = build.place(dir);
    for (let rep = 0; rep < reps; rep++) {
      raw.push(await rawTcp(bytes));
      limit.push(await limitTransfer(dir, bytes, rep));
      mesh.push(await meshTransfer(dir, bytes, rep, place));
      grpc.push((await meshTransfer(dir, bytes, rep, place, true)).meshMBps);
      const m = mesh.at(-1)!;
      console.log(
        `# rep ${rep + 1}: raw TCP ${raw.at(-1)!.toFixed(0)} MB/s | limit pipeline ${limit.at(-1)!.MBps.toFixed(0)} MB/s | mesh A->B ${m.meshMBps.toFixed(0)} MB/s (bulk stream), ` +
          `${grpc.at(-1)!.toFixed(0)} MB/s (FetchChunks) | PUT into A ${m.putMBps.toFixed(0)} MB/s | local hit on B ${m.localMBps.toFixed(0)} MB/s`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const meshMBps = median(mesh.map((m) => m.meshMBps));
  const grpcMBps = median(grpc);
  const rawMBps = median(raw);
  const limitMBps = median(limit.map((l) => l.MBps));
  // Where the CPU went, by kind of thread, for each side of the mesh and of the limit pipeline.
  const cpuOf = (runs: { cpu: TransferCpu }[], side: keyof TransferCpu) =>
    medianPerGB(
      runs.map((r) => r.cpu[side]),
      bytes,
    );
  console.log(cpuTableHeader('CPU of the transfer'));
  for (const [name, runs] of [
    ['mesh', mesh],
    ['limit', limit],
  ] as const)
    for (const side of ['sender', 'receiver'] as const)
      console.log(cpuTableRow(`${name.padEnd(5)} ${side.padEnd(8)}`, cpuOf(runs, side)));
  console.log(
    `# medians: mesh ${meshMBps.toFixed(0)} MB/s on the bulk stream, ${grpcMBps.toFixed(0)} MB/s on FetchChunks ` +
      `(x${(meshMBps / grpcMBps).toFixed(2)}), limit pipeline ${limitMBps.toFixed(0)} MB/s, ` +
      `raw TCP ${rawMBps.toFixed(0)} MB/s; goals ratio_to_limit >= 0.8, ratio (to raw TCP) >= 0.35`,
  );
  console.log(
    JSON.stringify({
      bench: 'transfer',
      bytes,
      reps,
      // How the agents really ran (read from the processes), for each rep's pair.
      agent_build: sameBuild(mesh.map((m) => m.build)),
      mesh_MBps: round(meshMBps, 1),
      mesh_grpc_MBps: round(grpcMBps, 1),
      bulk_gain: round(meshMBps / grpcMBps, 3),
      raw_tcp_MBps: round(rawMBps, 1),
      limit_MBps: round(limitMBps, 1),
      ratio: round(meshMBps / rawMBps, 3),
      ratio_to_limit: round(meshMBps / limitMBps, 3),
      put_MBps: round(median(mesh.map((m) => m.putMBps)), 1),
      local_hit_MBps: round(median(mesh.map((m) => m.localMBps)), 1),
      cpu_by_thread: {
        mesh: { sender: cpuOf(mesh, 'sender').total, receiver: cpuOf(mesh, 'receiver').total },
        limit: { sender: cpuOf(limit, 'sender').total, receiver: cpuOf(limit, 'receiver').total },
      },
    }),
  );
}
