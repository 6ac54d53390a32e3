import type { V1DaemonSet } from '@kubernetes/client-node';
import type { Condition, EdgeMesh, EdgeMeshStatus } from '../api/edgemesh.ts';
import { type ControlPlanePresence, type MeshFigures, REPORTING_WINDOW_MS } from '../figures.ts';
import type { NodePlace } from './desired.ts';

export type ConditionType = 'Ready' | 'Progressing' | 'Degraded' | 'ControlPlaneConnected';

/** A problem that makes a valid spec unworkable: reported as Degraded; the running mesh is left alone. */
export interface Blocker {
  reason: string;
  message: string;
}

/**
 * Sets a condition, keeping lastTransitionTime unless the status changes (metav1.Condition rules).
 * Returns the new list.
 */
export function setCondition(
  conditions: readonly Condition[],
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date,
): Condition[] {
  const current = conditions.find((c) => c.type === next.type);
  const lastTransitionTime =
    current && current.status === next.status
      ? current.lastTransitionTime
      : now.toISOString().replace(/\.\d+Z$/, 'Z');
  return [...conditions.filter((c) => c.type !== next.type), { ...next, lastTransitionTime }].sort((a, b) =>
    a.type < b.type ? -1 : 1,
  );
}

/** The status fields that come from the agents' reports: kept as they were while none arrive. */
const FIGURE_FIELDS = [
  'hitRatio',
  'bytesFromPeers',
  'bytesFromOrigin',
  'distrustedPeers',
  'distrustedNodes',
] as const satisfies readonly (keyof EdgeMeshStatus & keyof MeshFigures)[];

/** What a mesh's status is computed from. */
export interface StatusInputs {
  mesh: EdgeMesh;
  /** The nodes it selects. */
  nodes: ReadonlyMap<string, NodePlace>;
  daemonSet: V1DaemonSet | undefined;
  blocker: Blocker | undefined;
  now: Date;
  /** The agents' summed reports, once any arrived. */
  figures?: MeshFigures | undefined;
  /** Whether its agents report on the control plane; unknown without it. */
  presence?: ControlPlanePresence | undefined;
}

/** The ControlPlaneConnected condition: every agent the DaemonSet wants reports on NATS. */
function controlPlaneCondition(
  mesh: EdgeMesh,
  desired: number,
  presence: ControlPlanePresence | undefined,
): { status: Condition['status']; reason: string; message: string } {
  const nats = mesh.spec.controlPlane.natsUrl;
  if (!presence)
    return { status: 'Unknown', reason: 'NotFollowed', message: 'agent reports are not followed' };
  const { reporting } = presence;
  if (desired > 0 && reporting >= desired)
    return {
      status: 'True',
      reason: 'AgentsReporting',
      message: `${reporting} of ${desired} agents report on the control plane`,
    };
  if (presence.connection !== 'up')
    return {
      status: 'False',
      reason: presence.connection === 'failed' ? 'OperatorCannotConnect' : 'Connecting',
      message:
        presence.connection === 'failed'
          ? `the operator cannot connect to NATS at ${nats} (unreachable, or its credentials refused)`
          : `the operator is connecting to NATS at ${nats}`,
    };
  return {
    status: 'False',
    reason: 'AgentsNotReporting',
    message: `${reporting} of ${desired} agents reported on the control plane (NATS at ${nats}) in the last ${REPORTING_WINDOW_MS / 1000} s`,
  };
}

/**
 * The mesh's status from its DaemonSet, its nodes, its agents' reports and any blocker. Ready is
 * True only when no blocker stands, the DaemonSet has rolled out, and every agent reports on the
 * control plane (an agent that cannot reach NATS still serves, but misses purges and revocations).
 */
