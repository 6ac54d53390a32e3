/**
 * Node flags the operator runs with. A small young generation: the operator's garbage is small and
 * short-lived, and V8's default semi-spaces (up to 16 MiB each) cost ~80 MiB of RSS under a burst
 * of reconciles for no measurable speed (npm run bench -- operator: 303 -> 192 MiB peak, same p99).
 * V8 reads it at start only, so it is a command-line flag, not something main.ts can set.
 */
export const OPERATOR_NODE_FLAGS = ['--max-semi-space-size=2'];
