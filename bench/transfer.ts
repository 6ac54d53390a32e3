/**
 * transfer: an object PUT on agent A, fetched by a client of agent B (B pulls it from A over gRPC,
 * verifying every chunk and writing it to its store while streaming it out), with mutual TLS between
 * the agents (the default). Side by side: the same between agents in plaintext (what mTLS costs), and a
 * raw TCP stream between two Node processes, the practical limit for moving bytes between two
 * processes here.
 * Each rep uses two fresh agents, warmed up with a 32 MiB transfer first.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, startAgentProcess } from '../agent/harness/agent-process.ts';
import { describeMachine, median, round } from './support/machine.ts';

const MiB = 2 ** 20;
const RAW_TCP = fileURLToPath(new URL('./support/raw-tcp.ts', import.meta.url));

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

/** One mesh transfer between two fresh agents (mutual TLS between them, unless `plaintext`). */
async function meshTransfer(dir: string, bytes: number, rep: number, plaintext = false) {
  const agents: AgentProcess[] = [];
  const security = plaintext ? ['--security.mtls', 'false'] : [];
  try {
    const a = await startAgentProcess([
      ...security,
      '--node-id',
      'a',
      '--store.dir',
      join(dir, `a${rep}`),
      '--store.max-bytes',
      '8Gi',
      '--store.max-object-bytes',
      '8Gi',
    ]);
    agents.push(a);
    const b = await startAgentProcess([
      ...security,
      ...[
        '--node-id',
        'b',
        '--store.dir',
        join(dir, `b${rep}`),
        '--store.max-bytes',
        '8Gi',
        '--store.max-object-bytes',
        '8Gi',
      ],
      ...['--peers', `127.0.0.1:${a.grpcPort}`],
    ]);
    agents.push(b);
    // Warm-up: JIT and the gRPC connection, so the figure is the steady state, not start-up.
    await put(`${a.url}/v1/objects/bench/warm-up`, 32 * MiB);
    await get(`${b.url}/v1/objects/bench/warm-up`, 32 * MiB);
    const putStart = performance.now();
    await put(`${a.url}/v1/objects/bench/object`, bytes);
    const putMBps = bytes / 1e6 / ((performance.now() - putStart) / 1000);
    const peer = await get(`${b.url}/v1/objects/bench/object`, bytes);
    if (peer.source !== 'peer') throw new Error(`expected a peer fetch, got ${peer.source}`);
    const local = await get(`${b.url}/v1/objects/bench/object`, bytes);
    return { meshMBps: peer.MBps, putMBps, localMBps: local.MBps };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await rm(join(dir, `a${rep}`), { recursive: true, force: true });
    await rm(join(dir, `b${rep}`), { recursive: true, force: true });
  }
}

export async function run(quick: boolean): Promise<void> {
  const bytes = (quick ? 256 : 1024) * MiB;
  const reps = quick ? 1 : 3;
  console.log(
    `# transfer: ${bytes / MiB} MiB A -> B over gRPC with mTLS, over gRPC in plaintext, and raw TCP, ${reps} rep(s) each, alternating`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-transfer-'));
  const raw: number[] = [];
  const mesh: { meshMBps: number; putMBps: number; localMBps: number }[] = [];
  const plain: number[] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      raw.push(await rawTcp(bytes));
      mesh.push(await meshTransfer(dir, bytes, rep));
      plain.push((await meshTransfer(dir, bytes, rep, true)).meshMBps);
      const m = mesh.at(-1)!;
      console.log(
        `# rep ${rep + 1}: raw TCP ${raw.at(-1)!.toFixed(0)} MB/s | mesh A->B ${m.meshMBps.toFixed(0)} MB/s (mTLS), ` +
          `${plain.at(-1)!.toFixed(0)} MB/s (plaintext) | PUT into A ${m.putMBps.toFixed(0)} MB/s | local hit on B ${m.localMBps.toFixed(0)} MB/s`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const meshMBps = median(mesh.map((m) => m.meshMBps));
  const plainMBps = median(plain);
  const rawMBps = median(raw);
  console.log(
    `# medians: mesh ${meshMBps.toFixed(0)} MB/s with mTLS, ${plainMBps.toFixed(0)} MB/s in plaintext ` +
      `(mTLS costs ${((1 - meshMBps / plainMBps) * 100).toFixed(0)}%), raw TCP ${rawMBps.toFixed(0)} MB/s; goal ratio >= 0.5`,
  );
  console.log(
    JSON.stringify({
      bench: 'transfer',
      bytes,
      reps,
      mesh_MBps: round(meshMBps, 1),
      mesh_plaintext_MBps: round(plainMBps, 1),
      mtls_cost: round(1 - meshMBps / plainMBps, 3),
      raw_tcp_MBps: round(rawMBps, 1),
      ratio: round(meshMBps / rawMBps, 3),
      put_MBps: round(median(mesh.map((m) => m.putMBps)), 1),
      local_hit_MBps: round(median(mesh.map((m) => m.localMBps)), 1),
    }),
  );
}