export function computeStatus(inputs: StatusInputs): EdgeMeshStatus {
  const { mesh, nodes, daemonSet, blocker, now, figures } = inputs;
  const generation = mesh.metadata.generation ?? 0;
  const previous = mesh.status?.conditions ?? [];
  const ds = daemonSet?.status;
  const dsCurrent =
    daemonSet !== undefined && (ds?.observedGeneration ?? 0) >= (daemonSet.metadata?.generation ?? 1);
  const desired = ds?.desiredNumberScheduled ?? 0;
  const ready = ds?.numberReady ?? 0;
  const updated = ds?.updatedNumberScheduled ?? 0;
  const zones: Record<string, number> = {};
  const regions: Record<string, number> = {};
  for (const place of nodes.values()) {
    zones[place.zone || 'unknown'] = (zones[place.zone || 'unknown'] ?? 0) + 1;
    regions[place.region || 'unknown'] = (regions[place.region || 'unknown'] ?? 0) + 1;
  }
  const rolledOut = dsCurrent && desired > 0 && ready === desired && updated === desired;
  let conditions = previous.map((c) => ({ ...c }));
  const set = (type: ConditionType, status: Condition['status'], reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status, reason, message, observedGeneration: generation },
      now,
    );
  };
  if (blocker) {
    set('Degraded', 'True', blocker.reason, blocker.message);
  } else {
    set('Degraded', 'False', 'AsExpected', 'the spec can be carried out');
  }
  const connected = controlPlaneCondition(mesh, desired, inputs.presence);
  set('ControlPlaneConnected', connected.status, connected.reason, connected.message);
  // Rolled out to no node: nothing serves, and nothing more will happen until nodes change, so
  // Ready is False (kubectl wait --for=condition=Ready keeps waiting) and Progressing is done.
  const noAgents = !blocker && dsCurrent && desired === 0;
  if (noAgents) {
    const message = `the DaemonSet schedules no agent: ${nodes.size} node(s) match nodeSelector ${JSON.stringify(mesh.spec.nodeSelector ?? {})}, and none can take one (taints the agents do not tolerate, or nodes that take no pods); nothing serves`;
    set('Progressing', 'False', 'NoMatchingNodes', message);
    set('Ready', 'False', 'NoMatchingNodes', message);
  } else if (rolledOut) {
    set('Progressing', 'False', 'RolledOut', `${ready} of ${desired} agents ready and up to date`);
    if (blocker) set('Ready', 'False', blocker.reason, blocker.message);
    else if (connected.status !== 'True') set('Ready', 'False', connected.reason, connected.message);
    else set('Ready', 'True', 'AgentsReady', `${ready} of ${desired} agents ready and reporting`);
  } else {
    const progress = daemonSet
      ? `${updated} of ${desired} agents updated, ${ready} ready`
      : 'creating the agents';
    set('Progressing', blocker ? 'False' : 'True', blocker ? blocker.reason : 'RollingOut', progress);
    const why = blocker ? blocker.reason : 'AgentsNotReady';
    set('Ready', 'False', why, blocker ? blocker.message : progress);
  }
  return {
    observedGeneration: generation,
    conditions,
    desiredAgents: desired,
    readyAgents: ready,
    updatedAgents: updated,
    reportingAgents: inputs.presence?.reporting ?? 0,
    zones,
    regions,
    // The agents' own figures, from the control plane; the last known ones while none arrive.
    ...(figures
      ? {
          ...(figures.hitRatio === undefined ? {} : { hitRatio: figures.hitRatio }),
          bytesFromPeers: figures.bytesFromPeers,
          bytesFromOrigin: figures.bytesFromOrigin,
          distrustedPeers: figures.distrustedPeers,
          distrustedNodes: figures.distrustedNodes,
        }
      : Object.fromEntries(
          FIGURE_FIELDS.filter((f) => mesh.status?.[f] !== undefined).map((f) => [f, mesh.status![f]]),
        )),
  };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A JSON merge patch (RFC 7386) that turns `previous` into `next`: a merge patch only adds and
 * changes keys, so every key `previous` has and `next` lacks (a zone whose last node left, a hit
 * ratio gone) is sent as null. Arrays are replaced whole.
 */
export function mergePatchFrom(previous: unknown, next: unknown): unknown {
  if (!isPlainObject(next) || !isPlainObject(previous)) return next;
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(previous)) if (!(key in next)) patch[key] = null;
  for (const [key, value] of Object.entries(next)) patch[key] = mergePatchFrom(previous[key], value);
  return patch;
}
