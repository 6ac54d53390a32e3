import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentConfigSchema } from '../../agent/src/config/schema.ts';
import { edgeMeshSpecSchema, type EdgeMesh } from '../src/api/edgemesh.ts';
import { agentConfig } from '../src/reconcile/desired.ts';

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

  it('turns mTLS off only when the mesh says so', () => {
    const config = agentConfigSchema.parse({
      ...agentConfig(mesh({ mtls: false }), trust),
      nodeId: 'edge-1',
    });
    assert.equal(config.security.mtls, false);
  });
});
