/**
 * OpenTelemetry semantic conventions still "incubating", copied here as
 * @opentelemetry/semantic-conventions advises (its `/incubating` entry point may change in a minor
 * version, and loads about 1 MB of constants). Stable ones are imported from the package itself.
 */

/** The zone a resource runs in; for us the node's `topology.kubernetes.io/zone`. */
export const ATTR_CLOUD_AVAILABILITY_ZONE = 'cloud.availability_zone' as const;
/** The region a resource runs in; for us the node's `topology.kubernetes.io/region`. */
export const ATTR_CLOUD_REGION = 'cloud.region' as const;
/** The messaging system of a producer or consumer span (for us `nats`). */
export const ATTR_MESSAGING_SYSTEM = 'messaging.system' as const;
/** Where a message was sent (for us the NATS subject). */
export const ATTR_MESSAGING_DESTINATION_NAME = 'messaging.destination.name' as const;
/** The process's resident memory, in By. */
export const METRIC_PROCESS_MEMORY_USAGE = 'process.memory.usage' as const;
/** The CPU time the process used, in s, by `process.cpu.state`. */
export const METRIC_PROCESS_CPU_TIME = 'process.cpu.time' as const;
/** The process's CPU time over wall time and the CPUs it may use, a ratio (1), by `process.cpu.state`. */
export const METRIC_PROCESS_CPU_UTILIZATION = 'process.cpu.utilization' as const;
/** The CPU mode a process.cpu.* value is of: `user` or `system`. */
export const ATTR_PROCESS_CPU_STATE = 'process.cpu.state' as const;

/** Node.js's and V8's runtime metrics (telemetry/src/runtime.ts), as the conventions name them. */
export const METRIC_NODEJS_EVENTLOOP_UTILIZATION = 'nodejs.eventloop.utilization' as const;
export const METRIC_NODEJS_EVENTLOOP_TIME = 'nodejs.eventloop.time' as const;
/** `nodejs.eventloop.delay.<statistic>`: min, max, mean, stddev, p50, p90, p99. */
export const METRIC_NODEJS_EVENTLOOP_DELAY_PREFIX = 'nodejs.eventloop.delay.' as const;
/** `active` or `idle` (nodejs.eventloop.time). */
export const ATTR_NODEJS_EVENTLOOP_STATE = 'nodejs.eventloop.state' as const;
export const METRIC_V8JS_GC_DURATION = 'v8js.gc.duration' as const;
/** `major`, `minor`, `incremental` or `weakcb`. */
export const ATTR_V8JS_GC_TYPE = 'v8js.gc.type' as const;
export const METRIC_V8JS_MEMORY_HEAP_SPACE_SIZE = 'v8js.memory.heap.space.size' as const;
export const METRIC_V8JS_MEMORY_HEAP_USED = 'v8js.memory.heap.used' as const;
export const METRIC_V8JS_MEMORY_HEAP_SPACE_AVAILABLE_SIZE = 'v8js.memory.heap.space.available_size' as const;
export const METRIC_V8JS_MEMORY_HEAP_SPACE_PHYSICAL_SIZE = 'v8js.memory.heap.space.physical_size' as const;
/** A V8 heap space's name, as v8.getHeapSpaceStatistics() gives it. */
export const ATTR_V8JS_HEAP_SPACE_NAME = 'v8js.heap.space.name' as const;
export const METRIC_V8JS_RESOURCE_ACTIVE = 'v8js.resource.active' as const;
/** A resource type, as process.getActiveResourcesInfo() names it. */
export const ATTR_V8JS_RESOURCE_TYPE = 'v8js.resource.type' as const;
