/**
 * Node flags the agent runs with in its image (the Dockerfile's ENTRYPOINT; a test keeps the two
 * equal). An idle agent is mostly V8 heap and the Node binary's own pages; the first three trim what
 * can be trimmed for the idle goal (80 MB), at a cost to small hits under load (a chunk's bytes live
 * outside the V8 heap, in Buffers, so large transfers pay little); the fourth is for small hits:
 * - a 1 MiB young generation (V8's default grows to 16 MiB semi-spaces, ~30 MiB of RSS once touched).
 *   Its cost: the agent's main thread spent 40-44 us per 4 KiB hit under `load --quick` without it
 *   against 54-70 with the three then shipped (two runs each, 2026-12-07; 5-10% in earlier runs); a 4 MiB one
 *   cost the idle agent 4.3 MiB (docs/benchmarks.md, load). An 8 MiB one took V8's collector from
 *   9.3 to 3.3% of the main thread's profile under 4 KiB hits, 15.8 to 8.5% under small PUTs, but
 *   cost an idle agent 4.4 MiB at the start (`idle --minutes 3`, one run each), and an agent
 *   restarted on a store keeps what its index load grew (`scale --quick`, both runs with the
 *   compaction at start the image now makes: 608 B of RSS per object against 452; docs/benchmarks.md, idle,
 *   2026-12-07, fifteenth session);
 * - one V8 background thread (each keeps its own malloc arena and stack);
 * - V8's optimizing compilers (Maglev, TurboFan) on the main thread, one function at a time. An idle
 *   agent's once-a-second work (membership pings, their gRPC calls, probes) turns hot together
 *   about four minutes after its start: some 60 functions were optimized within five seconds, and
 *   malloc'd memory peaked 8 MiB above its usual level; it was freed, but glibc's main heap kept the
 *   stretch (a free 5.9 MB block inside it afterwards). One at a time, two idle agents ended ten
 *   minutes at 97.8-97.9 MiB (their mean; three pairs in two runs) against 103.5-109.3, and were at
 *   93.0-93.8 against 93.2-99.4 at five. The cost: a function's first optimization pauses the main
 *   thread while it compiles (0.05-6 ms each in `--trace-opt`); `load` and `transfer` did not tell
 *   the two apart beyond their noise, `hit --quick`'s 4 KiB p99 was higher with it in both of two
 *   pairs (unsettled). Under the soak's load, 30 minutes side by side, RSS less heap and Buffers
 *   rose 0.09-0.21 MB/min per agent against 0.30-1.18 (one pair; docs/benchmarks.md, soak, idle).
 * - no memory reducer: V8's own memory-reducing collections, which it starts after about 8 s of
 *   little allocation. An agent never met them until its first quiet compaction (quiet-compaction.ts):
 *   until then V8 counts its allocation as high ("Embedder mutator utilization = 0.000
 *   (mutator_speed=0, gc_speed=1)" in `--trace-mutator-utilization`, every 8 s). The vm context
 *   that compaction creates, once, to reach `gc` is what changes that: in a bare process with 15 MB
 *   live, a new context alone woke the reducer 8 s later, a requested full collection alone did not.
 *   From then on every lull of 8 s between bursts of requests (a client's pause, another server's
 *   turn in `load`) ran two memory-reducing collections, which emptied V8's pool of free pages
 *   (`--trace-gc`: "pooled: 0 MB"), so the next burst ran on fresh pages: after a quiet compaction,
 *   4 KiB hits cost the main thread 65.0-67.4 us each, p99 39.5-43.5 ms, against 56.7-57.7 us and
 *   7.8-9.6 ms with this flag (`load --after-quiet`, two full runs each way, 2026-12-07;
 *   docs/benchmarks.md, load after quiet), and 47.2-53.9 us in an agent never compacted (plain
 *   `load`, two runs, before the compaction at start): 3-10 us a hit may remain, unsettled in
 *   this VM's noise (three runs with the compaction at start read 47.3-55.8). Without this flag
 *   the agent also makes no compaction at the end of its start-up (agent.ts, memoryReducerOff). The
 *   quiet compaction gives memory back when the agent is idle; idle memory was the same without the
 *   reducer in the one pair measured (`idle --minutes 5` side by side, second half: 82.5 MiB with
 *   it, 83.1 without).
 * docs/deploy.md has the measured effect of each. V8 reads them at start only, so they are flags.
 */
export const NO_MEMORY_REDUCER = '--no-memory-reducer';

export const AGENT_NODE_FLAGS = [
  '--max-semi-space-size=1',
  '--v8-pool-size=1',
  '--no-concurrent-recompilation',
  NO_MEMORY_REDUCER,
];

/**
 * Whether V8's memory reducer is off in a process started with `execArgv` (process.execArgv): the
 * last of its flags wins, as in V8, in any of V8's spellings (`--no-memory-reducer`,
 * `--nomemory_reducer`, `--memory-reducer=false`...). Node refuses it in NODE_OPTIONS, and setting
 * it at run time (node:v8's setFlagsFromString) did not stop the reducer, so the command line is
 * where it is.
 */
export function memoryReducerOff(execArgv: readonly string[]): boolean {
  let off = false;
  for (const arg of execArgv) {
    const m = /^--?(no[-_]?)?memory[-_]reducer(?:=(true|false))?$/.exec(arg);
    if (m) off = m[1] !== undefined ? m[2] !== 'false' : m[2] === 'false';
  }
  return off;
}

/**
 * Environment the image sets for the agent (the Dockerfile's ENV; a test keeps the two equal):
 * - glibc's per-thread malloc arenas hold memory an idle agent never gives back; two are plenty;
 * - blocks of 512 KiB and more from mmap, so each goes back to the system when freed (unless a free
 *   stretch of glibc's heap fits it). glibc's default threshold rises to the size of each larger
 *   mmapped block freed, after which 4 MiB chunk Buffers came from its heap, which fragmented: RSS
 *   ended 64-129 MB higher after the soak's hour (docs/benchmarks.md, soak). Not 4 MiB, the chunk
 *   size: blocks freed early in glibc's heap stay resident when anything lives above them, and at
 *   start-up those are Node's reads of the bundle's two largest files (1.7 MiB each, twice: the
 *   file and its decoding) and a 512 KiB block of V8's: an idle agent was 5.7-7.6 MiB larger with
 *   4 MiB than with 512 KiB or glibc's default (docs/deploy.md). On the data path, a block between
 *   the two sizes is the chunk Buffer of an object of that size, put or read from disk or a peer
 *   (one each); hits in the hot tier and small objects make none. Such a block costs a cold read
 *   10-20% more CPU than one from the heap (its pages faulted in and zeroed: docs/deploy.md).
 *   Setting it also fixes the heap's trim threshold at 128 KiB. The operator, from the same image,
 *   gets it too.
 */
export const AGENT_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_MMAP_THRESHOLD_: String(512 * 2 ** 10),
};

/** The whole environment the image sets for its processes (the Dockerfile's ENV, less the revision). */
export const AGENT_IMAGE_ENV: Readonly<Record<string, string>> = {
  ...AGENT_MALLOC_ENV,
  NODE_ENV: 'production',
};
