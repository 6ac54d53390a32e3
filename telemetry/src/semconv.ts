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
