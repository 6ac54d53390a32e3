#!/usr/bin/env node
/**
 * `npm run bench -- NAME [--quick]`: runs one benchmark. Each compares against a baseline in the same
 * run, prints its figures and the machine it ran on, and prints one JSON object as its last line.
 */
const BENCHES: Record<string, () => Promise<{ run(quick: boolean): Promise<void> }>> = {
  transfer: () => import('./transfer.ts'),
  hit: () => import('./hit.ts'),
  membership: () => import('./membership.ts'),
  swarm: () => import('./swarm.ts'),
  'swarm-vs-peer': () => import('./swarm-vs-peer.ts'),
  locality: () => import('./locality.ts'),
  operator: () => import('./operator.ts'),
  chaos: () => import('./chaos.ts'),
};

const [name, ...rest] = process.argv.slice(2);
const quick = rest.includes('--quick');
const load = name ? BENCHES[name] : undefined;
if (!load) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [--quick]\n`);
  process.exit(2);
}
await (await load()).run(quick);
