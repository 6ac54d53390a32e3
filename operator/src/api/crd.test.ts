import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CRD_FILE, edgeMeshCrd, edgeMeshCrdYaml } from './crd.ts';
import { edgeMeshSpecSchema } from './edgemesh.ts';
import { type FieldSchema, schemaFields } from '../../harness/schema-fields.ts';

type Version = {
  schema: { openAPIV3Schema: FieldSchema };
  additionalPrinterColumns: { name: string; jsonPath: string; priority?: number }[];
};
const crd = edgeMeshCrd() as { spec: { names: { categories?: string[] }; versions: Version[] } };
const version = crd.spec.versions[0]!;

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
    assert.equal(spec.ports.exposure, 'Service');
    assert.equal(spec.networkPolicy.enabled, true);
    assert.equal(spec.topology.zoneLabel, 'topology.kubernetes.io/zone');
  });

  it('describes every field, so that `kubectl explain` explains each', () => {
    const fields = schemaFields(version.schema.openAPIV3Schema);
    assert.ok(fields.length > 80, `${fields.length} fields`);
    const bare = fields
      // metadata is ObjectMeta: an API server refuses any more said of it.
      .filter(([path, schema]) => path !== 'metadata' && !schema.description?.trim())
      .map(([path]) => path);
    assert.deepEqual(bare, [], 'fields without a description');
  });

  it('stores no default for the agent image or its pull policy (an operator upgrade rolls the agents)', () => {
    const agent = version.schema.openAPIV3Schema.properties!.spec!.properties!.agent!;
    for (const field of ['image', 'imagePullPolicy', 'imagePullSecrets'])
      assert.equal(agent.properties![field]!.default, undefined, field);
    assert.equal((agent.default as Record<string, unknown>).image, undefined, 'nor in agent’s own default');
  });

  it('keys conditions by type, lists a category, and says why at priority 1 (kubectl get -o wide)', () => {
    const conditions = version.schema.openAPIV3Schema.properties!.status!.properties!.conditions!;
    assert.equal(conditions['x-kubernetes-list-type'], 'map');
    assert.deepEqual(conditions['x-kubernetes-list-map-keys'], ['type']);
    assert.ok(conditions.items!.properties!.type, 'the key is a field of each condition');
    assert.deepEqual(crd.spec.names.categories, ['edgemesh']);
    const wide = version.additionalPrinterColumns.filter((c) => c.priority === 1);
    assert.deepEqual(
      wide.map((c) => [c.name, c.jsonPath]),
      [
        ['Reason', '.status.conditions[?(@.type=="Ready")].reason'],
        ['Message', '.status.conditions[?(@.type=="Ready")].message'],
      ],
    );
  });
});
