import { readdirSync, readFileSync } from 'node:fs';
import { median, round } from './machine.ts';

/**
 * Where a Node process's CPU goes, by kind of thread, from /proc/PID/task/TID/stat (Linux):
 * - `main`: the thread that runs JavaScript (the task whose id is the process's);
 * - `v8`: V8's helper threads (`V8Worker`: concurrent marking and sweeping, compiler jobs);
 * - `libuv`: libuv's pool (`libuv-worker`): file system calls, asynchronous crypto, DNS; their
 *   kernel time is mostly the file writes' and reads';
 * - `other`: the rest (the platform's and the inspector's threads, a worker's).
 * Each with user and kernel (system) seconds. A thread that ends between two readings takes its
 * time with it; a bench reads a server whose threads live as long as it does. The names are Node
 * 24's (older Nodes named every thread `node`: all but the main one would count as `other`).
 */
export const THREAD_KINDS = ['main', 'v8', 'libuv', 'other'] as const;
export type ThreadKind = (typeof THREAD_KINDS)[number];

export interface CpuTime {
  user: number;
  system: number;
}
export type ThreadCpu = Record<ThreadKind, CpuTime>;

/** USER_HZ: the unit of /proc's times, 100 on every Linux this runs on. */
const TICKS_PER_S = 100;

/** A thread as its stat line gives it: its name and CPU time in ticks; undefined if malformed. */
export function parseStat(
  line: string,
): { name: string; userTicks: number; systemTicks: number } | undefined {
  // "TID (comm) state ...": comm may hold spaces and parentheses, so split at the last ')'.
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open === -1 || close < open) return undefined;
  const fields = line.slice(close + 2).split(' ');
  const userTicks = Number(fields[11]); // utime: field 14 of the line, 12th after the state
  const systemTicks = Number(fields[12]); // stime
  if (!Number.isSafeInteger(userTicks) || !Number.isSafeInteger(systemTicks)) return undefined;
  return { name: line.slice(open + 1, close), userTicks, systemTicks };
}

export function kindOf(main: boolean, name: string): ThreadKind {
  if (main) return 'main';
  if (name.startsWith('V8Worker')) return 'v8';
  if (name.startsWith('libuv-worker')) return 'libuv';
  return 'other';
}

type Ticks = { kind: ThreadKind; user: number; system: number };

/** Each live thread of `pid` by task id: its kind and its CPU time so far, in ticks. */
export function readThreads(pid: number): Map<number, Ticks> {
  const threads = new Map<number, Ticks>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let line: string;
    try {
      line = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // ended since the listing
    }
    const stat = parseStat(line);
    if (!stat) continue;
    const id = Number(tid);
    threads.set(id, { kind: kindOf(id === pid, stat.name), user: stat.userTicks, system: stat.systemTicks });
  }
  return threads;
}

/** CPU seconds (user + system) process `pid` has used so far, its ended threads' included. */
export function processCpuSeconds(pid: number): number {
  const stat = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  if (!stat) throw new Error(`/proc/${pid}/stat: not a stat line`);
  return (stat.userTicks + stat.systemTicks) / TICKS_PER_S;
}

/**
 * Starts reading `pid`'s CPU; the function it returns gives what the process has used since, in all
 * (`seconds`, ended threads' included) and by kind of thread.
 */
export function cpuReading(pid: number): () => { seconds: number; threads: ThreadCpu } {
  const seconds = processCpuSeconds(pid);
  const threads = readThreads(pid);
  return () => ({ seconds: processCpuSeconds(pid) - seconds, threads: cpuSince(pid, threads) });
}

/** What `pid`'s threads used since `before` (readThreads' answer then), by kind, in seconds. */
export function cpuSince(pid: number, before: ReturnType<typeof readThreads>): ThreadCpu {
  const ticks = Object.fromEntries(THREAD_KINDS.map((k) => [k, { user: 0, system: 0 }])) as ThreadCpu;
  for (const [tid, now] of readThreads(pid)) {
    const then = before.get(tid) ?? { user: 0, system: 0 }; // a thread started since: all of it
    ticks[now.kind].user += now.user - then.user;
    ticks[now.kind].system += now.system - then.system;
  }
  for (const k of THREAD_KINDS) {
    ticks[k] = { user: ticks[k].user / TICKS_PER_S, system: ticks[k].system / TICKS_PER_S };
  }
  return ticks;
}

/**
 * The median over runs of each kind's CPU per GB moved: user + system, and system alone. Each
 * figure is a median of its own, so a row's figures may come from different runs and need not add
 * up to the median of the total.
 */
export interface CpuPerGB {
  total: Record<ThreadKind, number>;
  kernel: Record<ThreadKind, number>;
}

export function medianPerGB(runs: readonly ThreadCpu[], bytes: number): CpuPerGB {
  const gb = bytes / 1e9;
  const per = (pick: (t: CpuTime) => number) =>
    Object.fromEntries(
      THREAD_KINDS.map((k) => [k, round(median(runs.map((r) => pick(r[k]))) / gb, 2)]),
    ) as Record<ThreadKind, number>;
  return { total: per((t) => t.user + t.system), kernel: per((t) => t.system) };
}

/** The header of a table of medianPerGB rows, after `what`. */
export function cpuTableHeader(what: string): string {
  return `# ${what} by thread, median s/GB (of which kernel): main | V8's helpers | libuv's pool | other`;
}

/** One row of that table. */
export function cpuTableRow(label: string, cpu: CpuPerGB): string {
  const cells = THREAD_KINDS.map((k) =>
    `${cpu.total[k].toFixed(2)} (${cpu.kernel[k].toFixed(2)})`.padStart(11),
  );
  return `# ${label} | ${cells.join(' | ')}`;
}
