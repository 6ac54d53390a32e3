import { trace } from '@opentelemetry/api';
import type { MetricReader } from '@opentelemetry/sdk-metrics';

/**
 * Traces for the operator (a span per reconcile), exported over OTLP/HTTP. The SDK is loaded only
 * when an endpoint is given, so an operator without one pays no memory for it; without a provider
 * the API's no-op tracer makes spans free.
 */
export async function startTracing(
  endpoint: string | undefined,
  identity: string,
): Promise<{ shutdown(): Promise<void> }> {
  if (!endpoint) return { shutdown: () => Promise.resolve() };
  const [
    { context, propagation },
    { AsyncLocalStorageContextManager },
    { W3CTraceContextPropagator },
    otlp,
    resources,
    sdk,
  ] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace'),
  ]);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const provider = new sdk.TracerProvider({
    resource: resources.resourceFromAttributes({
      'service.name': 'edgemesh-operator',
      'service.instance.id': identity,
    }),
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter: new otlp.OTLPTraceExporter({ url: `${endpoint.replace(/\/$/, '')}/v1/traces` }),
        scheduledDelayMillis: 500,
      }),
    ],
  });
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}

export const tracer = () => trace.getTracer('edgemesh-operator');

/**
 * The operator's metrics pushed over OTLP/HTTP to `endpoint` (`/v1/metrics`), every
 * OTEL_METRIC_EXPORT_INTERVAL ms (default 60 s); loaded only when an endpoint is set, like tracing.
 */
export async function otlpMetricReader(endpoint: string, env = process.env): Promise<MetricReader> {
  const [{ OTLPMetricExporter }, { PeriodicExportingMetricReader }] = await Promise.all([
    import('@opentelemetry/exporter-metrics-otlp-http'),
    import('@opentelemetry/sdk-metrics'),
  ]);
  const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL);
  return new PeriodicExportingMetricReader({
    exporter: new OTLPMetricExporter({ url: `${endpoint.replace(/\/$/, '')}/v1/metrics` }),
    exportIntervalMillis: Number.isInteger(interval) && interval > 0 ? interval : 60_000,
  });
}
