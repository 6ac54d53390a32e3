import { HostMetrics } from '@opentelemetry/host-metrics';
import { RuntimeNodeInstrumentation } from '@opentelemetry/instrumentation-runtime-node';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import { METRIC_PROCESS_CPU_UTILIZATION, METRIC_PROCESS_MEMORY_USAGE } from './semconv.ts';

/**
 * The process's and the runtime's own metrics, in OpenTelemetry's semantic conventions:
 * - from @opentelemetry/host-metrics, the process groups only: CPU time by mode and utilisation,
 *   and resident memory (process.cpu.time, process.cpu.utilization, process.memory.usage). Its
 *   system.* groups are left out: a node's CPU, memory and network are node-exporter's job, and an
 *   agent on every node repeating them would double every such series.
 * - from @opentelemetry/instrumentation-runtime-node: event loop delay (percentiles) and
 *   utilisation, time in GC by kind, V8 heap spaces, active handles by type.
 * Prometheus names: process_cpu_time_seconds_total, process_memory_usage_bytes (resident),
 * nodejs_eventloop_delay_p99_seconds, nodejs_eventloop_utilization_ratio, v8js_gc_duration_seconds,
 * v8js_memory_heap_used_bytes and the like.
 */
export function observeRuntime(provider: MeterProvider): { stop(): void } {
  new HostMetrics({
    meterProvider: provider,
    name: 'edgemesh-process',
    metricGroups: ['process.cpu', 'process.memory'],
  }).start();
  // Not enabled until it has its provider: enabled at construction, it would observe through the
  // global (no-op) one.
  const runtime = new RuntimeNodeInstrumentation({ enabled: false });
  runtime.setMeterProvider(provider);
  runtime.enable();
  return { stop: () => runtime.disable() };
}

/**
 * The units the conventions give metrics whose instrumentation leaves them out (host-metrics 0.39),
 * so that their Prometheus names end as they should: process_memory_usage_bytes,
 * process_cpu_utilization_ratio.
 */
export const MISSING_UNITS: Readonly<Record<string, string>> = {
  [METRIC_PROCESS_MEMORY_USAGE]: 'By',
  [METRIC_PROCESS_CPU_UTILIZATION]: '1',
};

/** The Prometheus name prefixes observeRuntime's metrics have. */
export const RUNTIME_PREFIXES = ['process_', 'nodejs_', 'v8js_'] as const;
