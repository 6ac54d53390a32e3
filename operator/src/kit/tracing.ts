import { trace } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { type BuildInfo, serviceResource, startOtlpTracing } from '@edgemesh/telemetry';
import operatorPackage from '../../package.json' with { type: 'json' };
import { OPERATOR_SERVICE } from './metrics.ts';

/** This operator's version (its package's). */
export const OPERATOR_VERSION: string = operatorPackage.version;

/**
 * The operator's resource, for its metrics and spans: service.name edgemesh-operator,
 * service.instance.id this replica, its version; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
 */
export const operatorResource = (identity: string, build: BuildInfo): Promise<Resource> =>
  serviceResource({ [ATTR_SERVICE_NAME]: OPERATOR_SERVICE, [ATTR_SERVICE_INSTANCE_ID]: identity }, build);

/**
 * Traces for the operator: a span per reconcile, exported over OTLP/HTTP when an endpoint is given
 * (the SDK is loaded only then); without one, the API's no-op tracer makes spans free.
 */
export function startTracing(
  endpoint: string | undefined,
  resource: Resource,
): Promise<{ shutdown(): Promise<void> }> {
  if (!endpoint) return Promise.resolve({ shutdown: () => Promise.resolve() });
  return startOtlpTracing(endpoint, resource);
}

export const tracer = () => trace.getTracer(OPERATOR_SERVICE);
