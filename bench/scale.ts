/**
 * scale: many small objects in one agent. PUTs N objects of 1 KiB (N = 1,000,000; --quick 100,000),
 * then restarts the agent on the same store and measures what an edge cache with millions of small
 * objects pays:
 * - disk_ratio: the bytes the store's folder takes on disk (allocated blocks) over the data's bytes;
 * - rss_bytes_per_object: the restarted agent's RSS, less an empty agent's, per object (the agent
 *   runs as the image runs it: its bundle, V8 flags, malloc settings and NODE_ENV; `--sources`
 *   from the TypeScript sources with the same flags and settings: before 2026-12-06 the bench ran
 *   it so, without NODE_ENV);
 * - marginal_rss_bytes_per_object: what each object adds, once garbage is collected: the figure a
 *   quick run can predict. rss_bytes_per_object also carries costs that do not grow with the
 *   objects (code the work pages in, SQLite's page cache: about 10 MiB), which weigh ten times more
 *   at 100,000 objects than at 1,000,000, and garbage the index's load left that V8 has not
 *   collected yet (about 8 MiB at 100,000 and 32 MiB at 1,000,000 on 2026-12-07). So the agent is
 *   also restarted half-way, on n/2 objects, and the RSS of each restart is read again after a full
 *   collection (collectedRss); the marginal figure is the difference over the n/2 objects between,
 *   and fixed_rss_MiB what the half-way agent holds beyond an empty one's (both collected) and n/2
 *   marginal objects; projected_rss_bytes_per_object, marginal and fixed together at 1,000,000
 *   objects: the collected figure a full run's projection gives, which is below its
 *   rss_bytes_per_object by that garbage (at 1,000,000 the projection is the collected RSS per
 *   object itself);
 * - ready_s: from the restart to /readyz answering 200 (the agent serves while its index loads);
 * - loaded_s: from the restart to the index loaded (/v1/status, cache.indexLoaded), and
 *   loading_p99_ms, GETs of random objects meanwhile (most not loaded yet: read from the database);
 * - p99_ms: GETs of random objects once it has loaded, one at a time over a kept connection.
 * Side by side, in the same run: the same objects written as one plain file each (what a file per
 * object costs the file system, and how fast Node writes them; --quick: the first 25,000 of them,
 * as the cost per file is what counts). Goals at 1,000,000 objects: disk_ratio
 * <= 1.5, rss_bytes_per_object <= 300, ready_s <= 5. On 2026-12-07 at 1,000,000 objects:
 * rss_bytes_per_object 273, marginal 228, fixed 10.4 MiB, projected 239; at 100,000 (--quick, seven
 * runs): 429-444, 246-275, 7.9-9.9 MiB, 257-283. The agents run with --inspect-port=127.0.0.1:0 for
 * collectedRss, which opens nothing until asked (agent_build does not count the flag). The empty
 * agent's inspector is open (and idle) during the first half's PUTs, and the half-way agent's
 * during the second half's; the timed GETs come right after the last agent's collection.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, type PlaceOptions, startAgentProcess } from '../agent/harness/agent-process.ts';
import { collectGarbage, INSPECT_ON_SIGNAL, openInspector } from '../agent/harness/inspector.ts';
import { agentBuild, buildOf } from './support/bundle.ts';
import { describeMachine, percentile, round } from './support/machine.ts';
import { onInterrupt } from './support/interrupt.ts';

const SIZE = 1024;
const CONCURRENCY = 32;

/** Bytes allocated on disk under `dir` (blocks, as du counts them), and the number of files. */
async function diskUsage(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (let i = 0; i < entries.length; i += 256) {
    const stats = await Promise.all(
      entries.slice(i, i + 256).map((e) => stat(join(e.parentPath, e.name)).catch(() => undefined)),
    );
    for (const [j, s] of stats.entries()) {
      if (!s) continue;
      bytes += s.blocks * 512;
      if (entries[i + j]!.isFile()) files++;
    }
  }
  return { bytes, files };
}

/** One request over `agent`; resolves with the status and the body's length. */
function send(
  agent: Agent,
  url: string,
  method: string,
  body?: Buffer,
): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The object `i`'s key and bytes (1 KiB, distinct: its index, then random bytes). */
function object(i: number, filler: Buffer): { key: string; body: Buffer } {
  const body = Buffer.allocUnsafe(SIZE);
  filler.copy(body);
  body.writeUInt32BE(i, 0);
  return { key: `o/${(i % 1000).toString().padStart(3, '0')}/${i}`, body };
}

/** Runs `task(i)` for i in [0, n) with `concurrency` in flight. */
async function pool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

async function rssOf(agent: AgentProcess): Promise<number> {
  const status = (await agent.status()) as unknown as { process: { rssBytes: number } };
  return status.process.rssBytes;
}

