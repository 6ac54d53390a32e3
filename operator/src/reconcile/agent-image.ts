import type { EdgeMeshSpec } from '../api/edgemesh.ts';
import type { Blocker } from './status.ts';

type PullPolicy = 'Always' | 'IfNotPresent' | 'Never';

/**
 * The operator's agent image settings (EDGEMESH_OPERATOR_AGENT_IMAGE, _AGENT_IMAGE_PULL_POLICY and
 * EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS): what every mesh's agents run unless its spec says otherwise.
 * They are read at each reconcile, so changing them (an operator upgrade) rolls every mesh's agents.
 */
export interface AgentImageDefaults {
  image?: string | undefined;
  pullPolicy?: PullPolicy | undefined;
  /** Secret names, looked up in each mesh's namespace. */
  pullSecrets?: readonly string[] | undefined;
}

/** What a mesh's agent pods run and pull with. */
export interface AgentImage {
  image: string;
  /** Absent: Kubernetes' default (Always for :latest or no tag, else IfNotPresent). */
  pullPolicy?: PullPolicy | undefined;
  /** The operator's Secrets, then the mesh's own, each once. */
  pullSecrets: string[];
}

/**
 * The image a mesh's agents run: `spec.agent.image` when set, else the operator's. With neither, a
 * blocker (NoAgentImage): the mesh is reported Degraded and its running agents are left alone,
 * rather than a DaemonSet with no image.
 */
export function agentImage(spec: EdgeMeshSpec, defaults: AgentImageDefaults): AgentImage | Blocker {
  const image = spec.agent.image ?? defaults.image;
  if (!image)
    return {
      reason: 'NoAgentImage',
      message:
        'no agent image: set the operator’s EDGEMESH_OPERATOR_AGENT_IMAGE (the chart sets it from its image.* values) or this mesh’s spec.agent.image',
    };
  const pullPolicy = spec.agent.imagePullPolicy ?? defaults.pullPolicy;
  return {
    image,
    ...(pullPolicy ? { pullPolicy } : {}),
    pullSecrets: [...new Set([...(defaults.pullSecrets ?? []), ...(spec.agent.imagePullSecrets ?? [])])],
  };
}

export const isBlocker = (v: AgentImage | Blocker): v is Blocker => 'reason' in v;
