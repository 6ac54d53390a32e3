/**
 * hot-memory: what the hot tier's way of keeping chunks costs in process memory under an edge cache's
 * churn, the agent's way (`HotTier`: small chunks copied into 1 MiB slabs, since 4783fa9) and, side
 * by side, the way before it (the tier kept each Buffer it was handed). Each way runs in a process of
 * its own with the agent's V8 flags and malloc settings (`node-flags.ts`), both at once, the same
 * seeded workload: a 256 MiB tier (the default `store.memoryBytes`), 40,000 objects of 1-65 KiB (the
 * soak's small objects) picked with a skew, and per operation what the agent allocates around it:
 * 40% PUTs (the body read in socket-sized pieces, joined, and the chunk set into the tier), 55% GETs
 * (a miss reads the chunk "from disk" into a new Buffer and sets it), 5% DELETEs; everything but the
 * tier's entries is let go 64 operations later (requests in flight). Figures per way: RSS, and `rest`
 * (RSS - V8 heap total - ArrayBuffers: malloc's heap and what else V8 does not count) at the end and
 * its slope over the second half, in MB per million operations, which is what the soak's `rest`
 * growth is made of when it comes from the tier. Operations, not minutes, so the two ways compare at
 * the same work whatever CPU each got. `--ops N` (default 6,000,000; --quick 400,000).
 */
import { fileURLToPath } from 'node:url';
import { HotTier } from '../agent/src/cache/hot-tier.ts';
import { AGENT_MALLOC_ENV, AGENT_NODE_FLAGS } from '../agent/src/node-flags.ts';
import { childJson } from './support/child-json.ts';
import { describeMachine, round } from './support/machine.ts';
import { seeded } from '../agent/harness/seeded.ts';

const WAYS = ['slabs', 'as-handed'] as const;
type Way = (typeof WAYS)[number];
const TIER_BYTES = 256 * 2 ** 20;
const OBJECTS = 40_000;
const IN_FLIGHT = 64;
const SAMPLES = 60;

interface Sample {
  ops: number;
  rss: number;
  heapTotal: number;
  arrayBuffers: number;
}
interface Figures {
  way: Way;
  ops: number;
  /** CPU seconds the workload took. */
  seconds: number;
  rssMB: number;
  restMB: number;
  restSlope: number;
  rssSlope: number;
  tierMB: number;
  liveMB: number;
  /** GETs the tier answered, of all GETs. */
  hitRatio: number;
}

