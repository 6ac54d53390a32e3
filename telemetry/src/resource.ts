import {
  detectResources,
  envDetector,
  hostDetector,
  type Resource,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { BuildInfo } from './build-info.ts';

/**
 * The resource a process's telemetry (metrics and traces alike) carries: what the process knows of
 * itself (`attributes`: service.name, service.instance.id, its mesh, zone and region...), its
 * version, the host's name and architecture, and last, winning over all of them, what the
 * environment says: OTEL_RESOURCE_ATTRIBUTES (`key=value,...`) and OTEL_SERVICE_NAME, read by
 * OpenTelemetry's own env detector. In Kubernetes, e.g. `k8s.pod.name` and `k8s.namespace.name`
 * from the downward API go there.
 */
export async function serviceResource(
  attributes: Record<string, string>,
  build?: BuildInfo,
): Promise<Resource> {
  const ours = resourceFromAttributes({
    ...(build ? { [ATTR_SERVICE_VERSION]: build.version } : {}),
    ...attributes,
  });
  const resource = ours.merge(detectResources({ detectors: [hostDetector, envDetector] }));
  await resource.waitForAsyncAttributes?.(); // the host detector's host.id is read from a file
  return resource;
}
