import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CRD_FILE, edgeMeshCrdYaml } from './crd.ts';
import { edgeMeshSpecSchema } from './edgemesh.ts';

describe('the EdgeMesh CRD', () => {
  it('in crds/ is exactly what the API definition generates (run `npm run crds` after changing it)', () => {
    assert.equal(readFileSync(CRD_FILE, 'utf8'), edgeMeshCrdYaml());
  });

  it('has no construct Kubernetes refuses in a structural schema', () => {
    const text = edgeMeshCrdYaml();
    assert.doesNotMatch(text, /additionalProperties: false/);
    assert.doesNotMatch(text, /\$schema|propertyNames|anyOf|oneOf/);
  });

  it('defaults a minimal spec the way the API server will', () => {
    const spec = edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' } });
    assert.equal(spec.replication.factor, 3);
    assert.equal(spec.ports.exposure, 'HostPort');
    assert.equal(spec.topology.zoneLabel, 'topology.kubernetes.io/zone');
  });
});
