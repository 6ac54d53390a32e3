/** The agent's public API, for the benchmarks, end-to-end tests and (later) the operator's tests. */
export { type Agent, type AgentDeps, startAgent } from './agent.ts';
export { type Manifest, objectDigest } from './cache/manifest.ts';
export { ConfigError, loadConfig, parseConfig, settings } from './config/load.ts';
export type { AgentConfig, AgentConfigInput } from './config/schema.ts';
export { isKey, keyProblem } from './keys.ts';
