import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlaceOptions } from '../../agent/harness/agent-process.ts';
import { AGENT_MALLOC_ENV, AGENT_NODE_FLAGS } from '../../agent/src/node-flags.ts';

const BUILD = fileURLToPath(new URL('../../scripts/build.ts', import.meta.url));

/** Builds what the image ships (scripts/build.ts) into `dir`; returns the folder (agent.mjs, operator.mjs). */
export function buildBundle(dir: string): string {
  const out = join(dir, 'dist');
  const built = spawnSync(process.execPath, [BUILD, out], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`the build failed: ${built.stderr}`);
  return out;
}

/** The environment the image gives its processes (the Dockerfile's ENV, less the revision). */
export const IMAGE_ENV: Readonly<Record<string, string>> = { ...AGENT_MALLOC_ENV, NODE_ENV: 'production' };

/**
 * An agent run as the image runs it: the bundle built into `dir`, with the image's V8 flags, malloc
 * settings and NODE_ENV (agent/src/node-flags.ts; the Dockerfile sets the same).
 */
export function asTheImageRunsIt(dir: string): PlaceOptions {
  return {
    main: join(buildBundle(dir), 'agent.mjs'),
    nodeFlags: [...AGENT_NODE_FLAGS],
    env: { ...IMAGE_ENV },
  };
}

/** How a bench runs its agents: as the image runs them (the default) or, with `--sources`, from the sources. */
export interface AgentBuild {
  /** The last line's `agent_build`. */
  readonly name: 'image' | 'sources';
  /** For the bench's first line, after "the agent" or "the agents". */
  readonly described: string;
  /** Builds what it needs into `dir` (the bundle, for the image's way) and gives startAgentProcess's placement. */
  place(dir: string): PlaceOptions;
}

/**
 * The agents' build a bench's options ask for: as the image runs them (asTheImageRunsIt), or with
 * `--sources` from the TypeScript sources without the image's flags and malloc settings (a CPU
 * profile then points into the sources; the two ways differ in all three).
 */
export function agentBuild(args: readonly string[]): AgentBuild {
  if (args.includes('--sources'))
    return {
      name: 'sources',
      described: "from the TypeScript sources, without the image's V8 flags and malloc settings",
      place: () => ({}),
    };
  return {
    name: 'image',
    described: 'as in the image (its bundle, V8 flags and malloc settings)',
    place: asTheImageRunsIt,
  };
}
