#!/usr/bin/env node
/**
 * `npm run bench -- NAME [--quick] [options]`: runs one benchmark (any options are the benchmark's
 * own). Each compares against a baseline in the same run, prints its figures and the machine it ran
 * on, and prints one JSON object as its last line.
 */
const BENCHES: Record<
  string,
  () => Promise<{ run(quick: boolean, args: readonly string[]): Promise<void> }>
> = {
  transfer: () => import('./transfer.ts'),
  hit: () => import('./hit.ts'),
  ingest: () => import('./ingest.ts'),
  membership: () => import('./membership.ts'),
  swarm: () => import('./swarm.ts'),
  'swarm-vs-peer': () => import('./swarm-vs-peer.ts'),
  locality: () => import('./locality.ts'),
  operator: () => import('./operator.ts'),
  chaos: () => import('./chaos.ts'),
  load: () => import('./load.ts'),
  scale: () => import('./scale.ts'),
  'tls-context': () => import('./tls-context.ts'),
  'hot-memory': () => import('./hot-memory.ts'),
  idle: () => import('./idle.ts'),
};

const [name, ...rest] = process.argv.slice(2);
const quick = rest.includes('--quick');
const load = name ? BENCHES[name] : undefined;
if (!load) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [--quick]\n`);
  process.exit(2);
}
await (await load()).run(quick, rest);
