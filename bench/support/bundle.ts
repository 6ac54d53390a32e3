import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlaceOptions } from '../../agent/harness/agent-process.ts';
import { AGENT_IMAGE_ENV, AGENT_NODE_FLAGS } from '../../agent/src/node-flags.ts';

const BUILD = fileURLToPath(new URL('../../scripts/build.ts', import.meta.url));

/** Builds what the image ships (scripts/build.ts) into `dir`; returns the folder (agent.mjs, operator.mjs). */
export function buildBundle(dir: string): string {
  const out = join(dir, 'dist');
  const built = spawnSync(process.execPath, [BUILD, out], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`the build failed: ${built.stderr}`);
  return out;
}

/** What a bench's last line says of how its agents ran (`agent_build`), read from a running agent (buildOf). */
export type BuildName = 'image' | 'sources' | 'sources+image-settings' | 'mixed';

/** How a bench runs its agents: as the image runs them (the default) or, with `--sources`, from the sources. */
export interface AgentBuild {
  /** For the bench's first line, after "the agent" or "the agents". */
  readonly described: string;
  /** Builds what it needs into `dir` (the bundle, for the image's way) and gives startAgentProcess's placement. */
  place(dir: string): PlaceOptions;
}

/**
 * The image's environment, with any malloc setting this process was given in its place (e.g.
 * `MALLOC_MMAP_THRESHOLD_=65536 npm run bench -- load`, to try another; buildOf then says "mixed").
 */
export function imageEnv(): Record<string, string> {
  const asked = Object.entries(process.env).filter(
    (entry): entry is [string, string] => entry[0].startsWith('MALLOC_') && entry[1] !== undefined,
  );
  return { ...AGENT_IMAGE_ENV, ...Object.fromEntries(asked) };
}

/**
 * The agents' build a bench's options ask for: as the image runs them (the bundle built into the
 * bench's folder, the image's V8 flags, malloc settings and NODE_ENV), or with `--sources` from the
 * TypeScript sources without those flags and settings (a CPU profile then points into the
 * sources; the two ways differ in all four). `sourcesKeepSettings` (soak, scale: benches of
 * memory, whose figures depend on the flags and settings): `--sources` changes only the code.
 */
export function agentBuild(
  args: readonly string[],
  opts: { sourcesKeepSettings?: boolean } = {},
): AgentBuild {
  const settings = (): PlaceOptions => ({ nodeFlags: [...AGENT_NODE_FLAGS], env: imageEnv() });
  if (args.includes('--sources') && opts.sourcesKeepSettings)
    return {
      described: "from the TypeScript sources, with the image's V8 flags, malloc settings and NODE_ENV",
      place: settings,
    };
  if (args.includes('--sources'))
    return {
      described: "from the TypeScript sources, without the image's V8 flags, malloc settings and NODE_ENV",
      place: () => ({}),
    };
  return {
    described: 'as in the image (its bundle, V8 flags, malloc settings and NODE_ENV)',
    place: (dir) => ({ main: join(buildBundle(dir), 'agent.mjs'), ...settings() }),
  };
}

/** A V8 flag's name: `--max-semi-space-size=1` and `max-semi-space-size` are both `max-semi-space-size`. */
const flagName = (flag: string): string => flag.replace(/^--/, '').split('=')[0]!;

/** The image's Node flags as a bench's `--drop-flag NAME` and `--add-flag FLAG` change them. */
export interface AskedFlags {
  readonly nodeFlags: string[];
  /** The flag dropped (its name, without dashes or a value) and the flag added (as given), if any. */
  readonly dropped?: string;
  readonly added?: string;
  /** For the bench's `# node flags:` line, e.g. "(the image's without --no-memory-reducer)". */
  readonly described: string;
}

/**
 * The image's Node flags (AGENT_NODE_FLAGS) without `drop` (a flag's name, `--` optional) and with
 * `--add` (a flag without its dashes, `=value` allowed), so that a bench can measure what one does.
 * Dropping a flag the image does not set, or adding something that is not a flag, is a RangeError
 * naming what the image sets.
 */
export function askedFlags(drop: string | undefined, add: string | undefined): AskedFlags {
  const dropped = drop === undefined ? undefined : flagName(drop);
  if (dropped !== undefined && !AGENT_NODE_FLAGS.some((f) => flagName(f) === dropped))
    throw new RangeError(
      `--drop-flag ${JSON.stringify(drop)}: the image sets ${AGENT_NODE_FLAGS.map(flagName).join(', ')}`,
    );
  if (add !== undefined && !/^[a-z0-9][a-z0-9-]*(=[A-Za-z0-9._-]+)?$/.test(add))
    throw new RangeError(`--add-flag ${JSON.stringify(add)}: a V8 or Node flag without its dashes`);
  const nodeFlags = [
    ...AGENT_NODE_FLAGS.filter((f) => dropped === undefined || flagName(f) !== dropped),
    ...(add === undefined ? [] : [`--${add}`]),
  ];
  const changes = [
    ...(dropped === undefined ? [] : [`without --${dropped}`]),
    ...(add === undefined ? [] : [`with --${add}`]),
  ];
  return {
    nodeFlags,
    ...(dropped === undefined ? {} : { dropped }),
    ...(add === undefined ? {} : { added: add }),
    described: changes.length === 0 ? "(the image's)" : `(the image's ${changes.join(' ')})`,
  };
}

/**
 * How the agent process `pid` was really started, read from /proc: its main module (the bundle's
 * agent.mjs or the sources' main.ts), its V8 flags and its environment, against the image's. A
 * bench puts this in its last line, so that a test sees what ran, not what was asked for.
 */
export function buildOf(pid: number): BuildName {
  let argv: string[];
  let env: Map<string, string>;
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    env = new Map(
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const),
    );
  } catch {
    return 'mixed'; // gone (an agent that died during the run): not known, and the run's figures kept
  }
  // Anything else that changes the allocator or Node's options makes it neither the image nor the sources.
  const other = [...env.keys()].some(
    (k) =>
      (k.startsWith('MALLOC_') && !(k in AGENT_IMAGE_ENV)) || k === 'GLIBC_TUNABLES' || k === 'NODE_OPTIONS',
  );
  if (other) return 'mixed';
  const bundle = argv.some((a) => a.endsWith('/agent.mjs'));
  const sources = argv.some((a) => a.endsWith(join('agent', 'src', 'main.ts')));
  const flags = AGENT_NODE_FLAGS.filter((f) => argv.includes(f)).length;
  const settings = Object.entries(AGENT_IMAGE_ENV).filter(([k, v]) => env.get(k) === v).length;
  const all = flags === AGENT_NODE_FLAGS.length && settings === Object.keys(AGENT_IMAGE_ENV).length;
  const none = flags === 0 && settings === 0;
  if (bundle && all) return 'image';
  if (sources && all) return 'sources+image-settings';
  if (sources && none) return 'sources';
  return 'mixed';
}

/** The build all of `names` share, or 'mixed' (also when there are none). */
export function sameBuild(names: readonly BuildName[]): BuildName {
  const distinct = new Set(names);
  return distinct.size === 1 ? names[0]! : 'mixed';
}

/** buildOf each of `pids`: the one they share, or 'mixed'. */
export function buildOfAll(pids: readonly (number | undefined)[]): BuildName {
  return sameBuild(pids.map((pid) => (pid === undefined ? 'mixed' : buildOf(pid))));
}
