import { readdirSync, readFileSync } from 'node:fs';

/**
 * Where a Node process's CPU goes, by kind of thread, from /proc/PID/task/TID/stat (Linux):
 * - `main`: the thread that runs JavaScript (the task whose id is the process's);
 * - `v8`: V8's helper threads (concurrent marking and sweeping, compiler jobs: `V8Worker`, and
 *   `V8 DefaultWorke` in older Nodes);
 * - `libuv`: libuv's pool (`libuv-worker`): file system calls, asynchronous crypto, DNS; their
 *   kernel time is mostly the file writes' and reads';
 * - `other`: the rest (the inspector's and platform's threads, a worker's).
 * Each with user and kernel (system) seconds. A thread that ends between two readings takes its
 * time with it; a bench reads a server whose threads live as long as it does.
 */
export type ThreadKind = 'main' | 'v8' | 'libuv' | 'other';
export const THREAD_KINDS: readonly ThreadKind[] = ['main', 'v8', 'libuv', 'other'];

export interface CpuTime {
  user: number;
  system: number;
}
export type ThreadCpu = Record<ThreadKind, CpuTime>;

/** USER_HZ: the unit of /proc's times, 100 on every Linux this runs on. */
const TICKS_PER_S = 100;

/** Each live thread of `pid` by task id: its kind and its CPU time so far. */
export function readThreads(pid: number): Map<number, { kind: ThreadKind; time: CpuTime }> {
  const threads = new Map<number, { kind: ThreadKind; time: CpuTime }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // ended since the listing
    }
    // "TID (comm) state ...": comm may hold spaces and parentheses, so split at the last ')'.
    const close = stat.lastIndexOf(')');
    const name = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    const id = Number(tid);
    const time = { user: Number(fields[11]) / TICKS_PER_S, system: Number(fields[12]) / TICKS_PER_S };
    threads.set(id, { kind: kindOf(id === pid, name), time });
  }
  return threads;
}

function kindOf(main: boolean, name: string): ThreadKind {
  if (main) return 'main';
  if (name.startsWith('V8Worker') || name.startsWith('V8 DefaultWorke')) return 'v8';
  if (name.startsWith('libuv-worker')) return 'libuv';
  return 'other';
}

/** What `pid`'s threads used since `before` (readThreads' answer then), by kind. */
export function cpuSince(pid: number, before: ReturnType<typeof readThreads>): ThreadCpu {
  const used = Object.fromEntries(THREAD_KINDS.map((k) => [k, { user: 0, system: 0 }])) as ThreadCpu;
  for (const [tid, { kind, time }] of readThreads(pid)) {
    const then = before.get(tid)?.time ?? { user: 0, system: 0 }; // a thread started since: all of it
    used[kind].user += time.user - then.user;
    used[kind].system += time.system - then.system;
  }
  return used;
}
