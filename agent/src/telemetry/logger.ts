import { pino } from 'pino';

export type Logger = pino.Logger;

/** Structured JSON logs on stdout, one object per line, with the node id on every line. */
export function createLogger(options: { level: string; nodeId: string }): Logger {
  return pino({ level: options.level, base: { node: options.nodeId } });
}
