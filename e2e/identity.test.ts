import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { createCa, createNodeKey, CsrError, MeshCa, nodeSpiffeId } from '@edgemesh/identity';
import {
  IssuanceRefused,
  issueNodeCertificate,
  kubeIssuanceApi,
  TOKEN_AUDIENCE,
} from '../operator/src/identity/issuance.ts';
import { KubeHttp } from '../operator/src/kit/kube-http.ts';
import type { Operator } from '../operator/src/controller.ts';
import { startTestOperator } from '../operator/harness/test-operator.ts';
import { eventually as poll } from '../operator/test/support.ts';
import { type ControlPlane, controlPlaneUnavailable, startControlPlane } from './harness/control-plane.ts';
import { ROOT } from './harness/images.ts';

const eventually = <T>(check: () => T | undefined | Promise<T | undefined>) => poll(check, 60_000, 250);
const why = controlPlaneUnavailable();
if (why) console.log(`# node identity issuance suite skipped: ${why}`);

const NS = 'shop';

/**
 * Node identity issuance against a real API server: tokens from the TokenRequest API bound to real
 * (kwok) pods, checked with TokenReview. A certificate names the node the token's pod runs on, and
 * only an agent pod of the mesh gets one.
 */
describe(
  'node identity issuance on a real control plane (TokenRequest, TokenReview)',
  { skip: why ?? false },
  () => {
    let cp: ControlPlane;
    let operator: Operator;
    let http: KubeHttp;
    let ca: MeshCa;
    const outcomes: string[] = [];
    const mesh = (name: string, http: number) => ({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name, namespace: NS },
      spec: { controlPlane: { natsUrl: 'nats://nats:4222' }, ports: { http, grpc: http + 1 } },
    });
    /** The agent pod of `meshName` on `node`. */
    const agentOn = (meshName: string, node: string) =>
      eventually(() => {
        const pods = JSON.parse(
          cp.kubectl(['get', 'pods', '-n', NS, '-l', `edgemesh.p2p.dev/mesh=${meshName}`, '-o', 'json']),
        ) as {
          items: { metadata: { name: string }; spec: { nodeName?: string }; status: { phase?: string } }[];
        };
        return pods.items.find((p) => p.spec.nodeName === node && p.status.phase === 'Running')?.metadata
          .name;
      });
    /** A token from the TokenRequest API (kubectl create token). */
    const token = (serviceAccount: string, opts: { pod?: string; audience?: string } = {}) =>
      cp
        .kubectl([
          ...['create', 'token', serviceAccount, '-n', NS, '--duration', '600s'],
          ...(opts.pod ? ['--bound-object-kind', 'Pod', '--bound-object-name', opts.pod] : []),
          ...(opts.audience === undefined
            ? ['--audience', TOKEN_AUDIENCE]
            : opts.audience
              ? ['--audience', opts.audience]
              : []),
        ])
        .trim();
    const csr = async () => (await createNodeKey('agent')).csrPem;
    /** Asks for a certificate; returns the node it names, or the refusal's reason. */
    const ask = async (what: string, tokenValue: string, node?: string, csrPem?: string) => {
      try {
        const issued = await issueNodeCertificate(kubeIssuanceApi(http), ca, {
          mesh: { namespace: NS, name: 'cdn' },
          token: tokenValue,
          csrPem: csrPem ?? (await csr()),
          ...(node ? { node } : {}),
        });
        outcomes.push(`${what}: issued for ${issued.node}`);
        const cert = new X509Certificate(issued.certificatePem);
        assert.ok(cert.verify(new X509Certificate(issued.caPem).publicKey));
        assert.equal(cert.subjectAltName, `URI:${nodeSpiffeId({ namespace: NS, name: 'cdn' }, issued.node)}`);
        return `issued:${issued.node}`;
      } catch (error) {
        if (!(error instanceof IssuanceRefused) && !(error instanceof CsrError)) throw error;
        const reason = error instanceof IssuanceRefused ? error.reason : 'BadRequest';
        outcomes.push(`${what}: refused (${reason})`);
        return reason;
      }
    };

    before(async () => {
      cp = await startControlPlane({
        nodes: ['node-x', 'node-y'].map((name) => ({
          name,
          labels: { 'topology.kubernetes.io/zone': name },
        })),
        apply: [`${ROOT}/crds/edgemeshes.edgemesh.p2p.dev.yaml`],
      });
      for (const ns of [NS, 'edgemesh-system']) cp.kubectl(['create', 'namespace', ns]);
      const kc = new KubeConfig();
      kc.loadFromString(cp.kubeconfigText);
      http = new KubeHttp(kc);
      // client-go's own timing: the API server shares two cores with everything else here.
      operator = await startTestOperator(
        { kubeconfig: cp.kubeconfigText },
        {
          leaseDurationMs: 15_000,
          renewDeadlineMs: 10_000,
          retryPeriodMs: 1000,
          onLostLease: () => assert.fail('lost the lease'),
        },
      );
      for (const m of [mesh('cdn', 7480), mesh('other', 7490)])
        cp.kubectl(['apply', '-f', '-'], JSON.stringify(m));
      ca = await MeshCa.load(await createCa({ namespace: NS, name: 'cdn' }));
    });
    after(async () => {
      console.log(`# issuance outcomes:\n${outcomes.map((o) => `#   ${o}`).join('\n')}`);
      await operator?.stop();
      await http?.close();
      await cp?.stop();
    });

    it("signs for the node the agent's pod runs on, and for no other", async () => {
      const onX = await agentOn('cdn', 'node-x');
      const onY = await agentOn('cdn', 'node-y');
      const x = token('edgemesh-cdn', { pod: onX });
      assert.equal(await ask('agent on node-x', x), 'issued:node-x');
      assert.equal(await ask('agent on node-x asking for node-y', x, 'node-y'), 'NodeMismatch');
      assert.equal(
        await ask('agent on node-y', token('edgemesh-cdn', { pod: onY }), 'node-y'),
        'issued:node-y',
      );
    });

    it("gives nothing to a pod that is not the mesh's agent, or to a token that is not an agent pod's", async () => {
      // A pod with the agents' ServiceAccount and label on node-x, but not the mesh's DaemonSet's.
      cp.kubectl(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'impostor', namespace: NS, labels: { 'edgemesh.p2p.dev/mesh': 'cdn' } },
          spec: {
            serviceAccountName: 'edgemesh-cdn',
            nodeName: 'node-x',
            containers: [{ name: 'c', image: 'impostor' }],
          },
        }),
      );
      assert.equal(
        await ask(
          'a pod of the same ServiceAccount, not the agent',
          token('edgemesh-cdn', { pod: 'impostor' }),
        ),
        'NotTheAgent',
      );
      // One that claims the DaemonSet as its controller, in a look-alike group and with a made-up uid
      // (the garbage collector keeps it: it cannot resolve the group; an apps/v1 owner with a made-up
      // uid is deleted by it at once, and refused by the unit tests).
      for (const [name, apiVersion] of [['lookalike', 'fake.example/v1']] as const) {
        cp.kubectl(
          ['apply', '-f', '-'],
          JSON.stringify({
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: {
              name,
              namespace: NS,
              labels: { 'edgemesh.p2p.dev/mesh': 'cdn' },
              ownerReferences: [
                {
                  apiVersion,
                  kind: 'DaemonSet',
                  name: 'edgemesh-cdn',
                  uid: '00000000-0000-0000-0000-000000000000',
                  controller: true,
                },
              ],
            },
            spec: {
              serviceAccountName: 'edgemesh-cdn',
              nodeName: 'node-y',
              containers: [{ name: 'c', image: 'impostor' }],
            },
          }),
        );
        await eventually(
          () =>
            JSON.parse(cp.kubectl(['get', 'pod', name, '-n', NS, '-o', 'json'])).status?.phase ===
              'Running' || undefined,
        );
        assert.equal(
          await ask(
            `a pod naming the DaemonSet as owner (${apiVersion}, another uid)`,
            token('edgemesh-cdn', { pod: name }),
          ),
          'NotTheAgent',
        );
      }
      const otherMeshAgent = await agentOn('other', 'node-x');
      assert.equal(
        await ask("another mesh's agent", token('edgemesh-other', { pod: otherMeshAgent })),
        'NotTheAgent',
      );
      assert.equal(await ask('a token bound to no pod', token('edgemesh-cdn')), 'NotPodBound');
      const onX = await agentOn('cdn', 'node-x');
      assert.equal(
        await ask(
          'an agent token for the API server audience',
          token('edgemesh-cdn', { pod: onX, audience: '' }),
        ),
        'TokenInvalid',
      );
      assert.equal(await ask('garbage', 'not-a-token'), 'TokenInvalid');
      assert.equal(
        await ask(
          "an agent's token with a request not signed by its key",
          token('edgemesh-cdn', { pod: onX }),
          undefined,
          'junk',
        ),
        'BadRequest',
      );
    });

    it('refuses the token of an agent pod that is gone', async () => {
      const onY = await agentOn('cdn', 'node-y');
      const stale = token('edgemesh-cdn', { pod: onY });
      cp.kubectl(['delete', 'pod', onY, '-n', NS, '--wait=true']);
      const reason = await ask('the token of a deleted agent pod', stale);
      assert.ok(reason === 'TokenInvalid' || reason === 'PodGone', reason);
      const issued = outcomes.filter((o) => o.includes('issued')).length;
      console.log(`# issuance: ${issued} issued, ${outcomes.length - issued} refused`);
      assert.equal(issued, 2, 'only the two agents asking for their own nodes got certificates');
      assert.equal(outcomes.length - issued, 9);
    });

    it('starts the agents of two meshes made at once with their first template (no roll)', async () => {
      // Both meshes were applied together: reconciled at once, neither may render its agents a
      // configuration without what the other's reconcile was still reading (the cluster token keys),
      // which would restart every agent of the mesh once the read ends.
      for (const name of ['cdn', 'other']) {
        await agentOn(name, 'node-x');
        const ds = JSON.parse(
          cp.kubectl(['get', 'daemonset', `edgemesh-${name}`, '-n', NS, '-o', 'json']),
        ) as {
          metadata: { generation: number };
        };
        assert.equal(ds.metadata.generation, 1, `the DaemonSet of ${name} was changed after it was made`);
      }
    });
  },
);
