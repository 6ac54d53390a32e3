import type { V1Pod, V1TokenReviewStatus } from '@kubernetes/client-node';
import { MESH_LABEL } from '../reconcile/desired.ts';
import type { MeshCa } from './ca.ts';

/** The audience an agent's projected ServiceAccount token must be issued for. */
export const TOKEN_AUDIENCE = 'edgemesh.p2p.dev';
/** What a pod-bound ServiceAccount token says about its pod and node (TokenReview's user.extra). */
const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';

/** Why a certificate was not issued; `reason` is a stable word for metrics and logs. */
export class IssuanceRefused extends Error {
  override name = 'IssuanceRefused';
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** What issuance reads from the API server. */
export interface IssuanceApi {
  /** A TokenReview of `token` for `audiences`. */
  reviewToken(token: string, audiences: string[]): Promise<V1TokenReviewStatus>;
  getPod(namespace: string, name: string): Promise<V1Pod | undefined>;
}

export interface MeshRef {
  namespace: string;
  name: string;
}

/**
 * Decides which node a token proves to be, for one mesh. Every check must pass:
 * - TokenReview authenticates the token for TOKEN_AUDIENCE (an API-server token is refused);
 * - it is the mesh's agent ServiceAccount (`edgemesh-<mesh>` in the mesh's namespace);
 * - it is bound to a pod (names the pod and its uid), and that pod exists now with that uid;
 * - the pod is the mesh's agent: controlled by the mesh's DaemonSet, labelled with the mesh;
 * - the pod runs on a node, the one the token names where it names one;
 * - the node asked for, if any, is that node.
 * Returns the node name, which is the identity to sign; throws IssuanceRefused otherwise.
 */
export async function authorizeNode(
  api: IssuanceApi,
  mesh: MeshRef,
  token: string,
  requestedNode?: string,
): Promise<{ node: string; pod: string }> {
  const review = await api.reviewToken(token, [TOKEN_AUDIENCE]);
  if (!review.authenticated)
    throw new IssuanceRefused(
      'TokenInvalid',
      `the token was not accepted: ${review.error ?? 'not authenticated'}`,
    );
  if (!(review.audiences ?? []).includes(TOKEN_AUDIENCE))
    throw new IssuanceRefused('WrongAudience', `the token is not for the ${TOKEN_AUDIENCE} audience`);
  const agent = `edgemesh-${mesh.name}`; // the agents' ServiceAccount and DaemonSet (desired.ts childName)
  const expected = `system:serviceaccount:${mesh.namespace}:${agent}`;
  if (review.user?.username !== expected)
    throw new IssuanceRefused('NotTheAgent', `${review.user?.username ?? 'no user'} is not ${expected}`);
  const extra = review.user.extra ?? {};
  const podName = extra[EXTRA_POD_NAME]?.[0];
  const podUid = extra[EXTRA_POD_UID]?.[0];
  if (!podName || !podUid) throw new IssuanceRefused('NotPodBound', 'the token is not bound to a pod');
  const pod = await api.getPod(mesh.namespace, podName);
  if (!pod || pod.metadata?.uid !== podUid)
    throw new IssuanceRefused('PodGone', `pod ${mesh.namespace}/${podName} (${podUid}) no longer exists`);
  const owner = pod.metadata.ownerReferences?.find((o) => o.controller);
  if (owner?.kind !== 'DaemonSet' || owner.name !== agent || pod.metadata.labels?.[MESH_LABEL] !== mesh.name)
    throw new IssuanceRefused(
      'NotTheAgent',
      `pod ${podName} is not an agent of mesh ${mesh.namespace}/${mesh.name}`,
    );
  const node = pod.spec?.nodeName;
  const tokenNode = extra[EXTRA_NODE_NAME]?.[0];
  if (!node || (tokenNode !== undefined && tokenNode !== node))
    throw new IssuanceRefused('NodeMismatch', `pod ${podName} is not running on the node its token names`);
  if (requestedNode !== undefined && requestedNode !== node)
    throw new IssuanceRefused(
      'NodeMismatch',
      `a token of a pod on ${node} cannot have a certificate for ${requestedNode}`,
    );
  return { node, pod: podName };
}

/** Authorizes the token (authorizeNode), then signs the request's key as that node. */
export async function issueNodeCertificate(
  api: IssuanceApi,
  ca: MeshCa,
  request: { mesh: MeshRef; meshId: string; token: string; csrPem: string; node?: string; ttlMs?: number },
): Promise<{ node: string; certificatePem: string; caPem: string }> {
  const { node } = await authorizeNode(api, request.mesh, request.token, request.node);
  const certificatePem = await ca.issue({
    csrPem: request.csrPem,
    meshId: request.meshId,
    node,
    ...(request.ttlMs === undefined ? {} : { ttlMs: request.ttlMs }),
  });
  return { node, certificatePem, caPem: ca.certPem };
}

/** IssuanceApi over the API server (TokenReview, and a read of the pod). */
export function kubeIssuanceApi(http: {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
}): IssuanceApi {
  return {
    async reviewToken(token, audiences) {
      const review = await http.request<{ status?: V1TokenReviewStatus }>(
        'POST',
        '/apis/authentication.k8s.io/v1/tokenreviews',
        { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } },
      );
      return review.status ?? {};
    },
    async getPod(namespace, name) {
      try {
        return await http.request<V1Pod>(
          'GET',
          `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
        );
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
  };
}
