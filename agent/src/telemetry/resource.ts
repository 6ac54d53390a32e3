import type { Resource } from '@opentelemetry/resources';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import {
  ATTR_CLOUD_AVAILABILITY_ZONE,
  ATTR_CLOUD_REGION,
  type BuildInfo,
  serviceResource,
} from '@edgemesh/telemetry';
import agentPackage from '../../package.json' with { type: 'json' };

/** This agent's version (its package's). */
export const AGENT_VERSION: string = agentPackage.version;

export const AGENT_SERVICE = 'edgemesh-agent';
/** The mesh an agent serves (its control-plane id: `<namespace>_<name>` in Kubernetes). */
export const ATTR_EDGEMESH_MESH = 'edgemesh.mesh';

/**
 * The labels every agent series has in Prometheus, and the resource attributes they come from:
 * the mesh, the zone and the region, to group and filter by (dashboards' variables) and to join on.
 */
export const AGENT_LABELS = {
  mesh: ATTR_EDGEMESH_MESH,
  zone: ATTR_CLOUD_AVAILABILITY_ZONE,
  region: ATTR_CLOUD_REGION,
} as const;

/**
 * An agent's resource, for its metrics and its spans: service.name edgemesh-agent,
 * service.instance.id its node id, its mesh, zone (cloud.availability_zone) and region
 * (cloud.region), its version; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over these.
 */
export function agentResource(
  node: { nodeId: string; mesh: string; zone: string; region: string },
  build: BuildInfo,
): Promise<Resource> {
  return serviceResource(
    {
      [ATTR_SERVICE_NAME]: AGENT_SERVICE,
      [ATTR_SERVICE_INSTANCE_ID]: node.nodeId,
      [ATTR_EDGEMESH_MESH]: node.mesh,
      [ATTR_CLOUD_AVAILABILITY_ZONE]: node.zone,
      [ATTR_CLOUD_REGION]: node.region,
    },
    build,
  );
}
