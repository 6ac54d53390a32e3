#!/usr/bin/env node
/**
 * `npm run soak -- --minutes 60 [--agents 3] [--plot FILE]`: a local mesh (agents on a real NATS) under
 * a steady mixed load: PUTs of small and medium objects (R = 3, W = 2), GETs of any of them from any
 * agent, DELETEs (mesh-wide purges) and exchange messages, once purges of keys never written have
 * filled every agent's tombstones to their cap (`--empty-tombstones`: from none). Every 10 s it
 * samples each agent's RSS, heap in use, open file descriptors, tombstones and store bytes. The
 * trend is the slope of a least-squares line over the second half of the run (after warm-up), per
 * agent; what matters is that memory and descriptors do not keep growing. `rest` is RSS less the V8
 * heap and the Buffers (malloc's, thread stacks, the Node binary's pages); `anon_rest` the same of
 * RSS's anonymous part, which memory pressure from elsewhere (the kernel dropping the binary's pages
 * and reading them again) does not move; `v8_pages` the resident pages of V8's heap, the heap's total
 * and the pages its collector keeps pooled (up to the heap's peak, given back only when the agent is
 * idle for a while). Draws an SVG plot (RSS and heap over time, per agent),
 * prints a table and the machine, and ends with one JSON line.
 *
 * `--heap-snapshots 20,60` has the first agent write a V8 heap snapshot at those minutes and prints
 * what grew between the first and the last, by constructor (bench/support/heap-diff.ts): where a
 * growing heap goes.
 *
 * `--malloc-trace 10,60` runs the first agent under heaptrack (Debian's package) and prints what of
 * its native memory (malloc's) was still allocated at those minutes: Buffers, TLS buffers and the
 * rest, with the largest call sites (bench/support/malloc-trace.ts): whether native memory grows, or
 * only what the allocators keep. The traced agent runs slower and its RSS holds heaptrack's tables,
 * so the JSON line's figures leave it out. A cut at the last minute is taken as the load stops. Not
 * with --heap-snapshots: a snapshot's own allocations would be read as the agent's.
 *
 * The agents run as the image runs them: its bundle (scripts/build.ts), V8 flags, malloc settings and
 * NODE_ENV. `--sources` runs them from the TypeScript sources with the same flags and settings (as
 * soaks before 2026-12-06 did, then without NODE_ENV); the JSON line's `agent_build` says which
 * (read from the agents' processes: `image` or `sources+image-settings`).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  type AgentProcess,
  peersAlive,
  type PlaceOptions,
  startAgentProcess,
} from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { MAX_TOMBSTONES } from '../agent/src/cache/tombstones.ts';
import { agentBuild, type BuildName, buildOfAll } from './support/bundle.ts';
import { report, summarize } from './support/heap-diff.ts';
import {
  type LiveNative,
  liveNative,
  mallocTraceUnavailable,
  startMallocTrace,
} from './support/malloc-trace.ts';
import { onInterrupt } from './support/interrupt.ts';
import { describeMachine, round } from './support/machine.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '60' },
    agents: { type: 'string', default: '3' },
    plot: { type: 'string', default: 'bench/soak.svg' },
    'sample-seconds': { type: 'string', default: '10' },
    /** More agent flags, space-separated (e.g. "--store.memory-bytes 0" to try without the hot tier). */
    'agent-args': { type: 'string', default: '' },
    /** Minutes at which the first agent writes a heap snapshot, comma-separated (e.g. "20,60"). */
    'heap-snapshots': { type: 'string', default: '' },
    /** Where the snapshots go (kept); default a folder in the soak's temporary directory (removed). */
    'snapshot-dir': { type: 'string' },
    /** Minutes at which the first agent's native allocations are read, comma-separated (e.g. "10,60"). */
    'malloc-trace': { type: 'string', default: '' },
    /** The agents from the TypeScript sources, not the image's bundle (flags and malloc settings the same). */
    sources: { type: 'boolean', default: false },
    /** Start with no tombstones (soaks before 2026-12-06's ninth session): the load fills them as it runs. */
    'empty-tombstones': { type: 'boolean', default: false },
  },
});
const minutes = Number(values.minutes);
const count = Number(values.agents);
const sampleMs = Number(values['sample-seconds']) * 1000;
const minutesList = (list: string) =>
  list
    .split(',')
    .filter(Boolean)
    .map(Number)
    .sort((a, b) => a - b);
