import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Pod, V1TokenReviewStatus } from '@kubernetes/client-node';
import {
  authorizeNode,
  type IssuanceApi,
  IssuanceRefused,
  IssuanceUnavailable,
  TOKEN_AUDIENCE,
} from './issuance.ts';

const MESH = { namespace: 'shop', name: 'cdn' };
const DS_UID = 'ds-uid';

/** A token review and a pod as the API server gives them for the cdn agent on node-x. */
function world() {
  const review: V1TokenReviewStatus = {
    authenticated: true,
    audiences: [TOKEN_AUDIENCE],
    user: {
      username: 'system:serviceaccount:shop:edgemesh-cdn',
      groups: ['system:serviceaccounts', 'system:serviceaccounts:shop', 'system:authenticated'],
      extra: {
        'authentication.kubernetes.io/pod-name': ['edgemesh-cdn-abcde'],
        'authentication.kubernetes.io/pod-uid': ['pod-uid'],
        'authentication.kubernetes.io/node-name': ['node-x'],
      },
    },
  };
  const pod: V1Pod = {
    metadata: {
      name: 'edgemesh-cdn-abcde',
      namespace: 'shop',
      uid: 'pod-uid',
      labels: { 'edgemesh.p2p.dev/mesh': 'cdn' },
      ownerReferences: [
        { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'edgemesh-cdn', uid: DS_UID, controller: true },
      ],
    },
    spec: { nodeName: 'node-x', containers: [] },
    status: { phase: 'Running' },
  };
  let failing = false;
  const api: IssuanceApi = {
    reviewToken: () => (failing ? Promise.reject(new Error('connection refused')) : Promise.resolve(review)),
    getPod: () => Promise.resolve(pod),
    daemonSetUid: () => Promise.resolve(DS_UID),
  };
  return { review, pod, api, fail: () => (failing = true) };
}

const refusal = (call: Promise<unknown>) =>
  call.then(
    () => 'issued',
    (error: unknown) => {
      if (error instanceof IssuanceRefused) return error.reason;
      throw error;
    },
  );

describe('who gets a node certificate (authorizeNode)', () => {
  it("names the node of the token's agent pod", async () => {
    assert.deepEqual(await authorizeNode(world().api, MESH, 't'), {
      node: 'node-x',
      pod: 'edgemesh-cdn-abcde',
    });
  });

  // Each case changes one thing from the world above; each must be refused for its reason.
  const cases: [string, string, (w: ReturnType<typeof world>) => void, string?][] = [
    ['an unauthenticated token', 'TokenInvalid', (w) => (w.review.authenticated = false)],
    ['another audience', 'WrongAudience', (w) => (w.review.audiences = ['https://kubernetes.default.svc'])],
    [
      'another ServiceAccount',
      'NotTheAgent',
      (w) => (w.review.user!.username = 'system:serviceaccount:shop:default'),
    ],
    [
      'a user outside the namespace group',
      'NotTheAgent',
      (w) => (w.review.user!.groups = ['system:authenticated']),
    ],
    [
      'a token bound to no pod',
      'NotPodBound',
      (w) => delete w.review.user!.extra!['authentication.kubernetes.io/pod-uid'],
    ],
    ['a pod recreated under the same name', 'PodGone', (w) => (w.pod.metadata!.uid = 'other-uid')],
    ['a pod being deleted', 'PodNotRunning', (w) => (w.pod.metadata!.deletionTimestamp = new Date())],
    ['a pod not running', 'PodNotRunning', (w) => (w.pod.status!.phase = 'Pending')],
    ['a pod without an owner', 'NotTheAgent', (w) => (w.pod.metadata!.ownerReferences = [])],
    [
      'a pod whose owner is a look-alike in another group',
      'NotTheAgent',
      (w) => (w.pod.metadata!.ownerReferences![0]!.apiVersion = 'fake.example/v1'),
    ],
    [
      'a pod owned by a former DaemonSet',
      'NotTheAgent',
      (w) => (w.pod.metadata!.ownerReferences![0]!.uid = 'old'),
    ],
    ['a pod without the mesh label', 'NotTheAgent', (w) => (w.pod.metadata!.labels = {})],
    ['a pod on another node than its token says', 'NodeMismatch', (w) => (w.pod.spec!.nodeName = 'node-y')],
    ['a pod not scheduled', 'NodeMismatch', (w) => delete w.pod.spec!.nodeName],
    ['a request for another node', 'NodeMismatch', () => undefined, 'node-y'],
  ];
  for (const [what, reason, change, node] of cases)
    it(`refuses ${what} (${reason})`, async () => {
      const w = world();
      change(w);
      assert.equal(await refusal(authorizeNode(w.api, MESH, 't', node)), reason);
    });

  it('refuses an agent of a mesh whose DaemonSet is gone, and says so when the API server cannot be asked', async () => {
    const w = world();
    w.api.daemonSetUid = () => Promise.resolve(undefined);
    assert.equal(await refusal(authorizeNode(w.api, MESH, 't')), 'NotTheAgent');
    const down = world();
    down.fail();
    await assert.rejects(authorizeNode(down.api, MESH, 't'), IssuanceUnavailable);
  });

  it('does not repeat the API server’s reason for a bad token to the caller', async () => {
    const w = world();
    w.review.authenticated = false;
    w.review.error = 'pod "edgemesh-cdn-abcde" (uid pod-uid) not found';
    await assert.rejects(authorizeNode(w.api, MESH, 't'), (e: Error) => !e.message.includes('pod-uid'));
  });
});
