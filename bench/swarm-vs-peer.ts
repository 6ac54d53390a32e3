/**
 * swarm-vs-peer: the `swarm` scenario (N nodes each uploading at most u, an origin at most u_s, all
 * wanting the same object at once) run four ways side by side in one run, for several N: EdgeMesh
 * (bench/support/mesh-swarm.ts), WebTorrent 1.9 with a local tracker (bench/support/webtorrent-swarm.ts),
 * the naive way (all N from the origin) and the Kumar–Ross lower bound. Prints a table and, last, the
 * figures at the headline N as JSON. A full run (not --quick) also writes the curve into
 * docs/benchmarks.md, between its markers, and draws docs/swarm-vs-peer.svg. The agents run as in
 * the image (bench/support/bundle.ts); `--sources` runs them from the TypeScript sources, without
 * the image's V8 flags, malloc settings and NODE_ENV; the last line's `agent_build` says how the
 * headline N's agents ran.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlaceOptions } from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { startOrigin } from '../agent/harness/origin-server.ts';
import { agentBuild, type BuildName } from './support/bundle.ts';
import { linePlotSvg } from './support/line-plot.ts';
import { onInterrupt } from './support/interrupt.ts';
import { describeMachine, round } from './support/machine.ts';
import {
  kumarRossBound,
  meshSwarm,
  MiB,
  naiveSwarm,
  OBJECT_NAME,
  type SwarmShape,
} from './support/mesh-swarm.ts';
import { webTorrentSwarm } from './support/webtorrent-swarm.ts';

const FULL = { nodes: [2, 4, 8, 12, 16], bytes: 64 * MiB, headline: 8 };
const QUICK = { nodes: [2, 4], bytes: 8 * MiB, headline: 4 };
/** Every node's upload cap and the origin's, as in `swarm`. */
const UPLOAD = 8 * MiB;
const ORIGIN = 8 * MiB;

/**
 * WebTorrent's own default piece picker (in order). Rarest first did no better here: in 1.9.7 its
 * picker is quadratic in the pieces, so with 64 KiB pieces the clients spend their time picking, and
 * with 1-4 MiB pieces it took as long or longer, the seeder sending as many copies (docs/benchmarks.md).
 */
const STRATEGY = 'sequential';

const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const PLOT = fileURLToPath(new URL('../docs/swarm-vs-peer.svg', import.meta.url));
const BEGIN = '<!-- swarm-vs-peer:begin -->';
const END = '<!-- swarm-vs-peer:end -->';

interface Point {
  nodes: number;
  bound: number;
  edgemesh: number;
  webtorrent: number;
  naive: number;
  edgemeshOriginBytes: number;
  webtorrentOriginBytes: number;
  webtorrentPieceLength: number;
  /** Seconds until the origin (EdgeMesh) or the seeder (WebTorrent) sent its last byte. */
  edgemeshOriginSeconds: number;
  webtorrentOriginSeconds: number;
  /** How EdgeMesh's agents ran (bundle.ts's buildOf); undefined when they failed. */
  edgemeshBuild: BuildName | undefined;
  /** Why a side failed at this point (its figures are NaN). */
  failures: string[];
}