/** The tier before 4783fa9: each Buffer kept as it was handed in, least recently used out first. */
class AsHandedTier {
  readonly #chunks = new Map<string, Buffer>();
  #bytes = 0;
  readonly maxBytes: number;
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }
  get bytes(): number {
    return this.#bytes;
  }
  get liveBytes(): number {
    return this.#bytes;
  }
  get(digest: string): Buffer | undefined {
    const data = this.#chunks.get(digest);
    if (data) {
      this.#chunks.delete(digest);
      this.#chunks.set(digest, data);
    }
    return data;
  }
  set(digest: string, data: Buffer): void {
    if (data.length > this.maxBytes / 4 || this.#chunks.has(digest)) return;
    this.#chunks.set(digest, data);
    this.#bytes += data.length;
    for (const [victim, bytes] of this.#chunks) {
      if (this.#bytes <= this.maxBytes) break;
      this.#chunks.delete(victim);
      this.#bytes -= bytes.length;
    }
  }
  delete(digest: string): void {
    const data = this.#chunks.get(digest);
    if (!data) return;
    this.#chunks.delete(digest);
    this.#bytes -= data.length;
  }
}

/** Least-squares slope of y against x. */
function slope(points: readonly (readonly [number, number])[]): number {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / sxx;
}

/** One way, in this process: the workload, then its figures as a JSON line. */
function measure(way: Way, ops: number): Figures {
  const random = seeded(42);
  const tier = way === 'slabs' ? new HotTier(TIER_BYTES) : new AsHandedTier(TIER_BYTES);
  const sizeOf = (n: number) => 1024 + ((n * 2654435761) % (64 * 1024));
  const inFlight: unknown[] = new Array<unknown>(IN_FLIGHT);
  const samples: Sample[] = [];
  let gets = 0;
  let hits = 0;
  const every = Math.max(1, Math.floor(ops / SAMPLES));
  const cpu0 = process.cpuUsage();
  for (let op = 0; op < ops; op++) {
    const n = Math.floor(random() ** 2 * OBJECTS); // a skew: low numbers are asked for more
    const digest = `k${n}`;
    const size = sizeOf(n);
    const r = random();
    let held: unknown;
    if (r < 0.4) {
      // A PUT: the body as the socket gave it (pieces of up to 16 KiB), joined into the chunk.
      const pieces: Buffer[] = [];
      for (let left = size; left > 0; left -= 16 * 1024)
        pieces.push(Buffer.allocUnsafe(Math.min(left, 16 * 1024)));
      const body = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, size);
      body[0] = n & 0xff;
      tier.set(digest, body);
      held = { pieces, head: JSON.stringify({ key: digest, size }) };
    } else if (r < 0.95) {
      const hit = tier.get(digest);
      gets++;
      if (hit) {
        hits++;
        held = hit;
      } else {
        const read = Buffer.allocUnsafe(size); // the chunk read from disk (or a peer) and verified
        read[0] = n & 0xff;
        tier.set(digest, read);
        held = read;
      }
    } else tier.delete(digest);
    inFlight[op % IN_FLIGHT] = held; // let go IN_FLIGHT operations later
    if (op % every === 0 || op === ops - 1) {
      const m = process.memoryUsage();
      samples.push({ ops: op + 1, rss: m.rss, heapTotal: m.heapTotal, arrayBuffers: m.arrayBuffers });
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const seconds = (cpu.user + cpu.system) / 1e6; // CPU, not wall time: the two ways share the cores
  const MB = (b: number) => b / 1e6;
  const second = samples.slice(Math.floor(samples.length / 2));
  const perMillion = (f: (s: Sample) => number) => slope(second.map((s) => [s.ops / 1e6, MB(f(s))] as const));
  const rest = (s: Sample) => s.rss - s.heapTotal - s.arrayBuffers;
  const last = samples.at(-1)!;
  return {
    way,
    ops,
    seconds,
    rssMB: MB(last.rss),
    restMB: MB(rest(last)),
    restSlope: perMillion(rest),
    rssSlope: perMillion((s) => s.rss),
    tierMB: MB(tier.bytes),
    liveMB: MB(tier.liveBytes),
    hitRatio: hits / gets,
  };
}

/** One way in a child process of its own, with the agent's flags and malloc settings. */
async function measureApart(way: Way, ops: number): Promise<Figures> {
  return childJson<Figures>(
    [...AGENT_NODE_FLAGS, fileURLToPath(import.meta.url), '--measure', way, String(ops)],
    `hot-memory: measuring ${way}`,
    { ...process.env, ...AGENT_MALLOC_ENV },
  );
}

export async function run(quick: boolean, args: readonly string[]): Promise<void> {
  const opsArg = args.indexOf('--ops');
  const ops = quick ? 400_000 : opsArg >= 0 ? Number(args[opsArg + 1]) : 6_000_000;
  if (!Number.isSafeInteger(ops) || ops < 1000)
    throw new Error('--ops takes a whole number of at least 1000');
  console.log(
    `# hot-memory: ${ops} operations per way on a ${TIER_BYTES / 2 ** 20} MiB tier, ${OBJECTS} objects of 1-65 KiB, both ways at once`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const results = await Promise.all(WAYS.map((way) => measureApart(way, ops)));
  for (const f of results)
    console.log(
      `# ${f.way}: ${round(f.seconds, 1)} s of CPU; RSS ${round(f.rssMB, 1)} MB, rest ${round(f.restMB, 1)} MB at the end; ` +
        `over the second half, RSS ${round(f.rssSlope, 2)} and rest ${round(f.restSlope, 2)} MB per million operations; tier ${round(f.tierMB, 1)} MB holding ${round(f.liveMB, 1)} MB of chunks; hit ratio ${round(f.hitRatio, 3)}`,
    );
  const [slabs, asHanded] = results as [Figures, Figures];
  console.log(
    JSON.stringify({
      bench: 'hot-memory',
      ops,
      slabs_rss_mb: round(slabs.rssMB, 1),
      as_handed_rss_mb: round(asHanded.rssMB, 1),
      slabs_rest_mb: round(slabs.restMB, 1),
      as_handed_rest_mb: round(asHanded.restMB, 1),
      slabs_rest_slope_mb_per_mop: round(slabs.restSlope, 3),
      as_handed_rest_slope_mb_per_mop: round(asHanded.restSlope, 3),
      rss_ratio: round(slabs.rssMB / asHanded.rssMB, 3),
      slabs_live_mb: round(slabs.liveMB, 1),
      as_handed_live_mb: round(asHanded.liveMB, 1),
      cpu_ratio: round(slabs.seconds / asHanded.seconds, 3),
      slabs_hit_ratio: round(slabs.hitRatio, 4),
      as_handed_hit_ratio: round(asHanded.hitRatio, 4),
    }),
  );
}

if (process.argv[2] === '--measure') {
  const way = process.argv[3] as Way;
  if (!WAYS.includes(way)) throw new Error(`hot-memory: no way ${way}`);
  console.log(JSON.stringify(measure(way, Number(process.argv[4]))));
}
