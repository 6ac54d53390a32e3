import { availableParallelism } from 'node:os';
import { constants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { type Meter, ValueType } from '@opentelemetry/api';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  ATTR_NODEJS_EVENTLOOP_STATE,
  ATTR_PROCESS_CPU_STATE,
  ATTR_V8JS_GC_TYPE,
  ATTR_V8JS_HEAP_SPACE_NAME,
  ATTR_V8JS_RESOURCE_TYPE,
  METRIC_NODEJS_EVENTLOOP_DELAY_PREFIX,
  METRIC_NODEJS_EVENTLOOP_TIME,
  METRIC_NODEJS_EVENTLOOP_UTILIZATION,
  METRIC_PROCESS_CPU_TIME,
  METRIC_PROCESS_CPU_UTILIZATION,
  METRIC_PROCESS_MEMORY_USAGE,
  METRIC_V8JS_GC_DURATION,
  METRIC_V8JS_MEMORY_HEAP_SPACE_AVAILABLE_SIZE,
  METRIC_V8JS_MEMORY_HEAP_SPACE_PHYSICAL_SIZE,
  METRIC_V8JS_MEMORY_HEAP_SPACE_SIZE,
  METRIC_V8JS_MEMORY_HEAP_USED,
  METRIC_V8JS_RESOURCE_ACTIVE,
} from './semconv.ts';

/**
 * The process's and the runtime's own metrics, in OpenTelemetry's semantic conventions:
 * - the process's CPU time by mode and its utilisation, and its resident memory (process.cpu.time,
 *   process.cpu.utilization, process.memory.usage; observeProcess). The system.* metrics are left
 *   out: a node's CPU, memory and network are node-exporter's job, and an agent on every node
 *   repeating them would double every such series.
 * - the runtime's (observeNode): event loop delay (percentiles) and utilisation, time in GC by kind,
 *   V8 heap spaces, active resources by type.
 * Prometheus names: process_cpu_time_seconds_total, process_cpu_utilization_ratio,
 * process_memory_usage_bytes (resident), nodejs_eventloop_delay_p99_seconds,
 * nodejs_eventloop_utilization_ratio, v8js_gc_duration_seconds, v8js_memory_heap_used_bytes and the
 * like. `stop()` ends what runs between collections (the delay monitor, the GC observer) and the
 * observations.
 */
export function observeRuntime(provider: MeterProvider): { stop(): void } {
  const meter = provider.getMeter('edgemesh-runtime');
  const processMetrics = observeProcess(meter);
  const nodeMetrics = observeNode(meter);
  return {
    stop: () => {
      processMetrics.stop();
      nodeMetrics.stop();
    },
  };
}

/**
 * Node.js's and V8's metrics, with the names, units, attributes and semantics that
 * @opentelemetry/instrumentation-runtime-node gave them (its collectors, at 0.37), which made them
 * before: nodejs.eventloop.utilization (since the last collection), nodejs.eventloop.time (s, by
 * state), nodejs.eventloop.delay.{min,max,mean,stddev,p50,p90,p99} (s, sampled every 10 ms, over
 * the time since the last collection, left out until 5 samples), v8js.gc.duration (a histogram, s,
 * by kind), v8js.memory.heap.space.size, .used, .space.available_size and .space.physical_size (By,
 * by space) and v8js.resource.active (by type, a type seen once kept at 0). The instrumentation's
 * base class installs require-in-the-middle's hook on every module the process loads although it
 * patches none, and with import-in-the-middle and the rest of @opentelemetry/instrumentation it cost
 * about 0.5 MiB of an idle agent (docs/deploy.md).
 */
