/**
 * Node flags the operator runs with. A young generation of at most 8 MiB a semi-space: V8's default
 * (16 MiB each) cost ~80 MiB of RSS under a burst of reconciles for no measurable speed (npm run bench
 * -- operator: 303 -> 192 MiB peak, same p99); 2 MiB, the setting until 2026-12-06, had the
 * collector take 80-117 ms of the operator's thread in a burst of 200 new meshes, against 35-76 at
 * 8 MiB (CPU profiles, two runs each way), for 9 MiB more at the peak (141-146 against 149-156).
 * V8 reads it at start only, so it is a command-line flag, not something main.ts can set.
 */
export const OPERATOR_NODE_FLAGS = ['--max-semi-space-size=8'];
