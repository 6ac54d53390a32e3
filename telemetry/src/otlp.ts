import type { Resource } from '@opentelemetry/resources';
import type { MetricProducer, MetricReader } from '@opentelemetry/sdk-metrics';

/**
 * OTLP/HTTP export, as every EdgeMesh process (agent, operator) does it. Both parts load the
 * OpenTelemetry SDK only when called, and are called only when an endpoint is configured, so a
 * process without one pays no memory for them; without a provider, the API's no-op tracer makes
 * spans free.
 */

/** `endpoint` + `/v1/<signal>`, as OTLP/HTTP names its paths. */
const signalUrl = (endpoint: string, signal: 'traces' | 'metrics') =>
  `${endpoint.replace(/\/$/, '')}/v1/${signal}`;

/**
 * Makes the global tracer provider export to `endpoint`, with W3C trace context propagation and
 * async-context tracking. `resource`: the process's (serviceResource), as its metrics have it.
 */
export async function startOtlpTracing(
  endpoint: string,
  resource: Resource,
): Promise<{ shutdown(): Promise<void> }> {
  const [api, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, otlp, sdk] =
    await Promise.all([
      import('@opentelemetry/api'),
      import('@opentelemetry/context-async-hooks'),
      import('@opentelemetry/core'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/sdk-trace'),
    ]);
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const provider = new sdk.TracerProvider({
    resource,
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter: new otlp.OTLPTraceExporter({ url: signalUrl(endpoint, 'traces') }),
        scheduledDelayMillis: 500,
      }),
    ],
  });
  api.trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}

/** Makes a MetricReader that also collects `producers` (metrics a process aggregates itself). */
export type MetricReaderFactory = (producers: MetricProducer[]) => MetricReader;

/**
 * A metric reader that pushes to `endpoint` every OTEL_METRIC_EXPORT_INTERVAL ms (OpenTelemetry's
 * variable; default 60 s). Give it to a MeterProvider beside the Prometheus exporter.
 */
export async function otlpMetricReader(endpoint: string, env = process.env): Promise<MetricReader> {
  return (await otlpMetricReaderFactory(endpoint, env))([]);
}

/**
 * otlpMetricReader, made once the caller has its MetricProducers (the SDK is loaded here, so that
 * making the reader needs no await).
 */
export async function otlpMetricReaderFactory(
  endpoint: string,
  env = process.env,
): Promise<MetricReaderFactory> {
  const [{ OTLPMetricExporter }, { PeriodicExportingMetricReader }] = await Promise.all([
    import('@opentelemetry/exporter-metrics-otlp-http'),
    import('@opentelemetry/sdk-metrics'),
  ]);
  const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL);
  return (metricProducers) =>
    new PeriodicExportingMetricReader({
      exporter: new OTLPMetricExporter({ url: signalUrl(endpoint, 'metrics') }),
      exportIntervalMillis: Number.isInteger(interval) && interval > 0 ? interval : 60_000,
      metricProducers,
    });
}
