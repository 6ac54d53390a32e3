import { availableParallelism } from 'node:os';
import type { Meter } from '@opentelemetry/api';
import { RuntimeNodeInstrumentation } from '@opentelemetry/instrumentation-runtime-node';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  ATTR_PROCESS_CPU_STATE,
  METRIC_PROCESS_CPU_TIME,
  METRIC_PROCESS_CPU_UTILIZATION,
  METRIC_PROCESS_MEMORY_USAGE,
} from './semconv.ts';

/**
 * The process's and the runtime's own metrics, in OpenTelemetry's semantic conventions:
 * - the process's CPU time by mode and its utilisation, and its resident memory (process.cpu.time,
 *   process.cpu.utilization, process.memory.usage; observeProcess below). The system.* metrics are
 *   left out: a node's CPU, memory and network are node-exporter's job, and an agent on every node
 *   repeating them would double every such series.
 * - from @opentelemetry/instrumentation-runtime-node: event loop delay (percentiles) and
 *   utilisation, time in GC by kind, V8 heap spaces, active handles by type.
 * Prometheus names: process_cpu_time_seconds_total, process_cpu_utilization_ratio,
 * process_memory_usage_bytes (resident), nodejs_eventloop_delay_p99_seconds,
 * nodejs_eventloop_utilization_ratio, v8js_gc_duration_seconds, v8js_memory_heap_used_bytes and the
 * like.
 */
export function observeRuntime(provider: MeterProvider): { stop(): void } {
  observeProcess(provider.getMeter('edgemesh-process'));
  // Not enabled until it has its provider: enabled at construction, it would observe through the
  // global (no-op) one.
  const runtime = new RuntimeNodeInstrumentation({ enabled: false });
  runtime.setMeterProvider(provider);
  runtime.enable();
  return { stop: () => runtime.disable() };
}

/**
 * process.cpu.time (a counter, s), process.cpu.utilization (a gauge: the CPU time used since the
 * last collection over the wall time since then and the CPUs the process may use) by
 * process.cpu.state (`user`, `system`), and process.memory.usage (resident, By), read at each
 * collection. These three were @opentelemetry/host-metrics' process groups, with the same names,
 * units and attributes; the library loaded its system groups too (and read os.cpus() as it loaded),
 * about 0.5 MiB of an idle agent for three readings (docs/deploy.md).
 */
export function observeProcess(meter: Meter): void {
  const cpuTime = meter.createObservableCounter(METRIC_PROCESS_CPU_TIME, {
    description: 'CPU time the process used, by mode',
    unit: 's',
  });
  const cpuUtilization = meter.createObservableGauge(METRIC_PROCESS_CPU_UTILIZATION, {
    description:
      'CPU time the process used since the last collection over the wall time and the CPUs it may use',
    unit: '1',
  });
  const memoryUsage = meter.createObservableGauge(METRIC_PROCESS_MEMORY_USAGE, {
    description: 'Resident memory of the process',
    unit: 'By',
  });
  const cpus = availableParallelism();
  const user = { [ATTR_PROCESS_CPU_STATE]: 'user' };
  const system = { [ATTR_PROCESS_CPU_STATE]: 'system' };
  let last = { at: performance.now(), usage: process.cpuUsage() };
  meter.addBatchObservableCallback(
    (result) => {
      const at = performance.now();
      const usage = process.cpuUsage();
      result.observe(cpuTime, usage.user / 1e6, user);
      result.observe(cpuTime, usage.system / 1e6, system);
      // cpuUsage() counts microseconds; performance.now() milliseconds.
      const capacity = (at - last.at) * 1000 * cpus;
      if (capacity > 0) {
        result.observe(cpuUtilization, (usage.user - last.usage.user) / capacity, user);
        result.observe(cpuUtilization, (usage.system - last.usage.system) / capacity, system);
      }
      last = { at, usage };
      result.observe(memoryUsage, process.memoryUsage.rss());
    },
    [cpuTime, cpuUtilization, memoryUsage],
  );
}

/** The Prometheus name prefixes observeRuntime's metrics have. */
export const RUNTIME_PREFIXES = ['process_', 'nodejs_', 'v8js_'] as const;