/** How long collectedRss waits for the inspector to open, and then for the collection (a large heap's takes seconds). */
const INSPECTOR_WAIT_MS = 60_000;

/**
 * The agent's RSS after a full collection, asked of the agent's inspector
 * (harness/inspector.ts: HeapProfiler.collectGarbage), which SIGUSR1 opens (INSPECT_ON_SIGNAL; the
 * RSS read before this call is of an agent with none). Once per agent: the inspector stays open,
 * idle, after it.
 */
async function collectedRss(agent: AgentProcess): Promise<number> {
  await openInspector(agent.child, agent.logs, INSPECTOR_WAIT_MS);
  await collectGarbage(agent.logs, INSPECTOR_WAIT_MS);
  return rssOf(agent);
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const flag = args.indexOf('--objects');
  const n = flag >= 0 ? Number(args[flag + 1]) : quick ? 100_000 : 1_000_000;
  if (!Number.isSafeInteger(n) || n < 2)
    throw new RangeError(
      `--objects ${JSON.stringify(args[flag + 1])}: a whole number of objects, at least 2`,
    );
  // RSS per object depends on the flags and malloc settings: --sources changes only the code.
  const build = agentBuild(args, { sourcesKeepSettings: true });
  console.log(
    `# scale: ${n} objects of ${SIZE} B in one agent, restarted; beside a plain file per object; the agent ` +
      `${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-scale-'));
  let place: PlaceOptions = {};
  const store = join(dir, 'store');
  const plain = join(dir, 'plain');
  const filler = randomBytes(SIZE);
  const agents: AgentProcess[] = [];
  const start = (extra: string[] = []) =>
    startAgentProcess(
      [
        ...['--node-id', 'scale', '--store.dir', store, '--store.max-bytes', '64Gi'],
        ...['--store.memory-bytes', '0', ...extra],
      ],
      600_000,
      place,
    ).then((a) => (agents.push(a), a));
  const stopAll = async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
  };
  const removeInterrupt = onInterrupt(
    () => agents.forEach((a) => a.child.kill('SIGKILL')),
    () => rm(dir, { recursive: true, force: true }),
  );
  try {
    const built = build.place(dir);
    place = { ...built, nodeFlags: [...(built.nodeFlags ?? []), INSPECT_ON_SIGNAL] };
    // An empty agent's RSS, the base the objects' cost is measured from.
    let agent = await start();
    await new Promise((r) => setTimeout(r, 2000));
    const emptyRss = await rssOf(agent);
    const emptyCollected = await collectedRss(agent);

    const half = Math.floor(n / 2);
    let putMs = 0;
    /** PUTs objects [from, to) into the running agent. */
    const put = async (from: number, to: number) => {
      const keepAlive = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
      const putStart = performance.now();
      let failed = 0;
      await pool(to - from, CONCURRENCY, async (j) => {
        const i = from + j;
        const { key, body } = object(i, filler);
        const r = await send(keepAlive, `${agent.url}/v1/objects/${key}`, 'PUT', body);
        if (r.status !== 201) failed++;
        if ((i + 1) % 100_000 === 0) console.log(`# ${i + 1} PUTs`);
      });
      putMs += performance.now() - putStart;
      keepAlive.destroy();
      if (failed > 0) throw new Error(`${failed} PUTs failed`);
    };
    /**
     * Restarts the agent on the store of `count` objects: the time to ready, GETs of random objects
     * while its index loads (loadingTimes), then to loaded, and the RSS 2 s later (the half-way
     * restart waits too, though its figure of record is the collected one: its reading would miss
     * what those 2 s bring, 1-2 MiB, and the marginal cost would count it).
     */
    const restart = async (count: number) => {
      await stopAll();
      const restarted = performance.now();
      agent = await start();
      const readyS = (performance.now() - restarted) / 1000;
      const reader = new Agent({ keepAlive: true, maxSockets: 1 });
      const url = agent.url;
      const getRandom = async (times: number[]) => {
        const { key } = object(Math.floor(Math.random() * count), filler);
        const t = performance.now();
        const r = await send(reader, `${url}/v1/objects/${key}`, 'GET');
        times.push(performance.now() - t);
        if (r.status !== 200 || r.bytes !== SIZE)
          throw new Error(`GET ${key}: ${r.status}, ${r.bytes} bytes`);
      };
      const loadingTimes: number[] = [];
      while (!(await agent.status()).cache.indexLoaded)
        for (let j = 0; j < 20; j++) await getRandom(loadingTimes);
      const loadedS = (performance.now() - restarted) / 1000;
      await new Promise((r) => setTimeout(r, 2000));
      const rss = await rssOf(agent);
      return { readyS, loadedS, loadingTimes, rss, getRandom, close: () => reader.destroy() };
    };

    await put(0, half);
    const halfWay = await restart(half);
    halfWay.close();
    const halfCollected = await collectedRss(agent);
    await put(half, n);
    await stopAll();
    const disk = await diskUsage(store);

    // The same bytes as a plain file each.
    const plainN = quick ? Math.min(n, 25_000) : n;
    // Their 1,000 folders first, outside the timing: it is of the files.
    await pool(Math.min(plainN, 1000), CONCURRENCY, async (i) => {
      await mkdir(join(plain, object(i, filler).key, '..'), { recursive: true });
    });
    const plainStart = performance.now();
    await pool(plainN, CONCURRENCY, async (i) => {
      const { key, body } = object(i, filler);
      await writeFile(join(plain, key), body);
    });
    const plainS = (performance.now() - plainStart) / 1000;
    const plainDisk = await diskUsage(plain);
    await rm(plain, { recursive: true, force: true });

    // Restart on the same store: time to ready, memory, then random GETs.
    const { readyS, loadedS, loadingTimes, rss, getRandom, close } = await restart(n);
    // Before the GETs below: the manifests they read are kept a while (at most 4,096).
    const collected = await collectedRss(agent);
    const times: number[] = [];
    for (let j = 0; j < 2000; j++) await getRandom(times);
    close();
    times.sort((a, b) => a - b);
    loadingTimes.sort((a, b) => a - b);
    const putS = putMs / 1000;
    const marginal = (collected - halfCollected) / (n - half);
    const fixed = halfCollected - emptyCollected - marginal * half;
    const data = n * SIZE;
    const result = {
      bench: 'scale',
      objects: n,
      agent_build: buildOf(agent.child.pid!),
      object_bytes: SIZE,
      disk_ratio: round(disk.bytes / data, 2),
      files_per_object: round(disk.files / n, 2),
      plain_objects: plainN,
      plain_disk_ratio: round(plainDisk.bytes / (plainN * SIZE), 2),
      rss_bytes_per_object: Math.round((rss - emptyRss) / n),
      empty_rss_MiB: round(emptyRss / 2 ** 20, 1),
      marginal_rss_bytes_per_object: Math.round(marginal),
      fixed_rss_MiB: round(fixed / 2 ** 20, 1),
      projected_rss_bytes_per_object: Math.round(marginal + fixed / 1_000_000),
      ready_s: round(readyS, 2),
      loaded_s: round(loadedS, 2),
      loading_gets: loadingTimes.length,
      loading_p99_ms: loadingTimes.length > 0 ? round(percentile(loadingTimes, 99), 2) : null,
      put_per_s: Math.round(n / putS),
      plain_writes_per_s: Math.round(plainN / plainS),
      p50_ms: round(percentile(times, 50), 2),
      p99_ms: round(percentile(times, 99), 2),
    };
    console.log(
      `# ${n} objects: on disk ${(disk.bytes / 2 ** 20).toFixed(0)} MiB for ${(data / 2 ** 20).toFixed(0)} MiB of data (x${result.disk_ratio}, ` +
        `${result.files_per_object} files per object; a plain file each${plainN < n ? ` (${plainN} of them)` : ''}: x${result.plain_disk_ratio}); ` +
        `RSS after restart ${(rss / 2 ** 20).toFixed(0)} MiB (${result.rss_bytes_per_object} B per object over an empty agent's ${result.empty_rss_MiB} MiB; ` +
        `after a full collection each, ${result.marginal_rss_bytes_per_object} B per object from ${half} to ${n} objects and ${result.fixed_rss_MiB} MiB that does not grow with them: ` +
        `${result.projected_rss_bytes_per_object} B per object at 1,000,000); ` +
        `ready in ${result.ready_s} s, index loaded in ${result.loaded_s} s (${result.loading_gets} GETs meanwhile, p99 ${result.loading_p99_ms} ms); ${result.put_per_s} PUTs/s (plain files: ${result.plain_writes_per_s}/s); GET p50 ${result.p50_ms} ms, p99 ${result.p99_ms} ms`,
    );
    console.log(
      '# goals at 1,000,000 objects: disk_ratio <= 1.5, rss_bytes_per_object <= 300, ready_s <= 5' +
        (n >= 100_000 && n < 1_000_000
          ? "; with fewer objects, projected_rss_bytes_per_object estimates a full run's collected figure, " +
            'not its rss_bytes_per_object, which adds the garbage its load left (docs/benchmarks.md, scale)'
          : ''),
    );
    console.log(JSON.stringify(result));
  } finally {
    removeInterrupt();
    await stopAll();
    await rm(dir, { recursive: true, force: true });
  }
}
