import { trace } from '@opentelemetry/api';
import { startOtlpTracing } from '@edgemesh/telemetry';

/**
 * Traces for the operator: a span per reconcile, exported over OTLP/HTTP when an endpoint is given
 * (the SDK is loaded only then); without one, the API's no-op tracer makes spans free.
 */
export function startTracing(
  endpoint: string | undefined,
  identity: string,
): Promise<{ shutdown(): Promise<void> }> {
  if (!endpoint) return Promise.resolve({ shutdown: () => Promise.resolve() });
  return startOtlpTracing(endpoint, { 'service.name': 'edgemesh-operator', 'service.instance.id': identity });
}

export const tracer = () => trace.getTracer('edgemesh-operator');