const snapshotAt = minutesList(values['heap-snapshots']);
const traceAt = minutesList(values['malloc-trace']);
if (
  !(minutes > 0) ||
  !(count >= 2) ||
  !(sampleMs >= 1000) ||
  [...snapshotAt, ...traceAt].some((m) => !(m >= 0 && m <= minutes))
) {
  process.stderr.write(
    'usage: npm run soak -- --minutes N [--agents N>=2] [--plot FILE] [--sample-seconds S] [--heap-snapshots M1,M2 [--snapshot-dir DIR]] [--malloc-trace M1,M2] [--empty-tombstones]\n',
  );
  process.exit(2);
}
if (snapshotAt.length > 0 && traceAt.length > 0) {
  // Both on the first agent: a snapshot's own allocations (tens of MB while it is written) would be
  // read as the agent's native memory.
  process.stderr.write('soak: --heap-snapshots and --malloc-trace are one at a time (run twice)\n');
  process.exit(2);
}
const missing = natsUnavailable() ?? (traceAt.length > 0 ? mallocTraceUnavailable() : undefined);
if (missing) {
  process.stderr.write(`soak: ${missing}\n`);
  process.exit(2);
}

type Sample = {
  t: number;
  rss: number;
  /** RSS's anonymous part (/proc/PID/status RssAnon): what the kernel cannot drop and read again. */
  rssAnon: number;
  /**
   * V8's pages resident (anonymous mappings of V8's 256 KiB page size, from /proc/PID/smaps): the
   * heap's pages in use, and those its collector freed and keeps pooled for reuse, which the heap's
   * total leaves out and only a memory-reducing collection (when the agent is idle for a while)
   * gives back. More of them than the heap's total: memory V8 keeps of the heap's peak.
   */
  v8Pages: number;
  heap: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  hot: number;
  hotMax: number;
  fds: number;
  tombstones: number;
  storeBytes: number;
};
type Status = {
  tombstones: number;
  /** holdersGone and peerHandshakes are absent from builds before the counters (a soak of an older agent). */
  counters: { holdersGone?: number; peerHandshakes?: number };
  cache: { bytes: number; hotBytes: number; hotMaxBytes: number };
  process: {
    rssBytes: number;
    heapUsedBytes: number;
    heapTotalBytes: number;
    externalBytes: number;
    arrayBuffersBytes: number;
  };
};

