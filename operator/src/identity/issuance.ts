import type { V1Pod, V1TokenReviewStatus } from '@kubernetes/client-node';
import { MESH_LABEL } from '../reconcile/desired.ts';
import { MeshCa, type MeshRef } from '@edgemesh/identity';

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

/** The API server could not be asked (TokenReview or a read failed): try again later (a 503, not a refusal). */
export class IssuanceUnavailable extends Error {
  override name = 'IssuanceUnavailable';
}

/** What issuance reads from the API server. */
export interface IssuanceApi {
  /** A TokenReview of `token` for `audiences`. */
  reviewToken(token: string, audiences: string[]): Promise<V1TokenReviewStatus>;
  getPod(namespace: string, name: string): Promise<V1Pod | undefined>;
  /** The DaemonSet's uid, or undefined when there is none. */
  daemonSetUid(namespace: string, name: string): Promise<string | undefined>;
}

const unavailable = <T>(what: string, call: Promise<T>): Promise<T> =>
  call.catch((error: unknown) => {
    throw new IssuanceUnavailable(`${what}: ${(error as Error).message}`, { cause: error });
  });

/**
 * Decides which node a token proves to be, for one mesh. Every check must pass:
 * - TokenReview authenticates the token for TOKEN_AUDIENCE (an API-server token is refused);
 * - it is the mesh's agent ServiceAccount (`edgemesh-<mesh>` in the mesh's namespace, in its
 *   namespace's service-account group);
 * - it is bound to a pod (names the pod and its uid), and that pod exists now with that uid, is
 *   Running and not being deleted;
 * - the pod is the mesh's agent: controlled by the mesh's DaemonSet (apps/v1, the live one's uid),
 *   labelled with the mesh;
 * - the pod runs on a node, the one the token names where it names one;
 * - the node asked for, if any, is that node.
 * Returns the node name, the identity to sign; throws IssuanceRefused (the caller's fault, said
 * without details the caller could use) or IssuanceUnavailable (the API server's).
 */
export async function authorizeNode(
  api: IssuanceApi,
  mesh: MeshRef,
  token: string,
  requestedNode?: string,
): Promise<{ node: string; pod: string }> {
  if (typeof token !== 'string' || token.length === 0 || token.length > 16_384)
    throw new IssuanceRefused('TokenInvalid', 'the token was not accepted');
  const review = await unavailable('TokenReview', api.reviewToken(token, [TOKEN_AUDIENCE]));
  // The review's own error text can name pods and uids: it is not repeated to the caller.
  if (!review.authenticated) throw new IssuanceRefused('TokenInvalid', 'the token was not accepted');
  if (!(review.audiences ?? []).includes(TOKEN_AUDIENCE))
    throw new IssuanceRefused('WrongAudience', `the token is not for the ${TOKEN_AUDIENCE} audience`);
  const agent = `edgemesh-${mesh.name}`; // the agents' ServiceAccount and DaemonSet (desired.ts childName)
  const expected = `system:serviceaccount:${mesh.namespace}:${agent}`;
  const user = review.user;
  if (user?.username !== expected || !user.groups?.includes(`system:serviceaccounts:${mesh.namespace}`))
    throw new IssuanceRefused('NotTheAgent', `the token is not ${expected}'s`);
  const extra = user.extra ?? {};
  const podName = extra[EXTRA_POD_NAME]?.[0];
  const podUid = extra[EXTRA_POD_UID]?.[0];
  if (!podName || !podUid) throw new IssuanceRefused('NotPodBound', 'the token is not bound to a pod');
  const [pod, daemonSetUid] = await Promise.all([
    unavailable('reading the pod', api.getPod(mesh.namespace, podName)),
    unavailable('reading the DaemonSet', api.daemonSetUid(mesh.namespace, agent)),
  ]);
  if (!pod || pod.metadata?.uid !== podUid)
    throw new IssuanceRefused('PodGone', `the token's pod no longer exists`);
  if (pod.metadata.deletionTimestamp || pod.status?.phase !== 'Running')
    throw new IssuanceRefused('PodNotRunning', `pod ${podName} is not running (or is being deleted)`);
  const owner = pod.metadata.ownerReferences?.find((o) => o.controller);
  if (
    owner?.apiVersion !== 'apps/v1' ||
    owner.kind !== 'DaemonSet' ||
    owner.name !== agent ||
    daemonSetUid === undefined ||
    owner.uid !== daemonSetUid ||
    pod.metadata.labels?.[MESH_LABEL] !== mesh.name
  )
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

/**
 * Checks the request first (cheap, no API call), then the token (authorizeNode), then signs the
 * request's key as that node of that mesh, with `ca`, which must be the mesh's own.
 */
export async function issueNodeCertificate(
  api: IssuanceApi,
  ca: MeshCa,
  request: { mesh: MeshRef; token: string; csrPem: unknown; node?: string },
): Promise<{ node: string; certificatePem: string; caPem: string }> {
  await MeshCa.readRequest(request.csrPem);
  const { node } = await authorizeNode(api, request.mesh, request.token, request.node);
  const certificatePem = await ca.issue({ csrPem: request.csrPem, mesh: request.mesh, node });
  return { node, certificatePem, caPem: ca.certPem };
}

/** A read that answers 404 is undefined; any other failure stays one. */
const orUndefined = <T>(read: Promise<T>): Promise<T | undefined> =>
  read.catch((error: unknown) => {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  });

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
    getPod: (namespace, name) =>
      orUndefined(
        http.request<V1Pod>(
          'GET',
          `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
        ),
      ),
    daemonSetUid: async (namespace, name) =>
      (
        await orUndefined(
          http.request<{ metadata?: { uid?: string } }>(
            'GET',
            `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`,
          ),
        )
      )?.metadata?.uid,
  };
}
