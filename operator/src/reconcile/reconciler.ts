import { isDeepStrictEqual } from 'node:util';
import type { V1DaemonSet, V1Node } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { type EdgeMesh, edgeMeshSpecSchema } from '../api/edgemesh.ts';
import { TerminalError, type Outcome } from '../kit/queue.ts';
import {
  clampedCacheSizes,
  childName,
  desiredChildren,
  type KubeObject,
  meshId,
  type MeshTrust,
  type NodePlace,
  networkPolicyRef,
  ORIGIN_HEADERS_LABEL,
  originHeaderSecrets,
  selectNodes,
} from './desired.ts';
import type { ControlPlanePresence, FiguresCollector, NatsAuth } from '../figures.ts';
import { type Blocker, computeStatus } from './status.ts';
import { SecretConflictError } from '../identity/ca-store.ts';
import { type AgentImageDefaults, agentImage, isBlocker } from './agent-image.ts';

/** What the reconciler reads and writes; the real one is client-node (controller.ts), tests may fake it. */
export interface ReconcileDeps {
  mesh(namespace: string, name: string): EdgeMesh | undefined;
  daemonSet(namespace: string, name: string): V1DaemonSet | undefined;
  nodes(): readonly V1Node[];
  /** A Secret's labels ({} when it has none); undefined when it does not exist. */
  secretLabels(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /**
   * Server-side apply with the operator's field manager; with `answer`, returns the object as
   * stored (otherwise the answer is not read: undefined).
   */
  apply(object: KubeObject, answer: boolean): Promise<KubeObject | undefined>;
  /** Deletes an object the operator made earlier and the spec no longer wants; one already gone is no error. */
  remove(object: Pick<KubeObject, 'apiVersion' | 'kind' | 'metadata'>): Promise<void>;
  writeStatus(mesh: EdgeMesh, status: EdgeMesh['status']): Promise<void>;
  event(mesh: EdgeMesh, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
  /**
   * Warnings about a spec said once by this operator process, by mesh key: what was said, so it is
   * said again only when it changes (not on every resync, nor on a retry that reads a stale status).
   * Absent: said on every reconcile.
   */
  said?: Map<string, string>;
  /**
   * The mesh's trust for mTLS (made on first use: its CA in a Secret), and the issuance endpoint;
   * absent when this operator serves no issuance.
   */
  meshTrust?(mesh: EdgeMesh): Promise<MeshTrust>;
  /**
   * The mesh's NATS credentials when this operator manages the bundled NATS's authentication and the
   * spec names none: the Secret its agents mount (made, and renewed, here), and how the operator
   * itself connects. Absent: agents get the spec's Secret, if any.
   */
  meshNatsCredentials?(
    mesh: EdgeMesh,
  ): Promise<{ secretName: string; auth: NatsAuth; renewInMs: number; tls: boolean }>;
  /** How the operator connects to a NATS with the credentials in the spec's Secret (read from it). */
  specNatsAuth?(mesh: EdgeMesh, secretName: string): Promise<NatsAuth | undefined>;
  /** Sends the mesh's revocation list to its agents on the control plane (best effort). */
  publishRevocations?(mesh: EdgeMesh, list: MeshTrust['revocations']): Promise<void>;
  /** The agents' reported figures (hit ratio, bytes from peers and origins), once any arrived. */
  figures?: FiguresCollector;
  /** The operator's agent image settings, for meshes whose spec names none. */
  agentImage?: AgentImageDefaults;
  /** The agents' PriorityClass for meshes whose spec names none (EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS). */
  agentPriorityClass?: string | undefined;
  /** Namespaces (Prometheus's) whose pods every mesh's NetworkPolicy lets reach the agents' HTTP port. */
  scrapeNamespaces?: readonly string[] | undefined;
  logger: Logger;
  now?: () => Date;
}

/** How often a mesh that cannot work yet is looked at again (a missing Secret may appear). */
const BLOCKED_RECHECK_MS = 10_000;
/**
 * The same for a mesh whose children the API server refused: each look applies them all again, and
 * what refused them (a policy, a quota, a missing right) rarely changes within seconds. A change of the
 * mesh is looked at at once.
 */
const APPLY_REFUSED_RECHECK_MS = 60_000;

/** The Warnings said once per mesh (ReconcileDeps.said), by reason. */
const SAID_ONCE = ['CacheSizeClamped', 'RevocationsNotPublished'] as const;

/**
 * A Warning said once by this process for the mesh `key` and `reason`, and again only when `message`
 * changes; undefined: nothing to say now (said again should it come back).
 */
async function warnOnce(
  deps: ReconcileDeps,
  mesh: EdgeMesh,
  key: string,
  reason: (typeof SAID_ONCE)[number],
  message: string | undefined,
): Promise<void> {
  const at = `${key} ${reason}`;
  if (message === undefined) return void deps.said?.delete(at);
  if (deps.said?.get(at) === message) return;
  deps.said?.set(at, message);
  await deps.event(mesh, 'Warning', reason, message);
}

/**
 * Level-triggered reconcile of one EdgeMesh (key namespace/name): reads the mesh, the nodes and the
 * live DaemonSet, applies every child in full (server-side apply, so unchanged children cost nothing
 * and drift is corrected), and writes status when it changed. A spec that passes the schema but
 * cannot work (a Secret it names is missing, no node matches) is reported as Degraded, and the
 * running mesh is left as it was.
 */
export async function reconcile(key: string, deps: ReconcileDeps): Promise<Outcome> {
  const [namespace, name] = key.split('/') as [string, string];
  const found = deps.mesh(namespace, name);
  if (!found || found.metadata.deletionTimestamp) {
    // Children go with it (owner references); its figures are no longer followed.
    deps.figures?.forget(meshId({ metadata: { namespace, name } } as EdgeMesh));
    for (const reason of SAID_ONCE) deps.said?.delete(`${key} ${reason}`);
    return;
  }
  const parsed = edgeMeshSpecSchema.safeParse(found.spec);
  if (!parsed.success) {
    // The API server's schema should have refused it; say so rather than retry forever.
    const message = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    await report(deps, found, { reason: 'InvalidSpec', message }, new Map());
    throw new TerminalError(`invalid spec: ${message}`);
  }
  const mesh: EdgeMesh = { ...found, spec: parsed.data };
  const nodes = selectNodes(mesh.spec, deps.nodes());
  const image = agentImage(mesh.spec, deps.agentImage ?? {});
  let blocker =
    nameConflict(mesh, deps) ??
    (isBlocker(image) ? image : await findBlocker(mesh, nodes.size, deps).catch(forbidden(mesh)));
  const named = mesh.spec.controlPlane.credentialsSecret;
  let nats:
    { secretName: string; auth?: NatsAuth | undefined; renewInMs?: number; tls?: boolean } | undefined;
  try {
    nats = named
      ? { secretName: named, auth: blocker ? undefined : await deps.specNatsAuth?.(mesh, named) }
      : await deps.meshNatsCredentials?.(mesh);
  } catch (error) {
    if (error instanceof SecretConflictError)
      blocker ??= { reason: 'SecretConflict', message: error.message };
    else blocker ??= forbidden(mesh)(error);
  }
  let trust: MeshTrust | undefined;
  if (!blocker && mesh.spec.security.mtls) {
    if (deps.meshTrust) {
      try {
        trust = await deps.meshTrust(mesh);
      } catch (error) {
        blocker =
          error instanceof SecretConflictError
            ? { reason: 'SecretConflict', message: error.message }
            : forbidden(mesh)(error);
      }
    } else
      blocker = {
        reason: 'NoIssuer',
        message:
          'spec.security.mtls needs node certificates, and this operator serves no issuance endpoint (EDGEMESH_OPERATOR_ISSUER_URL)',
      };
  }
  deps.figures?.watch(
    meshId(mesh),
    key,
    mesh.spec.controlPlane.natsUrl.split(','),
    nats?.auth,
    // With node identities, only reports its nodes signed count (as the agents check events).
    // Blocked, its trust unread: the checks it had stay (never a fallback to unsigned reports).
    trust
      ? {
          mesh: { namespace: mesh.metadata.namespace, name: mesh.metadata.name },
          bundlePem: trust.bundlePem,
          revoked: mesh.spec.security.revokedNodes ?? [],
        }
      : mesh.spec.security.mtls
        ? 'keep'
        : undefined,
  );
  let applied: V1DaemonSet | undefined;
  if (!blocker && !isBlocker(image)) {
    const children = desiredChildren(mesh, nodes, {
      image,
      trust,
      nats: nats && { secretName: nats.secretName, tls: nats.tls ?? false },
      priorityClassName: deps.agentPriorityClass,
      scrapeNamespaces: deps.scrapeNamespaces,
    });
    // Only the DaemonSet's answer is read (its status); the others' are let go unparsed.
    const outcomes = await Promise.allSettled(
      children.map((child) => deps.apply(child, child.kind === 'DaemonSet')),
    );
    blocker = refusedApply(children, outcomes);
    const daemonSet = outcomes[children.findIndex((c) => c.kind === 'DaemonSet')];
    if (daemonSet?.status === 'fulfilled') applied = daemonSet.value;
    // One rendered while it was enabled: deleted (an agent fence nobody wants must not stay behind).
    if (!blocker && !mesh.spec.networkPolicy.enabled) await deps.remove(networkPolicyRef(mesh));
    // Revocations reach running agents within seconds this way (a child refused or not); the
    // ConfigMap serves those that start, and all of them when the list is too large for an event.
    if (trust) {
      let unpublished: string | undefined;
      try {
        await deps.publishRevocations?.(mesh, trust.revocations);
      } catch (error) {
        if (!(error instanceof RangeError)) throw error; // encodeEvent's: larger than an event may be
        unpublished = `the revocation list (${trust.revocations.nodes.length} nodes) is not sent on the control plane: ${error.message}; running agents read it from the trust ConfigMap as the kubelet updates it (about a minute by default), not within seconds`;
      }
      await warnOnce(deps, mesh, key, 'RevocationsNotPublished', unpublished);
    }
  }
  const presence = await report(deps, mesh, blocker, nodes, applied);
  const rotation = trust?.caRotation;
  if (rotation?.did)
    await deps.event(
      mesh,
      'Normal',
      'CARotation',
      {
        started: `a new CA is trusted by the agents (${rotation.why ?? 'requested'}); it signs in ${Math.round((rotation.nextStepInMs ?? 0) / 1000)} s`,
        signing: `the new CA signs; the old one is trusted until its certificates end (${Math.round((rotation.nextStepInMs ?? 0) / 1000)} s)`,
        finished:
          'every certificate of the old CA has ended: the rotation is done (the old CA, its key deleted, stays trusted only to check what it signed, until it expires)',
      }[rotation.did] ?? rotation.did,
    );
  // Said when the operator first meets the mesh so clamped (a mesh from before the CRD's bounds has
  // a status already), and again only when what is clamped changes.
  await warnOnce(deps, mesh, key, 'CacheSizeClamped', clampedCacheSizes(mesh.spec));
  if (blocker)
    return {
      requeueAfterMs: blocker.reason === 'ApplyRefused' ? APPLY_REFUSED_RECHECK_MS : BLOCKED_RECHECK_MS,
    };
  // Due next: a step of a CA rotation, the renewal of the mesh's NATS credentials, or a report
  // leaving the window (an agent that stopped reporting must be seen without a new event).
  const due = [rotation?.nextStepInMs, nats?.renewInMs, presence?.changesInMs].filter(
    (ms): ms is number => ms !== undefined,
  );
  return due.length === 0 ? undefined : { requeueAfterMs: Math.max(1000, Math.min(...due)) };
}

/**
 * The first child the API server refused (400 Bad Request, 403 Forbidden, 422 Invalid: the same
 * apply would be refused again) as a blocker, so the status says why the mesh does not run (a name
 * too long for a Service, an affinity the server rejects, a role missing a right) rather than
 * staying as it was while the reconcile is retried for ever. Any other failure (a conflict, a
 * throttle, a server error, the network) is thrown: retried with backoff.
 */
function refusedApply(
  children: readonly KubeObject[],
  outcomes: readonly PromiseSettledResult<unknown>[],
): Blocker | undefined {
  let refused: Blocker | undefined;
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'fulfilled') return;
    const error = outcome.reason as { code?: number; message?: unknown };
    if (error.code !== 400 && error.code !== 403 && error.code !== 422) throw outcome.reason;
    const child = children[i]!;
    const why = typeof error.message === 'string' ? error.message : 'refused';
    // RBAC's refusal ("... is forbidden: User ... cannot patch resource ..."): the operator may make a
    // mesh's objects only in the namespaces the chart grants it, as for its Secrets. A mesh that needs
    // no Secret (mTLS off, no NATS user) finds that out here. Other 403s (an admission webhook's) are
    // the server's reason about the object.
    refused ??=
      error.code === 403 && RBAC_REFUSAL.test(why)
        ? notGranted(`${child.kind} objects`, child.metadata.namespace ?? '', why)
        : {
            reason: 'ApplyRefused',
            message: `the API server refused ${child.kind} ${child.metadata.name}: ${why}`,
          };
  });
  return refused;
}

