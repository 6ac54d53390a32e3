import { trace } from '@opentelemetry/api';
import { pino } from 'pino';

export type Logger = pino.Logger;

/**
 * Structured JSON logs on stdout, one object per line, with the node id on every line and, inside
 * a traced operation, its `trace_id` and `span_id` (so a log line leads to its trace).
 */
export function createLogger(options: { level: string; nodeId: string }): Logger {
  return pino({
    level: options.level,
    base: { node: options.nodeId },
    mixin() {
      const span = trace.getActiveSpan()?.spanContext();
      return span && span.traceFlags !== 0 ? { trace_id: span.traceId, span_id: span.spanId } : {};
    },
  });
}
