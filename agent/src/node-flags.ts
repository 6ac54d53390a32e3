/**
 * Node flags the agent runs with in its image (the Dockerfile's ENTRYPOINT; a test keeps the two
 * equal). An idle agent is mostly V8 heap and the Node binary's own pages; these trim what can be
 * trimmed without slowing the data plane, whose bytes live outside the V8 heap (Buffers):
 * - a 1 MiB young generation (V8's default grows to 16 MiB semi-spaces, ~30 MiB of RSS once touched);
 * - one V8 background thread (each keeps its own malloc arena and stack).
 * docs/deploy.md has the measured effect. V8 reads them at start only, so they are flags.
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=1', '--v8-pool-size=1'];

/**
 * Environment the image sets for the agent (the Dockerfile's ENV; a test keeps the two equal):
 * glibc's per-thread malloc arenas hold memory an idle agent never gives back; two are plenty.
 */
export const AGENT_MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/**
 * V8 flags the agent sets on itself as it starts (main.ts, `v8.setFlagsFromString`), however it is
 * run (the image, `npm run agent`, the tests' and benchmarks' processes): ones V8 reads as it goes.
 * - External memory (Buffers: every chunk, socket read and disk read) counted in the heap's global
 *   limit, which grows with the heap, instead of V8's fixed trigger of a full collection for every
 *   64 MB of new external memory: moving 1 GiB set off dozens of full collections of a heap that had
 *   not changed. A peer fetch of 1 GiB took 4.9-5.4 CPU s on the receiver instead of 7.6-8.1, and
 *   1.4-1.5 on the sender instead of 2.4-2.6; the price is garbage Buffers kept longer, about 100 MiB
 *   more at the peak of such a transfer. docs/benchmarks.md has the runs.
 */
export const AGENT_V8_RUNTIME_FLAGS = ['--external-memory-accounted-in-global-limit'];
