import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { edgeMeshSpecSchema, type EdgeMesh } from '../src/api/edgemesh.ts';
import { desiredChildren, type MeshTrust } from '../src/reconcile/desired.ts';
import { type PodSpec, podSecurityLevel, podSecurityViolations } from '../harness/pod-security.ts';

const trust: MeshTrust = {
  issuer: { url: 'https://issuer.example:7443', certPem: 'cert' },
  bundlePem: 'ca',
  revocations: { nodes: [], issuedAtMs: 0, signature: 's' },
};

/** The agent pod template the operator renders for a spec (with mTLS, NATS credentials and origin headers: every volume it can mount). */
const podOf = (spec: Record<string, unknown>): PodSpec => {
  const mesh = {
    apiVersion: 'edgemesh.p2p.dev/v1alpha1',
    kind: 'EdgeMesh',
    metadata: { namespace: 'shop', name: 'cdn', uid: 'u' },
    spec: edgeMeshSpecSchema.parse({
      controlPlane: { natsUrl: 'nats://nats:4222' },
      origins: [{ prefix: 'a/', url: 'https://origin.example/', headersSecret: 'origin-auth' }],
      ...spec,
    }),
  } as EdgeMesh;
  const ds = desiredChildren(mesh, new Map(), {
    image: { image: 'edgemesh:1', pullSecrets: [] },
    trust,
    nats: { secretName: 'edgemesh-cdn-nats', tls: true },
  }).find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: PodSpec } } };
  return ds.spec.template.spec;
};

describe('Pod Security Standards of the agent pods (docs/security.md, "Pod Security")', () => {
  it('EmptyDir storage with the default exposure (Service) passes restricted', () => {
    const pod = podOf({ cache: { storage: 'EmptyDir' } });
    assert.deepEqual(podSecurityViolations(pod, 'restricted'), []);
    assert.equal(podSecurityLevel(pod), 'restricted');
  });

  it('needs privileged for HostPath storage and for the HostPort and HostNetwork exposures, each for the reason the docs give', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{}, /HostPath Volumes: volume cache: hostPath/],
      [{ cache: { storage: 'HostPath' }, ports: { exposure: 'Service' } }, /HostPath Volumes/],
      [
        { cache: { storage: 'EmptyDir' }, ports: { exposure: 'HostPort' } },
        /Host Ports: container agent: hostPort 7480/,
      ],
      [
        { cache: { storage: 'EmptyDir' }, ports: { exposure: 'HostNetwork' } },
        /Host Namespaces: hostNetwork: true/,
      ],
    ];
    for (const [spec, reason] of cases) {
      const pod = podOf(spec);
      assert.equal(podSecurityLevel(pod), 'privileged', JSON.stringify(spec));
      assert.match(podSecurityViolations(pod, 'baseline').join('\n'), reason);
    }
    // HostPath also fails restricted for its root chown init container, besides the volume.
    assert.match(
      podSecurityViolations(podOf({}), 'restricted').join('\n'),
      /Running as Non-root user: container cache-owner: runAsUser 0/,
    );
  });

  it('encodes the rules: each control finds what breaks it, so a pass is not vacuous', () => {
    const good = podOf({ cache: { storage: 'EmptyDir' } });
    const breakAgent = (change: (pod: PodSpec) => void) => {
      const pod = structuredClone(good);
      change(pod);
      return podSecurityViolations(pod, 'restricted').join('\n');
    };
    const agent = (pod: PodSpec) => pod.containers[0]!;
    const broken: [string, (pod: PodSpec) => void][] = [
      ['Host Namespaces', (p) => (p.hostPID = true)],
      ['Privileged Containers', (p) => (agent(p).securityContext!.privileged = true)],
      [
        'Capabilities',
        (p) => (agent(p).securityContext!.capabilities = { drop: ['ALL'], add: ['NET_ADMIN'] }),
      ],
      ['Capabilities (restricted)', (p) => (agent(p).securityContext!.capabilities = { add: ['CHOWN'] })],
      ['Volume Types', (p) => p.volumes!.push({ name: 'x', nfs: { server: 'n', path: '/' } })],
      ['Privilege Escalation', (p) => delete agent(p).securityContext!.allowPrivilegeEscalation],
      ['Running as Non-root', (p) => (agent(p).securityContext!.runAsNonRoot = false)],
      ['Running as Non-root user', (p) => (agent(p).securityContext!.runAsUser = 0)],
      ['Seccomp', (p) => (agent(p).securityContext!.seccompProfile = { type: 'Unconfined' })],
      [
        'Seccomp (restricted)',
        (p) => delete p.securityContext!.seccompProfile && delete agent(p).securityContext!.seccompProfile,
      ],
      ['Sysctls', (p) => (p.securityContext!.sysctls = [{ name: 'net.core.somaxconn' }])],
      ['/proc Mount Type', (p) => (agent(p).securityContext!.procMount = 'Unmasked')],
    ];
    for (const [control, change] of broken)
      assert.match(breakAgent(change), new RegExp(`^${control.replace(/[()]/g, '\\$&')}: `, 'm'), control);
  });
});
