#!/usr/bin/env node
import { startAgent } from './agent.ts';
import { ConfigError, loadConfig } from './config/load.ts';
import { createLogger } from './telemetry/logger.ts';
import { AGENT_VERSION } from './telemetry/resource.ts';
import { buildInfo } from '@edgemesh/telemetry';

/** Entry point: configuration is parsed here, once; everything else receives it typed. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (error instanceof ConfigError || (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`edgemesh-agent: ${(error as Error).message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const logger = createLogger({ level: config.log.level, nodeId: config.nodeId });
  const agent = await startAgent(config, { logger, build: buildInfo(AGENT_VERSION, process.env) });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    agent.close().then(
      () => process.exit(0),
      (error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error) => {
  process.stderr.write(`edgemesh-agent: failed to start: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