export function observeNode(meter: Meter): { stop(): void } {
  const seconds = (description: string) => ({ description, unit: 's' });
  /** What stop() removes: each batch callback registered below. */
  const callbacks: (() => void)[] = [];
  const batch = (
    callback: Parameters<Meter['addBatchObservableCallback']>[0],
    observables: Parameters<Meter['addBatchObservableCallback']>[1],
  ) => {
    meter.addBatchObservableCallback(callback, observables);
    callbacks.push(() => meter.removeBatchObservableCallback(callback, observables));
  };

  // The event loop: its utilisation since the last collection, and its time active and idle.
  const utilization = meter.createObservableGauge(METRIC_NODEJS_EVENTLOOP_UTILIZATION, {
    description: 'Event loop utilization since the last collection',
    unit: '1',
  });
  const time = meter.createObservableCounter(
    METRIC_NODEJS_EVENTLOOP_TIME,
    seconds('Cumulative time the event loop has been in each state'),
  );
  let lastLoop = performance.eventLoopUtilization();
  batch(
    (result) => {
      const now = performance.eventLoopUtilization();
      const since = performance.eventLoopUtilization(now, lastLoop);
      // No time since the last reading (two in one tick): 0/0, no utilisation to report.
      if (since.active + since.idle > 0) result.observe(utilization, since.utilization);
      lastLoop = now;
      result.observe(time, now.active / 1000, { [ATTR_NODEJS_EVENTLOOP_STATE]: 'active' });
      result.observe(time, now.idle / 1000, { [ATTR_NODEJS_EVENTLOOP_STATE]: 'idle' });
    },
    [utilization, time],
  );

  // The event loop's delay, sampled every 10 ms, over the time since the last collection.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const statistics = {
    min: () => delay.min,
    max: () => delay.max,
    mean: () => delay.mean,
    stddev: () => delay.stddev,
    p50: () => delay.percentile(50),
    p90: () => delay.percentile(90),
    p99: () => delay.percentile(99),
  };
  const delays = Object.entries(statistics).map(
    ([name, read]) =>
      [
        meter.createObservableGauge(
          `${METRIC_NODEJS_EVENTLOOP_DELAY_PREFIX}${name}`,
          seconds(`Event loop delay: ${name}`),
        ),
        read,
      ] as const,
  );
  batch(
    (result) => {
      if (delay.count < 5) return;
      for (const [gauge, read] of delays) {
        const nanoseconds = read();
        result.observe(gauge, Number.isNaN(nanoseconds) ? 0 : nanoseconds / 1e9);
      }
      delay.reset();
    },
    delays.map(([gauge]) => gauge),
  );

  // Garbage collection: each pause, by kind.
  const gcDuration = meter.createHistogram(METRIC_V8JS_GC_DURATION, {
    ...seconds('Garbage collection duration by kind, one of major, minor, incremental or weakcb'),
    valueType: ValueType.DOUBLE,
    advice: {
      explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
    },
  });
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  const gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = (entry as { detail?: { kind?: number } }).detail?.kind;
      if (kind !== undefined && kinds[kind])
        gcDuration.record(entry.duration / 1000, { [ATTR_V8JS_GC_TYPE]: kinds[kind] });
    }
  });
  gc.observe({ entryTypes: ['gc'] });

  // The V8 heap, space by space.
  const bytes = (description: string) => ({ description, unit: 'By' });
  const spaceSize = meter.createObservableUpDownCounter(
    METRIC_V8JS_MEMORY_HEAP_SPACE_SIZE,
    bytes('Total heap memory size pre-allocated for a heap space'),
  );
  const spaceUsed = meter.createObservableGauge(
    METRIC_V8JS_MEMORY_HEAP_USED,
    bytes('Heap memory size allocated'),
  );
  const spaceAvailable = meter.createObservableGauge(
    METRIC_V8JS_MEMORY_HEAP_SPACE_AVAILABLE_SIZE,
    bytes('Heap space available size'),
  );
  const spacePhysical = meter.createObservableGauge(
    METRIC_V8JS_MEMORY_HEAP_SPACE_PHYSICAL_SIZE,
    bytes('Committed size of a heap space'),
  );
  batch(
    (result) => {
      for (const space of getHeapSpaceStatistics()) {
        const attributes = { [ATTR_V8JS_HEAP_SPACE_NAME]: space.space_name };
        result.observe(spaceSize, space.space_size, attributes);
        result.observe(spaceUsed, space.space_used_size, attributes);
        result.observe(spaceAvailable, space.space_available_size, attributes);
        result.observe(spacePhysical, space.physical_space_size, attributes);
      }
    },
    [spaceSize, spaceUsed, spaceAvailable, spacePhysical],
  );

  // What keeps the event loop alive, by type; a type once seen is reported at 0 when none is left.
  const resources = meter.createObservableGauge(METRIC_V8JS_RESOURCE_ACTIVE, {
    description: 'Count of the active resources that are currently keeping the event loop alive',
    unit: '{resource}',
  });
  const known = new Map<string, number>();
  batch(
    (result) => {
      for (const type of known.keys()) known.set(type, 0);
      for (const type of process.getActiveResourcesInfo()) known.set(type, (known.get(type) ?? 0) + 1);
      for (const [type, count] of known)
        result.observe(resources, count, { [ATTR_V8JS_RESOURCE_TYPE]: type });
    },
    [resources],
  );

  return {
    stop: () => {
      delay.disable();
      gc.disconnect();
      for (const remove of callbacks) remove();
    },
  };
}

/**
 * process.cpu.time (a counter, s), process.cpu.utilization (a gauge: the CPU time used since the
 * last collection over the wall time since then and the CPUs the process may use) by
 * process.cpu.state (`user`, `system`), and process.memory.usage (resident, By), read at each
 * collection. These three were @opentelemetry/host-metrics' process groups, with the same names,
 * units and attributes; the library loaded its system groups too (and read os.cpus() as it loaded),
 * about 0.5 MiB of an idle agent for three readings (docs/deploy.md).
 */
export function observeProcess(meter: Meter): { stop(): void } {
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
  const observables = [cpuTime, cpuUtilization, memoryUsage];
  const callback: Parameters<Meter['addBatchObservableCallback']>[0] = (result) => {
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
  };
  meter.addBatchObservableCallback(callback, observables);
  return { stop: () => meter.removeBatchObservableCallback(callback, observables) };
}

/** The Prometheus name prefixes observeRuntime's metrics have. */
export const RUNTIME_PREFIXES = ['process_', 'nodejs_', 'v8js_'] as const;