/**
 * How the API server's authorizer words a refusal (RBAC's and the other authorizers' alike), and how
 * API servers before k8s.io/apiserver's ForbiddenStatusError worded a create refused on an apply: the
 * authorizer's reason only, which RBAC leaves empty (the server's whole message
 * `<resource>.<group> "<name>" is forbidden: `, after KubeApiError's `<what>: 403 `). Admission and
 * quota refusals always say why.
 */
const RBAC_REFUSAL =
  / is forbidden: User "[^"]*" cannot [a-z]+ resource |: 403 [a-z0-9.-]+ "[^"]*" is forbidden:\s*$/;

/**
 * A refusal (403) of the mesh's Secrets as a blocker, any other error as it was: the operator may
 * touch Secrets only in namespaces granted to it (the chart's meshNamespaces), and a mesh elsewhere
 * is reported, not retried in a loop.
 */
const forbidden =
  (mesh: EdgeMesh) =>
  (error: unknown): Blocker => {
    if ((error as { code?: number }).code !== 403) throw error;
    return notGranted('Secrets', mesh.metadata.namespace, (error as Error).message);
  };

/** A mesh in a namespace the chart does not grant the operator (`what` it was refused, and why). */
function notGranted(what: string, namespace: string, why: string): Blocker {
  return {
    reason: 'NamespaceNotGranted',
    message: `the operator may not manage ${what} in namespace ${namespace} (${why}): add it to the chart's meshNamespaces (when it is there, the chart's operator Role in it lacks the rights: helm upgrade restores them)`,
  };
}

/**
 * Meshes `X` and `X-trust` in one namespace: the agents' ConfigMap of `X-trust` is named
 * `edgemesh-X-trust`, the name of the trust ConfigMap of `X` (desired.ts), and each mesh's applies
 * would overwrite the other's. The mesh made later (by creationTimestamp; on a tie `X-trust`) is
 * blocked, before it applies anything, until one of them is renamed or deleted (blocked meshes are
 * looked at again every BLOCKED_RECHECK_MS).
 */
export function nameConflict(mesh: EdgeMesh, deps: Pick<ReconcileDeps, 'mesh'>): Blocker | undefined {
  const { namespace, name } = mesh.metadata;
  const suffix = '-trust';
  const pairs: [EdgeMesh | undefined, string][] = [
    [name.endsWith(suffix) ? deps.mesh(namespace, name.slice(0, -suffix.length)) : undefined, name],
    [deps.mesh(namespace, `${name}${suffix}`), `${name}${suffix}`],
  ];
  for (const [other, trusted] of pairs) {
    if (!other) continue;
    const mine = createdAt(mesh);
    const theirs = createdAt(other);
    const otherFirst = theirs < mine || (theirs === mine && name === trusted);
    if (!otherFirst) continue;
    return {
      reason: 'NameConflict',
      message: `the ConfigMap ${namespace}/edgemesh-${trusted} would be both the agents' ConfigMap of mesh ${trusted} and the trust ConfigMap of mesh ${trusted.slice(0, -suffix.length)}, made earlier; rename this mesh (or delete the other)`,
    };
  }
  return undefined;
}

/** When a mesh was made, in ms (the API server's RFC 3339 text, or a Date); unknown: last. */
function createdAt(mesh: EdgeMesh): number {
  const at = mesh.metadata.creationTimestamp;
  const ms = at === undefined ? NaN : new Date(at).getTime();
  return Number.isNaN(ms) ? Infinity : ms;
}

async function findBlocker(
  mesh: EdgeMesh,
  selected: number,
  deps: ReconcileDeps,
): Promise<Blocker | undefined> {
  const { spec } = mesh;
  const namespace = mesh.metadata.namespace;
  const missing = (secret: string): Blocker => ({
    reason: 'SecretMissing',
    message: `Secret ${namespace}/${secret} named in the spec does not exist`,
  });
  const credentials = spec.controlPlane.credentialsSecret;
  if (credentials && !(await deps.secretLabels(namespace, credentials))) return missing(credentials);
  for (const secret of originHeaderSecrets(spec)) {
    const labels = await deps.secretLabels(namespace, secret);
    if (!labels) return missing(secret);
    if (labels[ORIGIN_HEADERS_LABEL] !== 'true')
      return {
        reason: 'SecretNotAllowed',
        message: `Secret ${namespace}/${secret} is named as origin headers but lacks the label ${ORIGIN_HEADERS_LABEL}=true (its values would leave the cluster: label it to agree)`,
      };
  }
  if (selected === 0) {
    return {
      reason: 'NoMatchingNodes',
      message: `no node matches nodeSelector ${JSON.stringify(spec.nodeSelector ?? {})}`,
    };
  }
  return undefined;
}

/**
 * Whether two statuses say the same, whatever the order of their keys: a real API server returns
 * an object's keys sorted (Go's encoding/json), not in the order they were written, so comparing
 * serialized text would rewrite an unchanged status on every reconcile.
 */
export function sameStatus(a: EdgeMesh['status'], b: EdgeMesh['status']): boolean {
  const plain = (v: unknown) => (v === undefined ? undefined : (JSON.parse(JSON.stringify(v)) as unknown));
  return isDeepStrictEqual(plain(a), plain(b));
}

/**
 * The newer of the informer's DaemonSet and the one the apply just returned: the cache may not have
 * seen the apply yet, and judged by it a spec change would be Ready (the old generation, rolled out)
 * before its rollout began.
 */
function newer(cached: V1DaemonSet | undefined, applied: V1DaemonSet | undefined): V1DaemonSet | undefined {
  if (!applied || !cached) return applied ?? cached;
  const version = (ds: V1DaemonSet) => ds.metadata?.generation ?? 0;
  const seen = (ds: V1DaemonSet) => ds.status?.observedGeneration ?? 0;
  return version(applied) > version(cached) ||
    (version(applied) === version(cached) && seen(applied) > seen(cached))
    ? applied
    : cached;
}

/** Writes the mesh's status when it changed; returns what it knew of the agents' reports. */
async function report(
  deps: ReconcileDeps,
  mesh: EdgeMesh,
  blocker: Blocker | undefined,
  nodes: ReadonlyMap<string, NodePlace>,
  applied?: V1DaemonSet,
): Promise<ControlPlanePresence | undefined> {
  const now = deps.now?.() ?? new Date();
  const presence = deps.figures?.presence(meshId(mesh), nodes.keys());
  const status = computeStatus({
    mesh,
    nodes,
    daemonSet: newer(deps.daemonSet(mesh.metadata.namespace, childName(mesh)), applied),
    blocker,
    now,
    figures: deps.figures?.figures(meshId(mesh)),
    presence,
  });
  if (sameStatus(status, mesh.status)) return presence;
  await deps.writeStatus(mesh, status);
  const was = (type: string) => mesh.status?.conditions?.find((c) => c.type === type)?.status;
  const is = (type: string) => status.conditions?.find((c) => c.type === type);
  if (is('Ready')?.status === 'True' && was('Ready') !== 'True')
    await deps.event(mesh, 'Normal', 'MeshReady', is('Ready')!.message);
  if (is('Degraded')?.status === 'True' && was('Degraded') !== 'True')
    await deps.event(mesh, 'Warning', is('Degraded')!.reason, is('Degraded')!.message);
  deps.logger.debug({ mesh: `${mesh.metadata.namespace}/${mesh.metadata.name}` }, 'status written');
  return presence;
}
