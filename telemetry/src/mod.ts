/**
 * @edgemesh/telemetry: how every EdgeMesh process (agent, operator) does OpenTelemetry: its
 * resource (with the OTEL_* environment), Prometheus text at /metrics, process and runtime metrics,
 * the build-info series, and OTLP/HTTP export of traces and metrics.
 */
export { type BuildInfo, buildInfo, observeBuildInfo } from './build-info.ts';
export {
  type MetricReaderFactory,
  otlpMetricReader,
  otlpMetricReaderFactory,
  startOtlpTracing,
} from './otlp.ts';
export { PrometheusEndpoint, type PrometheusEndpointOptions, prometheusName } from './prometheus.ts';
export { serviceResource } from './resource.ts';
export {
  ATTR_CLOUD_AVAILABILITY_ZONE,
  ATTR_CLOUD_REGION,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_SYSTEM,
} from './semconv.ts';
export { observeRuntime, RUNTIME_PREFIXES } from './runtime.ts';