export async function run(quick: boolean, args: readonly string[] = []): Promise<void> {
  const plan = quick ? QUICK : FULL;
  const build = agentBuild(args);
  const missing = natsUnavailable();
  if (missing) throw new Error(`swarm-vs-peer bench needs nats-server: ${missing}`);
  console.log(
    `# swarm-vs-peer: N in {${plan.nodes.join(', ')}}, upload ${UPLOAD / MiB} MiB/s per node, origin ` +
      `${ORIGIN / MiB} MiB/s, object ${plan.bytes / MiB} MiB; EdgeMesh, WebTorrent 1.9 (local tracker, no DHT), naive, bound; ` +
      `EdgeMesh's agents ${build.described}`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const loadBefore = loadavg();
  console.log(`# load average before: ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`);

  const object = randomBytes(plan.bytes);
  const expected = createHash('sha256').update(object).digest('hex');
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-swarm-vs-peer-'));
  const file = join(dir, OBJECT_NAME);
  await writeFile(file, object);
  const origin = await startOrigin(new Map([[`/o/${OBJECT_NAME}`, object]]), { bytesPerSecond: ORIGIN });
  const nats = await startNatsServer();
  // Interrupted (Ctrl-C, a kill, the test's timeout): every process started goes too.
  const children = new Set<ChildProcess>();
  const stopWatching = onInterrupt(
    () => {
      for (const child of children) child.kill('SIGKILL');
      for (const pid of startingChildren()) process.kill(pid, 'SIGKILL');
      origin.close();
    },
    () => nats.stop().then(() => rm(dir, { recursive: true, force: true })),
  );
  const points: Point[] = [];
  try {
    const place = build.place(dir);
    for (const nodes of plan.nodes) {
      const shape: SwarmShape = {
        nodes,
        bytes: plan.bytes,
        uploadBytesPerSecond: UPLOAD,
        originBytesPerSecond: ORIGIN,
      };
      const point = await measure(shape, {
        dir: join(dir, `n${nodes}`),
        file,
        expected,
        children,
        origin,
        nats,
        place,
      });
      points.push(point);
      console.log(
        `# N=${nodes}: bound ${point.bound.toFixed(2)} s | EdgeMesh ${point.edgemesh.toFixed(2)} s ` +
          `(origin ${round(point.edgemeshOriginBytes / MiB, 2)} MiB) | WebTorrent ${point.webtorrent.toFixed(2)} s ` +
          `(origin ${round(point.webtorrentOriginBytes / MiB, 2)} MiB, pieces of ${point.webtorrentPieceLength / 1024} KiB) | ` +
          `naive ${point.naive.toFixed(2)} s`,
      );
    }
  } finally {
    stopWatching();
    origin.close();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  console.log(`# load average after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`);
  const table = tableOf(points, plan.bytes);
  const failures = points.flatMap((p) => p.failures.map((f) => `N=${p.nodes}, ${f}`));
  for (const line of [...table, ...failures.map((f) => `failed: ${f}`)]) console.log(`# ${line}`);
  const head = points.find((p) => p.nodes === plan.headline)!;
  const json = JSON.stringify({
    bench: 'swarm-vs-peer',
    nodes: head.nodes,
    agent_build: head.edgemeshBuild ?? null,
    bytes: plan.bytes,
    edgemesh_s: round(head.edgemesh, 3),
    webtorrent_s: round(head.webtorrent, 3),
    naive_s: round(head.naive, 3),
    bound_s: round(head.bound, 3),
    edgemesh_origin_bytes: head.edgemeshOriginBytes,
    webtorrent_origin_bytes: head.webtorrentOriginBytes,
    webtorrent_piece_bytes: head.webtorrentPieceLength,
  });
  if (!quick) {
    await writeFile(PLOT, plotOf(points, plan.bytes));
    await writeDocs(table, failures, json, [loadBefore[0]!, loadAfter[0]!]);
    console.log(`# wrote ${PLOT} and the section of ${DOCS} between ${BEGIN} and ${END}`);
  }
  if (head.failures.length > 0)
    throw new Error(`the N=${head.nodes} point failed: ${head.failures.join('; ')}`);
  console.log(json);
}

/**
 * Processes this one started that are not in the set yet (an agent that has not said it is ready):
 * every process whose parent is this one, read from /proc (none where there is no /proc).
 */
function startingChildren(): number[] {
  try {
    return readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .filter((pid) => {
        try {
          // Fields after the command's closing parenthesis: state, then the parent's pid.
          const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
          return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid;
        } catch {
          return false; // gone since the listing
        }
      })
      .map(Number);
  } catch {
    return []; // no /proc: the set is all there is
  }
}

async function measure(
  shape: SwarmShape,
  env: {
    dir: string;
    file: string;
    expected: string;
    children: Set<ChildProcess>;
    origin: Awaited<ReturnType<typeof startOrigin>>;
    nats: Awaited<ReturnType<typeof startNatsServer>>;
    place: PlaceOptions;
  },
): Promise<Point> {
  await mkdir(env.dir, { recursive: true });
  const naive = await naiveSwarm(env.origin, shape.nodes, env.expected);
  const failures: string[] = [];
  const mesh = await attempt('EdgeMesh', failures, () =>
    meshSwarm({
      nodes: shape.nodes,
      uploadBytesPerSecond: shape.uploadBytesPerSecond,
      mesh: `swarm-vs-peer-${shape.nodes}`,
      dir: env.dir,
      nats: env.nats,
      origin: env.origin,
      expectedSha256: env.expected,
      onStart: (agent) => env.children.add(agent.child),
      place: env.place,
    }),
  );
  const bound = kumarRossBound(shape);
  const torrent = await attempt('WebTorrent', failures, () =>
    webTorrentSwarm({
      nodes: shape.nodes,
      uploadBytesPerSecond: shape.uploadBytesPerSecond,
      originBytesPerSecond: shape.originBytesPerSecond,
      file: env.file,
      dir: env.dir,
      expectedSha256: env.expected,
      onStart: (child) => env.children.add(child),
      strategy: STRATEGY,
      timeoutMs: Math.max(60_000, 10 * bound * 1000),
    }),
  );
  const mib = (bytes: readonly number[] | undefined) => bytes?.map((b) => round(b / MiB, 1)).join(' ') ?? '-';
  console.log(
    `# N=${shape.nodes}: MiB uploaded per node, EdgeMesh: ${mib(mesh?.uploads)}; WebTorrent: ${mib(torrent?.uploads)} ` +
      `(seeder: ${mib([torrent?.originBytes ?? NaN])} MiB sent, ${mib([torrent?.originPieceBytes ?? NaN])} MiB of pieces queued)`,
  );
  return {
    nodes: shape.nodes,
    bound,
    edgemesh: mesh?.seconds ?? NaN,
    webtorrent: torrent?.seconds ?? NaN,
    naive,
    edgemeshOriginBytes: mesh?.originBytes ?? NaN,
    webtorrentOriginBytes: torrent?.originBytes ?? NaN,
    webtorrentPieceLength: torrent?.pieceLength ?? NaN,
    edgemeshOriginSeconds: mesh?.originSeconds ?? NaN,
    webtorrentOriginSeconds: torrent?.originSeconds ?? NaN,
    edgemeshBuild: mesh?.build,
    failures,
  };
}

/**
 * One side's run at one point, or undefined with why it failed in `failures` (the curve goes on; the
 * point shows the side as failed, and the run fails at the end if it was the headline point).
 */
async function attempt<T>(side: string, failures: string[], run: () => Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch (error) {
    failures.push(`${side}: ${(error as Error).message.split('\n')[0]}`);
    console.log(`# failed: ${failures.at(-1)}`);
    return undefined;
  }
}

function tableOf(points: readonly Point[], bytes: number): string[] {
  const ratio = (t: number, p: Point) =>
    Number.isNaN(t) ? 'failed' : `${t.toFixed(2)} (${(t / p.bound).toFixed(2)})`;
  const origin = (b: number) => (Number.isNaN(b) ? '-' : (b / bytes).toFixed(2));
  const busy = (t: number) => (Number.isNaN(t) ? '-' : t.toFixed(2));
  return [
    '| N | bound s | EdgeMesh s (x bound) | WebTorrent s (x bound) | naive s | origin copies, EdgeMesh / WebTorrent | origin busy s, EdgeMesh / WebTorrent |',
    '|---|---|---|---|---|---|---|',
    ...points.map(
      (p) =>
        `| ${p.nodes} | ${p.bound.toFixed(2)} | ${ratio(p.edgemesh, p)} | ${ratio(p.webtorrent, p)} | ` +
        `${p.naive.toFixed(2)} | ${origin(p.edgemeshOriginBytes)} / ${origin(p.webtorrentOriginBytes)} | ` +
        `${busy(p.edgemeshOriginSeconds)} / ${busy(p.webtorrentOriginSeconds)} |`,
    ),
  ];
}

function plotOf(points: readonly Point[], bytes: number): string {
  const series = (of: (p: Point) => number) =>
    points.filter((p) => !Number.isNaN(of(p))).map((p) => [p.nodes, of(p)] as const);
  return linePlotSvg({
    title: `swarm-vs-peer: time until all N have ${bytes / MiB} MiB (upload ${UPLOAD / MiB} MiB/s each, origin ${ORIGIN / MiB} MiB/s)`,
    xLabel: 'N (nodes)',
    yLabel: 'seconds',
    series: [
      { name: 'EdgeMesh', color: '#1f77b4', points: series((p) => p.edgemesh) },
      { name: 'WebTorrent 1.9', color: '#d62728', points: series((p) => p.webtorrent) },
      { name: 'naive (origin)', color: '#7f7f7f', points: series((p) => p.naive) },
      { name: 'bound', color: '#2ca02c', dashed: true, points: series((p) => p.bound) },
    ],
  });
}

/** Replaces what is between the markers in docs/benchmarks.md (appends the markers if missing). */
async function writeDocs(
  table: readonly string[],
  failures: readonly string[],
  json: string,
  load: [number, number],
): Promise<void> {
  const section = [
    BEGIN,
    `Written by \`npm run bench -- swarm-vs-peer\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC; ` +
      `${describeMachine()}; 1-minute load average ${load[0].toFixed(2)} before, ${load[1].toFixed(2)} after.`,
    '',
    ...table,
    '',
    ...failures.map((f) => `Failed: ${f}.`),
    ...(failures.length > 0 ? [''] : []),
    '![time until all N have the object, against N](swarm-vs-peer.svg)',
    '',
    '```',
    json,
    '```',
    END,
  ].join('\n');
  const docs = await readFile(DOCS, 'utf8');
  const from = docs.indexOf(BEGIN);
  const to = docs.indexOf(END);
  const next =
    from >= 0 && to > from
      ? docs.slice(0, from) + section + docs.slice(to + END.length)
      : `${docs.trimEnd()}\n\n${section}\n`;
  await writeFile(DOCS, next);
}
