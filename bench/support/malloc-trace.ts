/**
 * One agent's native allocations, traced with heaptrack (Debian's `heaptrack` package; its preload
 * library records every malloc, calloc, realloc and free with the call stack). The recording is cut
 * at chosen times (a copy of the file so far) and each cut is read with `heaptrack_print
 * --print-leaks`: what was still allocated at that moment, by call site. Grouped into what moves
 * with the load (Buffers, TLS buffers) and everything else, the cuts show whether native memory grows
 * between them: where the V8 heap snapshots (heap-diff.ts) cannot look.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Where Debian's heaptrack 1.4 puts the two pieces the `heaptrack` script wires together. */
const PRELOAD = '/usr/lib/heaptrack/libheaptrack_preload.so';
const INTERPRET = '/usr/lib/heaptrack/libexec/heaptrack_interpret';

/** Why a trace cannot run here, or undefined. */
export function mallocTraceUnavailable(): string | undefined {
  for (const path of [PRELOAD, INTERPRET, '/usr/bin/heaptrack_print', '/usr/bin/zstd'])
    try {
      accessSync(path, constants.R_OK);
    } catch {
      return `${path} is missing (apt-get install heaptrack zstd)`;
    }
  return undefined;
}

export interface MallocTrace {
  /** Environment for the traced process (its allocations go to the recording). */
  readonly env: Record<string, string>;
  /**
   * Copies the recording so far to `name` in the trace's folder; resolves with its path. Rejects once
   * the recording's reader has exited (a copy would be stale).
   */
  cut(name: string): Promise<string>;
  /** Waits for the recording to end (the traced process exited), or ends it after 30 s. */
  close(): Promise<void>;
  /** Ends the recording's reader at once (an interrupted or failed run). */
  abort(): void;
}

/** Starts the reader of a recording into `dir` (the traced process is started with `env`). */
export async function startMallocTrace(dir: string): Promise<MallocTrace> {
  const pipe = join(dir, 'heaptrack.fifo');
  const file = join(dir, 'heaptrack.zst');
  await run('mkfifo', [pipe]);
  // As the heaptrack script does: the preload library writes raw events into a pipe, the
  // interpreter resolves them and zstd compresses the result. In a process group of its own, so
  // that ending it ends the interpreter and zstd too (one blocked opening the pipe included).
  const reader = spawn('sh', ['-c', `"${INTERPRET}" < "${pipe}" | zstd -q -c > "${file}"`], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let errors = '';
  reader.stderr.on('data', (d) => (errors = (errors + String(d)).slice(-2000)));
  let ended: string | undefined;
  const exited = once(reader, 'exit').then(([code, signal]) => {
    ended = `the trace's reader exited (${code ?? signal})${errors ? `: ${errors.trim()}` : ''}`;
  });
  const abort = () => {
    if (ended === undefined && reader.pid !== undefined)
      try {
        process.kill(-reader.pid, 'SIGKILL');
      } catch {
        // gone already
      }
  };
  return {
    // After any preload of the caller's (another malloc), as the heaptrack script puts it.
    env: {
      LD_PRELOAD: process.env.LD_PRELOAD ? `${PRELOAD}:${process.env.LD_PRELOAD}` : PRELOAD,
      DUMP_HEAPTRACK_OUTPUT: pipe,
    },
    async cut(name) {
      if (ended !== undefined) throw new Error(ended);
      const path = join(dir, name);
      await copyFile(file, path); // a prefix of a zstd stream: heaptrack_print reads what is whole
      return path;
    },
    async close() {
      const timer = setTimeout(abort, 30_000);
      await exited;
      clearTimeout(timer);
    },
    abort,
  };
}

/** What was allocated at one cut (MB), by kind. */
export interface LiveNative {
  total: number;
  /** ArrayBuffer backing stores (`node::NodeArrayBufferAllocator`): Buffers, the hot tier among them. */
  buffers: number;
  /** OpenSSL's per-connection buffers in Node (`node::crypto::NodeBIO`). */
  tls: number;
  /** Everything else: OpenSSL, SQLite, V8's own mallocs, Node, libuv, nghttp2. */
  other: number;
  /** The largest call sites of `other`, MB each. */
  top: { site: string; mb: number }[];
  /** Allocation calls recorded, and the seconds the recording covers. */
  calls: number;
  runtimeS: number;
}

const UNIT: Record<string, number> = { B: 1e-6, K: 1e-3, M: 1, G: 1e3 };

/** Reads one cut with heaptrack_print (sizes there are in powers of 1000). */
export async function liveNative(cut: string): Promise<LiveNative> {
  const { stdout } = await run(
    'heaptrack_print',
    // Every call site (-n), so that none of the Buffers' or TLS buffers' falls into "other".
    [
      '-f',
      cut,
      '--print-leaks=1',
      '--print-peaks=0',
      '--print-allocators=0',
      '--print-temporary=0',
      '-n',
      '100000',
      '-s',
      '0',
    ],
    { maxBuffer: 256 * 2 ** 20 },
  );
  const live = parseLeaks(stdout);
  // heaptrack_print reads an empty or cut-short recording as "0B leaked": not a measure.
  if (!(live.calls > 0)) throw new Error(`${cut} records no allocation (did the trace's reader fail?)`);
  return live;
}

/** Parses heaptrack_print's "MEMORY LEAKS" list and its totals (exported for its test). */
export function parseLeaks(text: string): LiveNative {
  const mb = (size: string) => {
    const m = /^([\d.]+)([BKMG])?$/.exec(size);
    return m ? Number(m[1]) * UNIT[m[2] ?? 'B']! : NaN;
  };
  const total = mb(/^total memory leaked: (\S+)$/m.exec(text)?.[1] ?? '');
  const lines = text.split('\n');
  let buffers = 0;
  let tls = 0;
  const sites: { site: string; mb: number }[] = [];
  for (let i = 0; i < lines.length - 1; i++) {
    // A merged call site: "<size> leaked over <n> calls from" (no indent, no colon), then its function.
    const m = /^(\S+) leaked over \d+ calls from$/.exec(lines[i]!);
    if (!m) continue;
    const site = lines[i + 1]!.trim();
    const size = mb(m[1]!);
    if (site.startsWith('node::NodeArrayBufferAllocator::')) buffers += size;
    else if (site.startsWith('node::crypto::NodeBIO::')) tls += size;
    else sites.push({ site: site.slice(0, 90), mb: size });
  }
  const calls = Number(/^calls to allocation functions: (\d+)/m.exec(text)?.[1] ?? NaN);
  const runtimeS = Number(/^total runtime: ([\d.]+)s/m.exec(text)?.[1] ?? NaN);
  return { total, buffers, tls, other: total - buffers - tls, top: sites.slice(0, 6), calls, runtimeS };
}
