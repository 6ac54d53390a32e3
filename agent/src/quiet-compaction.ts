import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { every } from './time/every.ts';

/** V8's `gc` function (`--expose-gc`), with the options Node 24's V8 takes. */
type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

export interface QuietCompactionOptions {
  /** How often the event loop's use is looked at (ms). */
  periodMs: number;
  /** Periods in a row the loop must have been this quiet (its utilization at most `maxUtilization`). */
  quietPeriods: number;
  maxUtilization: number;
  /** A count of the work the process did (requests served, bytes moved): quiet only while it stands still. */
  workDone: () => number;
  /** Compact again only once RSS has grown this much (bytes) above what the last compaction left, */
  minGrowthBytes: number;
  /** and this long (ms) after it; */
  minIntervalMs: number;
  /** and never with more than this (bytes) of the heap in use: the pause grows with it. */
  maxHeapBytes: number;
  /**
   * Compact once, immediately, as well (within `maxHeapBytes`): the caller's start-up is over, so what it
   * left (its garbage, the young generation's and V8's pooled pages) goes back before more work
   * settles on top of it.
   */
  atStart?: boolean;
  /** Called after each compaction with what it did. */
  onCompacted: (result: { rssBefore: number; rssAfter: number; ms: number }) => void;
  /** Called when a round, or the compaction at start, fails (it never should). */
  onError: (error: Error) => void;
}

/** V8's `gc`, taken once for the process (every agent in it shares it). */
let gc: Gc | undefined;

/**
 * `gc` without starting Node with --expose-gc: the flag set at run time (node:v8's
 * setFlagsFromString) for a fresh context to get it, then unset, as it changes V8's flag hash, and
 * Node's built-in modules loaded afterwards would be compiled from source instead of taken from its
 * code cache. Nothing else in the process sees it. Creating that context is what wakes V8's own
 * memory reducer, which had never run in the agent before; the image runs the agent with
 * `--no-memory-reducer` (node-flags.ts says what the reducer cost small hits).
 */
function collector(): Gc {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    try {
      gc = runInNewContext('gc') as Gc;
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  }
  return gc;
}

/**
 * Gives V8's pooled and unused pages back to the system when the process has been quiet a while.
 * V8 keeps the pages its collections free, and grows the heap between collections, so an agent
 * left with no work (probes, pings and scrapes only) ends minutes later 8-10 MiB above where it
 * started, and keeps that (docs/benchmarks.md, idle). A memory-reducing collection gives it back,
 * but it stops the thread for a while (30-80 ms for a 25 MiB heap here), so it runs only when
 * nothing else does: after `quietPeriods` periods in a row with no work done (`workDone` the same)
 * and the event loop used at most `maxUtilization`, and only once RSS has grown by
 * `minGrowthBytes`, and `minIntervalMs` has passed, since the last one. Under load, light or
 * heavy, it never runs. With `atStart`, once more at once. Returns a function that stops it.
 */
export function compactWhenQuiet(options: QuietCompactionOptions): () => void {
  let quiet = 0;
  let floor = 0; // RSS the last compaction left
  let lastAt = -Infinity; // when it ended (performance.now())
  let last = performance.eventLoopUtilization();
  let work = options.workDone();
  const compact = (rssBefore: number) => {
    const started = performance.now();
    collector()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    lastAt = performance.now();
    floor = process.memoryUsage.rss();
    quiet = 0;
    last = performance.eventLoopUtilization(); // the collection itself is not work
    options.onCompacted({ rssBefore, rssAfter: floor, ms: lastAt - started });
  };
  if (options.atStart) {
    try {
      if (process.memoryUsage().heapUsed <= options.maxHeapBytes) compact(process.memoryUsage.rss());
    } catch (error) {
      options.onError(error as Error);
    }
  }
  const round = () => {
    const now = performance.eventLoopUtilization();
    const used = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    const done = options.workDone();
    quiet = used <= options.maxUtilization && done === work ? quiet + 1 : 0;
    work = done;
    if (quiet < options.quietPeriods || performance.now() - lastAt < options.minIntervalMs) return;
    const rssBefore = process.memoryUsage.rss();
    if (floor > 0 && rssBefore < floor + options.minGrowthBytes) return;
    if (process.memoryUsage().heapUsed > options.maxHeapBytes) return;
    compact(rssBefore);
  };
  const timer = every(options.periodMs, round, options.onError);
  return () => clearInterval(timer);
}
