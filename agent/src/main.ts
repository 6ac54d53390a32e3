#!/usr/bin/env node
import { startAgent } from './agent.ts';
import { ConfigError, loadConfig, unreadVariables } from './config/load.ts';
import { createLogger } from './telemetry/logger.ts';
import { AGENT_VERSION } from './telemetry/resource.ts';
import { buildInfo } from '@edgemesh/telemetry';
import { parseRange } from '@edgemesh/contracts';

/**
 * For tests of version skew only, not a setting for users: the protocol range to advertise instead
 * of this build's (`min-max`, e.g. `1.0-1.1`), so that one build can stand in for a newer or an
 * incompatible one (agent/test/version-skew.test.ts).
 */
const TEST_PROTOCOL_ENV = 'EDGEMESH_TEST_ONLY_PROTOCOL';

/** Entry point: configuration is parsed here, once; everything else receives it typed. */
async function main(): Promise<void> {
  let config: Awaited<ReturnType<typeof loadConfig>>;
  try {
    config = await loadConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (error instanceof ConfigError || (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`edgemesh-agent: ${(error as Error).message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const logger = createLogger({ level: config.log.level, nodeId: config.nodeId });
  const unread = unreadVariables(process.env);
  if (unread.length > 0)
    logger.warn(
      { variables: unread },
      'EDGEMESH_ variables that name no setting, ignored (a misspelling? docs/agent.md lists them)',
    );
  const testProtocol = process.env[TEST_PROTOCOL_ENV];
  const protocol = testProtocol === undefined ? undefined : parseRange(testProtocol);
  if (testProtocol !== undefined && !protocol) {
    process.stderr.write(`edgemesh-agent: ${TEST_PROTOCOL_ENV} must be a range like 1.0-1.1\n`);
    process.exit(2);
  }
  if (protocol) logger.warn({ protocol: testProtocol }, `${TEST_PROTOCOL_ENV} set: advertising a test range`);
  // The handlers come first: a stop that arrives while the agent starts (a pod deleted at once, a
  // supervisor's SIGTERM right after the ready line) is kept, and done once the start is over,
  // rather than killing the process midway.
  const run: { agent?: Awaited<ReturnType<typeof startAgent>>; stopping?: string } = {};
  const shutDown = (started: NonNullable<typeof run.agent>, signal: string) => {
    logger.info({ signal }, 'shutting down');
    started.close().then(
      () => process.exit(0),
      (error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const stop = (signal: string) => {
    if (run.stopping) return;
    run.stopping = signal;
    if (run.agent) shutDown(run.agent, signal);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  run.agent = await startAgent(config, {
    logger,
    build: buildInfo(AGENT_VERSION, process.env),
    protocol,
  });
  if (run.stopping) shutDown(run.agent, run.stopping);
}

main().catch((error) => {
  process.stderr.write(`edgemesh-agent: failed to start: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
