import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '../../agent/src/config/schema.ts';
import { edgeMeshSpecSchema, type EdgeMesh } from '../src/api/edgemesh.ts';
import { agentConfig, desiredChildren } from '../src/reconcile/desired.ts';

const mesh = (security: Record<string, unknown> = {}): EdgeMesh => ({
  apiVersion: 'edgemesh.p2p.dev/v1alpha1',
  kind: 'EdgeMesh',
  metadata: { namespace: 'shop', name: 'cdn', uid: 'u' },
  spec: edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' }, security }),
});

const trust = {
  issuer: { url: 'https://issuer.edgemesh-system.svc:7443', certPem: 'x' },
  bundlePem: 'y',
  revocations: { nodes: [], issuedAtMs: 1, signature: 'z' },
};

describe('the agent configuration the operator writes (a contract between the two)', () => {
  it('is one the agent accepts, with mTLS through the issuer', () => {
    const config = agentConfigSchema.parse({ ...agentConfig(mesh(), trust), nodeId: 'edge-1' });
    assert.equal(config.security.mtls, true);
    assert.deepEqual(config.security.issuer, {
      url: trust.issuer.url,
      tokenFile: '/var/run/secrets/edgemesh.p2p.dev/token',
      caFile: '/etc/edgemesh/trust/issuer.crt',
      namespace: 'shop',
      name: 'cdn',
    });
    assert.equal(config.security.trustBundleFile, '/etc/edgemesh/trust/ca.crt');
    assert.equal(config.security.revocationsFile, '/etc/edgemesh/trust/revoked.json');
  });

  it('sends an origin’s headers from its Secret, mounted where the configuration says', () => {
    const spec = edgeMeshSpecSchema.parse({
      controlPlane: { natsUrl: 'nats://nats:4222' },
      origins: [{ prefix: 'p/', url: 'https://origin.example/', headersSecret: 'origin-auth' }],
    });
    const withOrigin = { ...mesh(), spec };
    const config = agentConfigSchema.parse({ ...agentConfig(withOrigin, trust), nodeId: 'edge-1' });
    const dir = config.origins[0]!.headersDir;
    assert.ok(dir);
    const ds = desiredChildren(withOrigin, new Map(), {
      image: { image: 'registry.example/edgemesh:1', pullSecrets: [] },
    }).find((c) => c.kind === 'DaemonSet') as unknown as {
      spec: {
        template: {
          spec: {
            containers: { volumeMounts: { name: string; mountPath: string }[] }[];
            volumes: { name: string; secret?: { secretName: string } }[];
          };
        };
      };
    };
    const pod = ds.spec.template.spec;
    const mount = pod.containers[0]!.volumeMounts.find((m) => m.mountPath === dir);
    assert.ok(mount, `a volume mounted at ${dir}`);
    assert.equal(pod.volumes.find((v) => v.name === mount.name)?.secret?.secretName, 'origin-auth');
  });

  it('turns mTLS off only when the mesh says so', () => {
    const config = agentConfigSchema.parse({
      ...agentConfig(mesh({ mtls: false }), trust),
      nodeId: 'edge-1',
    });
    assert.equal(config.security.mtls, false);
  });
});