// The agents run as the image runs them (bundle.ts's agentBuild: its bundle, V8 flags, malloc settings
// and NODE_ENV; --sources: the sources with the same flags and settings). A malloc setting in this
// process's environment takes the image's place (to try others: MALLOC_MMAP_THRESHOLD_=65536 npm run
// soak), and LD_PRELOAD (another malloc) is passed on.
const build = agentBuild(values.sources ? ['--sources'] : [], { sourcesKeepSettings: true });
let place: PlaceOptions = {};
/** How the agents really ran (bundle.ts's buildOf), read once they are up. */
let ran: BuildName | undefined;
const mallocEnv = () =>
  Object.entries({ ...place.env, LD_PRELOAD: process.env.LD_PRELOAD })
    .filter(([k, v]) => (k.startsWith('MALLOC_') || k === 'LD_PRELOAD') && v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

const dir = await mkdtemp(join(tmpdir(), 'edgemesh-soak-'));
const snapshotDir = values['snapshot-dir'] ?? join(dir, 'snapshots');
if (snapshotAt.length > 0) await mkdir(snapshotDir, { recursive: true });
const trace = traceAt.length > 0 ? await startMallocTrace(dir) : undefined;
const nats = await startNatsServer().catch(async (error: unknown) => {
  await rm(dir, { recursive: true, force: true });
  throw error;
});
const agents: AgentProcess[] = [];
// Interrupted (Ctrl-C, a kill): the agents, the one still starting too, nats-server and the stores
// go, not left behind.
const interrupted = new AbortController();
onInterrupt(
  () => {
    interrupted.abort();
    agents.forEach((a) => a.child.kill('SIGKILL'));
    trace?.abort();
  },
  () => nats.stop().then(() => rm(dir, { recursive: true, force: true })),
);
// Failed (an agent that did not start, say): the trace's reader does not outlive the run.
process.once('exit', () => trace?.abort());
/**
 * Stops what the run started and removes its files: at the end, or when the start failed. Each step
 * whatever the others did; an agent that has not stopped 10 s after SIGTERM is killed.
 */
const shutdown = async () => {
  const stop = (agent: AgentProcess) =>
    Promise.race([agent.stop(), delay(10_000, undefined, { ref: false }).then(() => agent.stop('SIGKILL'))]);
  const steps: (() => Promise<unknown> | undefined)[] = [
    () => Promise.all(agents.map(stop)),
    () => trace?.close(),
    () => nats.stop(),
    () => rm(dir, { recursive: true, force: true }),
  ];
  for (const step of steps)
    await Promise.resolve()
      .then(step)
      .catch((error: Error) => process.stderr.write(`soak: cleaning up: ${error.message}\n`));
};
try {
  place = build.place(dir);
  for (let i = 0; i < count; i++)
    agents.push(
      await startAgentProcess(
        [
          ...['--node-id', `s${i}`, '--zone', `z${i % 3}`, '--mesh', 'soak'],
          ...['--store.dir', join(dir, `s${i}`)],
          ...['--control-plane.servers', nats.url, '--replication.factor', String(Math.min(3, count))],
          ...['--replication.write-copies', '2', '--store.max-bytes', String(512 * 2 ** 20)],
          ...values['agent-args'].split(' ').filter(Boolean),
        ],
        20_000,
        {
          ...place,
          nodeFlags: [
            ...(place.nodeFlags ?? []),
            ...(i === 0 && snapshotAt.length > 0
              ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshotDir}`]
              : []),
          ],
          env: { ...place.env, ...(i === 0 && trace ? trace.env : {}) },
          signal: interrupted.signal,
        },
      ),
    );
  await Promise.all(agents.map((a) => peersAlive(a, count - 1)));
  ran = buildOfAll(agents.map((a) => a.child.pid));
} catch (error) {
  // Interrupted while an agent started: the interrupt's clean-up stops everything, then exits.
  if (interrupted.signal.aborted) await new Promise(() => undefined);
  // The agents that did start, nats-server and the stores go too, not left running.
  await shutdown();
  throw error;
}

/**
 * Purges of keys never written, from every agent in turn (16 at once), until each agent holds
 * MAX_TOMBSTONES tombstones: where the tombstones of a mesh that has purged for a few hours stand, at
 * their cap (each new one then pushes out the oldest of its signer's). The load's own purges (about
 * 200 a minute here) would take four hours to get there, so a soak from none measures tombstones
 * piling up (about 0.7 KB of heap each, and V8's pages kept for the heap's peak with them), not a
 * leak; from full, what it measures is the steady state.
 */
async function fillTombstones(): Promise<{ purges: number; seconds: number }> {
  const begun = performance.now();
  let purges = 0;
  let full = false;
  const tombstones = async () =>
    Promise.all(agents.map(async (a) => ((await a.status()) as unknown as Status).tombstones));
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (!full && !interrupted.signal.aborted) {
        // Twice the cap and not there (tombstones that do not stay): the load would not start.
        if (purges >= 2 * MAX_TOMBSTONES)
          throw new Error(
            `filling tombstones: not at their cap after ${purges} purges (${(await tombstones()).join(', ')})`,
          );
        const n = purges++;
        const res = await fetch(`${agents[n % agents.length]!.url}/v1/objects/soak-fill/${n}`, {
          method: 'DELETE',
        });
        await res.arrayBuffer();
        if (res.status !== 404 && res.status !== 204)
          throw new Error(`filling tombstones: DELETE ${res.status}`);
        if (n % 2000 === 1999) {
          const held = await tombstones();
          process.stderr.write(`soak: filling tombstones: ${held.join(', ')} of ${MAX_TOMBSTONES}\n`);
          if (held.every((t) => t >= MAX_TOMBSTONES)) full = true;
        }
      }
    }),
  );
  return { purges, seconds: (performance.now() - begun) / 1000 };
}

if (!values['empty-tombstones']) {
  try {
    const fill = await fillTombstones();
    // Interrupted: the interrupt's clean-up stops everything, then exits.
    if (interrupted.signal.aborted) await new Promise(() => undefined);
    console.log(
      `# tombstones filled to their cap (${MAX_TOMBSTONES} per agent) before the load: ${fill.purges} purges in ${fill.seconds.toFixed(0)} s`,
    );
  } catch (error) {
    await shutdown();
    throw error;
  }
}

const samples: Sample[][] = agents.map(() => []);
/** Connections from peers whose TLS handshake ended at each agent (NaN: a build without the counter). */
const handshakes = () =>
  Promise.all(
    agents.map(async (a) => ((await a.status()) as unknown as Status).counters.peerHandshakes ?? NaN),
  );
const handshakesAtStart = await handshakes();
const started = performance.now();
const until = started + minutes * 60_000;
const load = { puts: 0, gets: 0, deletes: 0, messages: 0, errors: 0 };
const errorKinds: Record<string, number> = {};
let nextKey = 0;
const keys: string[] = [];
const pick = <T>(list: readonly T[]) => list[Math.floor(Math.random() * list.length)]!;

async function sample(): Promise<void> {
  const t = (performance.now() - started) / 1000;
  await Promise.all(
    agents.map(async (agent, i) => {
      const s = (await agent.status()) as unknown as Status;
      samples[i]!.push({
        t,
        rss: s.process.rssBytes,
        rssAnon: rssAnonOf(agent.child.pid!),
        v8Pages: v8PagesOf(agent.child.pid!),
        heap: s.process.heapUsedBytes,
        heapTotal: s.process.heapTotalBytes,
        external: s.process.externalBytes,
        arrayBuffers: s.process.arrayBuffersBytes,
        hot: s.cache.hotBytes,
        hotMax: s.cache.hotMaxBytes,
        fds: readdirSync(`/proc/${agent.child.pid}/fd`).length,
        tombstones: s.tombstones,
        storeBytes: s.cache.bytes,
      });
    }),
  );
  const mb = (n: number) => (n / 1e6).toFixed(0);
  process.stderr.write(
    `soak ${t.toFixed(0)} s: ${samples
      .map((points, i) => {
        const s = points.at(-1)!;
        return `s${i} rss ${mb(s.rss)} heap ${mb(s.heap)}/${mb(s.heapTotal)} ab ${mb(s.arrayBuffers)} hot ${mb(s.hot)}`;
      })
      .join(' | ')} (MB)\n`,
  );
}

const snapshots: string[] = [];
/** Has the first agent write a heap snapshot; resolves with its path once it is whole. */
async function heapSnapshot(): Promise<void> {
  const before = new Set(await readdir(snapshotDir));
  agents[0]!.child.kill('SIGUSR2');
  // V8 writes it on the agent's main thread: once the agent answers again, the file is complete.
  for (;;) {
    const fresh = (await readdir(snapshotDir)).filter((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (fresh.length > 0) {
      await agents[0]!.status();
      snapshots.push(join(snapshotDir, fresh[0]!));
      process.stderr.write(`soak: heap snapshot ${snapshots.at(-1)}\n`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** One step of the mixed load: mostly reads, some writes, a few purges and messages. */
async function step(): Promise<void> {
  const agent = pick(agents);
  const roll = Math.random();
  try {
    if (roll < 0.3 || keys.length < 20) {
      const key = `soak/${nextKey++}`; // each PUT its own key (four clients write at once)
      const size = Math.random() < 0.9 ? 1024 + Math.floor(Math.random() * 64 * 1024) : 4 * 2 ** 20;
      const res = await fetch(`${agent.url}/v1/objects/${key}`, { method: 'PUT', body: randomBytes(size) });
      await res.arrayBuffer();
      if (res.status !== 201) throw new Error(`PUT ${res.status}`);
      keys.push(key);
      if (keys.length > 2000) keys.shift(); // older ones age out by eviction and purges
      load.puts++;
    } else if (roll < 0.9) {
      const res = await fetch(`${agent.url}/v1/objects/${pick(keys)}`);
      const body = await res.arrayBuffer();
      if (res.status !== 200 && res.status !== 404) throw new Error(`GET ${res.status} ${why(body)}`);
      load.gets++;
    } else if (roll < 0.95) {
      const key = keys.splice(Math.floor(Math.random() * keys.length), 1)[0]!;
      const res = await fetch(`${agent.url}/v1/objects/${key}`, { method: 'DELETE' });
      if (res.status !== 204 && res.status !== 404) throw new Error(`DELETE ${res.status}`);
      load.deletes++;
    } else {
      const res = await fetch(`${agent.url}/v1/exchange/all/soak`, {
        method: 'POST',
        body: randomBytes(512),
      });
      await res.arrayBuffer();
      if (res.status !== 202) throw new Error(`POST ${res.status}`);
      load.messages++;
    }
  } catch (error) {
    load.errors++;
    const { message } = error as Error;
    // Each failure on stderr in full (when, which agent, the agent's own words); counted by its start.
    process.stderr.write(
      `soak ${((performance.now() - started) / 1000).toFixed(1)} s: ${agent.url}: ${message}\n`,
    );
    const kind = message.slice(0, 60);
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  }
}

/** An error answer's code and message (the agent's JSON error body), or its first bytes. */
function why(body: ArrayBuffer): string {
  const text = Buffer.from(body).toString('utf8', 0, 300);
  try {
    const { error } = JSON.parse(text) as { error: { code: string; message: string } };
    return `${error.code}: ${error.message}`;
  } catch {
    return text;
  }
}

/** RSS beyond the V8 heap (all of it, used or not) and the Buffers. */
const rest = (s: Sample) => s.rss - s.heapTotal - s.arrayBuffers;
/**
 * The same of RSS's anonymous part: without the Node binary's file-backed pages, which the kernel
 * drops under memory pressure (from anything else on the machine) and reads again when used, so
 * they move RSS without the agent doing anything.
 */
const anonRest = (s: Sample) => s.rssAnon - s.heapTotal - s.arrayBuffers;

/** RssAnon of process `pid`, in bytes (0 once it has gone). */
function rssAnonOf(pid: number): number {
  try {
    const kb = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return Number(kb ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** Bytes resident in process `pid`'s anonymous mappings of exactly V8's page size (0 once it has gone). */
function v8PagesOf(pid: number): number {
  let smaps: string;
  try {
    smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return 0;
  }
  let bytes = 0;
  let page = false;
  for (const line of smaps.split('\n')) {
    const mapping = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(\S*)/.exec(line);
    if (mapping) page = !mapping[3] && parseInt(mapping[2]!, 16) - parseInt(mapping[1]!, 16) === V8_PAGE;
    else if (page && line.startsWith('Rss:')) bytes += Number(line.split(/\s+/)[1]) * 1024;
  }
  return bytes;
}
/** V8's regular page (kRegularPageSize). */
const V8_PAGE = 256 * 1024;

/** Least-squares slope of y over t (per minute), over the second half of the samples. */
function slopePerMinute(points: readonly Sample[], of: (s: Sample) => number): number {
  const tail = points.slice(Math.floor(points.length / 2));
  if (tail.length < 3) return 0;
  const n = tail.length;
  const mt = tail.reduce((a, s) => a + s.t, 0) / n;
  const my = tail.reduce((a, s) => a + of(s), 0) / n;
  let num = 0;
  let den = 0;
  for (const s of tail) {
    num += (s.t - mt) * (of(s) - my);
    den += (s.t - mt) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 60;
}

/** The plot: RSS (solid) and heap (dashed) of each agent, in MiB over minutes. */
function svg(): string {
  const W = 720;
  const H = 320;
  const pad = 40;
  const all = samples.flat();
  const maxT = Math.max(1, ...all.map((s) => s.t));
  const maxY = Math.max(1, ...all.map((s) => s.rss)) / 2 ** 20;
  const x = (t: number) => pad + ((W - 2 * pad) * t) / maxT;
  const y = (bytes: number) => H - pad - ((H - 2 * pad) * (bytes / 2 ** 20)) / (maxY * 1.1);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  const lines = samples.flatMap((points, i) => [
    `<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.5" points="${points.map((s) => `${x(s.t).toFixed(1)},${y(s.rss).toFixed(1)}`).join(' ')}"/>`,
    `<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-dasharray="4 3" points="${points.map((s) => `${x(s.t).toFixed(1)},${y(s.heap).toFixed(1)}`).join(' ')}"/>`,
  ]);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const mib = maxY * 1.1 * f;
    return `<text x="4" y="${y(mib * 2 ** 20) + 4}" font-size="10">${mib.toFixed(0)}</text>`;
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${pad}" y="16" font-size="12">soak: ${count} agents, ${round(maxT / 60, 1)} min; RSS (solid) and heap in use (dashed), MiB</text>`,
    `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/>`,
    `<text x="${W - pad - 40}" y="${H - pad + 16}" font-size="10">${round(maxT / 60, 1)} min</text>`,
    ...ticks,
    ...lines,
    '</svg>',
  ].join('\n');
}

try {
  console.log(
    `# soak: ${count} agents, ${minutes} min, sampled every ${sampleMs / 1000} s; agents ${build.described} (node ${(place.nodeFlags ?? []).join(' ')}, ${mallocEnv()}), ${values['agent-args'] || 'no extra flags'}; ${describeMachine()}`,
  );
  await sample();
  let nextSample = performance.now() + sampleMs;
  /** Runs `action` at each of `at` (minutes) while the load runs; one at the end is left to the caller. */
  const atMinutes = async (at: readonly number[], action: (m: number) => Promise<void>) => {
    for (const m of at) {
      if (m >= minutes) continue;
      const wait = started + m * 60_000 - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      await action(m);
    }
  };
  // Snapshots at their minutes, while the load runs (the one at the end once it has stopped).
  const snapshotting = atMinutes(snapshotAt, () => heapSnapshot());
  const cuts: { minute: number; path: string }[] = [];
  const cutTrace = async (m: number) => {
    cuts.push({ minute: m, path: await trace!.cut(`cut-${m}.zst`) });
    process.stderr.write(`soak: s0's native allocations cut at minute ${m}\n`);
  };
  const tracing = atMinutes(traceAt, cutTrace);
  // Four clients at once, steadily, until the end.
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (performance.now() < until) {
        await step();
        if (performance.now() >= nextSample) {
          // Samples missed while the machine stalled (a burst of them would weigh that moment
          // many times in the slopes) are skipped: the next is due a whole interval from now.
          while (nextSample <= performance.now()) nextSample += sampleMs;
          await sample();
        }
      }
    }),
  );
  // The mesh's connection churn over the load (read as it stops): each a TLS handshake at both ends
  // (and, before 1d98a1f, about 5 KB of OpenSSL's memory kept for good at the accepting end).
  const loadSeconds = (performance.now() - started) / 1000;
  const accepted = (await handshakes()).map((n, i) => n - handshakesAtStart[i]!);
  // The last cut as the load stops, before the last heap snapshot (its full collection) would move it.
  await tracing;
  if (traceAt.at(-1) === minutes) await cutTrace(minutes);
  await sample();
  await snapshotting;
  if (snapshotAt.at(-1) === minutes) await heapSnapshot();
  const rows = agents.map((_, i) => {
    const points = samples[i]!;
    const first = points[0]!;
    const last = points.at(-1)!;
    return {
      agent: `s${i}`,
      rss_mb: [round(first.rss / 1e6, 1), round(last.rss / 1e6, 1)],
      rss_slope_mb_per_min: round(slopePerMinute(points, (s) => s.rss) / 1e6, 3),
      heap_mb: [round(first.heap / 1e6, 1), round(last.heap / 1e6, 1)],
      heap_total_mb: [round(first.heapTotal / 1e6, 1), round(last.heapTotal / 1e6, 1)],
      heap_slope_mb_per_min: round(slopePerMinute(points, (s) => s.heap) / 1e6, 3),
      array_buffers_mb: [round(first.arrayBuffers / 1e6, 1), round(last.arrayBuffers / 1e6, 1)],
      array_buffers_slope_mb_per_min: round(slopePerMinute(points, (s) => s.arrayBuffers) / 1e6, 3),
      external_mb: [round(first.external / 1e6, 1), round(last.external / 1e6, 1)],
      hot_mb: [round(first.hot / 1e6, 1), round(last.hot / 1e6, 1)],
      hot_max_mb: round(last.hotMax / 1e6, 1),
      // What RSS holds beyond the V8 heap and the Buffers: the Node binary's pages, malloc's own
      // (freed memory it keeps, TLS and HTTP/2 state), thread stacks. Allocator growth shows here.
      rest_mb: [round(rest(first) / 1e6, 1), round(rest(last) / 1e6, 1)],
      rest_slope_mb_per_min: round(slopePerMinute(points, rest) / 1e6, 3),
      anon_rest_mb: [round(anonRest(first) / 1e6, 1), round(anonRest(last) / 1e6, 1)],
      v8_pages_mb: [round(first.v8Pages / 1e6, 1), round(last.v8Pages / 1e6, 1)],
      v8_pages_slope_mb_per_min: round(slopePerMinute(points, (s) => s.v8Pages) / 1e6, 3),
      anon_rest_slope_mb_per_min: round(slopePerMinute(points, anonRest) / 1e6, 3),
      fds: [first.fds, last.fds],
      fds_slope_per_min: round(
        slopePerMinute(points, (s) => s.fds),
        3,
      ),
      tombstones: [first.tombstones, last.tombstones],
      tombstones_slope_per_min: round(
        slopePerMinute(points, (s) => s.tombstones),
        1,
      ),
      store_mb: [round(first.storeBytes / 1e6, 1), round(last.storeBytes / 1e6, 1)],
      store_slope_mb_per_min: round(slopePerMinute(points, (s) => s.storeBytes) / 1e6, 3),
    };
  });
  for (const r of rows) console.log(`# ${JSON.stringify(r)}`);
  console.log(`# load: ${JSON.stringify(load)}; errors by kind: ${JSON.stringify(errorKinds)}`);
  // Reads sent to a holder that had let the object go (an owner's record older than its eviction).
  const gone = await Promise.all(
    agents.map(async (a) => ((await a.status()) as unknown as Status).counters.holdersGone ?? 0),
  );
  console.log(`# holders named that held the object no more, per agent: ${gone.join(', ')}`);
  console.log(
    `# peer connections accepted (TLS handshakes) during the load, per agent: ${accepted.join(', ')} (${accepted.map((n) => (n / loadSeconds).toFixed(2)).join(', ')} a second)`,
  );
  await writeFile(values.plot, svg());
  console.log(`# plot: ${values.plot}`);
  if (snapshots.length >= 2) {
    console.log(`# s0's heap, what grew from minute ${snapshotAt[0]} to minute ${snapshotAt.at(-1)}:`);
    console.log(report(await summarize(snapshots[0]!), await summarize(snapshots.at(-1)!)));
  }
  const native: (LiveNative & { minute: number })[] = [];
  for (const cut of cuts)
    try {
      native.push({ minute: cut.minute, ...(await liveNative(cut.path)) });
    } catch (error) {
      console.log(`# s0's native memory at minute ${cut.minute}: not read: ${(error as Error).message}`);
    }
  if (native.length > 0) {
    const f = (n: number) => n.toFixed(2).padStart(9);
    console.log(`# s0's native memory still allocated (heaptrack), MB:`);
    console.log(`#  minute  recorded     total   Buffers       TLS     other`);
    for (const n of native)
      console.log(
        `# ${String(n.minute).padStart(7)} ${`${n.runtimeS.toFixed(0)} s`.padStart(9)} ${f(n.total)} ${f(n.buffers)} ${f(n.tls)} ${f(n.other)}`,
      );
    console.log(`# largest of "other" at minute ${native.at(-1)!.minute}:`);
    for (const t of native.at(-1)!.top) console.log(`#   ${t.mb.toFixed(2).padStart(7)} ${t.site}`);
  }
  // The traced agent runs slower and its RSS holds heaptrack's tables: left out of the verdict.
  const judged = trace ? rows.slice(1) : rows;
  const worst = (
    key:
      | 'rss_slope_mb_per_min'
      | 'heap_slope_mb_per_min'
      | 'array_buffers_slope_mb_per_min'
      | 'rest_slope_mb_per_min'
      | 'anon_rest_slope_mb_per_min'
      | 'fds_slope_per_min'
      | 'tombstones_slope_per_min'
      | 'store_slope_mb_per_min',
  ) => Math.max(...judged.map((r) => r[key]));
  const end = (key: 'rss_mb' | 'heap_total_mb' | 'array_buffers_mb' | 'rest_mb' | 'hot_mb') =>
    Math.max(...judged.map((r) => r[key][1]!));
  console.log(
    JSON.stringify({
      bench: 'soak',
      minutes,
      agents: count,
      agent_build: ran ?? null,
      requests: load.puts + load.gets + load.deletes + load.messages,
      errors: load.errors,
      rss_slope_mb_per_min: worst('rss_slope_mb_per_min'),
      heap_slope_mb_per_min: worst('heap_slope_mb_per_min'),
      array_buffers_slope_mb_per_min: worst('array_buffers_slope_mb_per_min'),
      rest_slope_mb_per_min: worst('rest_slope_mb_per_min'),
      anon_rest_slope_mb_per_min: worst('anon_rest_slope_mb_per_min'),
      fds_slope_per_min: worst('fds_slope_per_min'),
      tombstones_slope_per_min: worst('tombstones_slope_per_min'),
      store_slope_mb_per_min: worst('store_slope_mb_per_min'),
      tombstones_filled: !values['empty-tombstones'],
      rss_end_mb: end('rss_mb'),
      heap_total_end_mb: end('heap_total_mb'),
      array_buffers_end_mb: end('array_buffers_mb'),
      hot_end_mb: end('hot_mb'),
      hot_max_mb: Math.max(...rows.map((r) => r.hot_max_mb)),
      rest_end_mb: end('rest_mb'),
      // The busiest agent's; null for a build without the counter.
      peer_handshakes_per_s_max: accepted.some(Number.isNaN)
        ? null
        : round(Math.max(...accepted) / loadSeconds, 2),
      ...(native.length > 0
        ? {
            malloc_other_mb: native.map((n) => round(n.other, 2)),
            malloc_trace_minutes: native.map((n) => n.minute),
            traced_agent: 's0',
          }
        : {}),
    }),
  );
} finally {
  await shutdown();
}
