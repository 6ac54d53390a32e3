import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CRD_FILE, edgeMeshCrd, edgeMeshCrdYaml } from './crd.ts';
import { edgeMeshSpecSchema, quantityBytes, quantityNanos } from './edgemesh.ts';
import { type FieldSchema, schemaFields } from '../../harness/schema-fields.ts';

type Version = {
  schema: { openAPIV3Schema: FieldSchema };
  additionalPrinterColumns: { name: string; jsonPath: string; priority?: number }[];
};
const crd = edgeMeshCrd() as { spec: { names: { categories?: string[] }; versions: Version[] } };
const version = crd.spec.versions[0]!;

describe('the EdgeMesh CRD', () => {
  it('reads quantities exactly, as Kubernetes does (finer than a billionth rounds up)', () => {
    for (const [q, nanos] of [
      ['64Mi', 67_108_864n * 10n ** 9n],
      ['0.0625Gi', 67_108_864n * 10n ** 9n],
      ['67108864000m', 67_108_864n * 10n ** 9n],
      ['67108863.9999999991', 67_108_864n * 10n ** 9n],
      ['67108863.999999999', 67_108_863_999_999_999n],
      ['1125899906842624.5', 1_125_899_906_842_624_500_000_000n],
      ['1.5k', 1500n * 10n ** 9n],
      ['1m', 10n ** 6n],
    ] as const)
      assert.equal(quantityNanos(q), nanos, q);
    assert.equal(quantityBytes('1.5Ki'), 1536);
    assert.equal(quantityBytes('1500m'), 1);
    assert.throws(() => quantityNanos('1e3'), RangeError);
  });

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
      // metadata is ObjectMeta: an API server refuses any more said of it than bounds on its name.
      .filter(([path, schema]) => !path.startsWith('metadata') && !schema.description?.trim())
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
