import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzSetting, nearlyValid } from '../../agent/harness/fuzz.ts';
import { parse } from 'yaml';
import { edgeMeshSpecSchema, type EdgeMesh } from '../src/api/edgemesh.ts';
import { desiredChildren } from '../src/reconcile/desired.ts';
import { agentImage, isBlocker } from '../src/reconcile/agent-image.ts';
import { crdValidator } from '../harness/crd-validation.ts';

const RUNS = fuzzSetting('FUZZ_RUNS', 10_000, 1);
const SEED = fuzzSetting('FUZZ_SEED', 20_261_130);
const crd = parse(
  readFileSync(new URL('../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url), 'utf8'),
) as {
  spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] };
};
const validateCrd = crdValidator(crd.spec.versions[0]!.schema.openAPIV3Schema);

/** A valid spec with every section, and up to three of its fields (or new ones) set to anything. */
const BASE = {
  nodeSelector: { 'edgemesh.p2p.dev/storage': 'true' },
  controlPlane: { natsUrl: 'nats://nats.edgemesh-system:4222' },
  cache: { diskSize: '10Gi', memory: '256Mi', hostPath: '/var/lib/edgemesh', defaultTtlSeconds: 3600 },
  replication: { factor: 3, writeCopies: 2 },
  ports: { http: 7480, grpc: 7481, exposure: 'HostPort' },
  security: { mtls: true, revokedNodes: ['edge-9'], runAsUser: 65532 },
  access: {
    anonymous: 'none',
    rules: [{ subjects: ['system:serviceaccounts:shop'], verbs: ['read'], prefixes: [''] }],
  },
  origins: [{ prefix: 'cdn/', url: 'https://origin.example/assets/' }],
  capacity: [{ nodeSelector: { big: 'true' }, weight: 2 }],
};
const PATHS = [
  ['nodeSelector'],
  ['controlPlane', 'natsUrl'],
  ['controlPlane', 'credentialsSecret'],
  ['cache', 'diskSize'],
  ['cache', 'memory'],
  ['cache', 'hostPath'],
  ['cache', 'defaultTtlSeconds'],
  ['replication', 'factor'],
  ['replication', 'writeCopies'],
  ['ports', 'http'],
  ['ports', 'grpc'],
  ['ports', 'exposure'],
  ['security', 'mtls'],
  ['security', 'revokedNodes'],
  ['access', 'anonymous'],
  ['access', 'rules'],
  ['origins'],
  ['capacity'],
  ['topology', 'zoneLabel'],
  ['transfer', 'uploadBytesPerSecond'],
  ['agent', 'logLevel'],
  ['agent', 'image'],
  ['unknown'],
];
const value = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.constantFrom('1Gi', '1e3', '-1', '0', '9999999Ei', 'nats://x:1', 'https://o/', 'info', 'HostNetwork'),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }), { maxKeys: 3 }),
);
const spec = nearlyValid(BASE, PATHS, value);

describe(`EdgeMesh specs, fuzzed (fast-check, seed ${SEED}, ${RUNS} cases)`, () => {
  it('every spec is refused with issues or accepted, and every accepted one makes its children without an exception', () => {
    const tally = { accepted: 0, refused: 0, crdAccepted: 0 };
    fc.assert(
      fc.property(spec, (raw) => {
        validateCrd(raw); // the CRD's schema (CEL rules included) never throws either
        const parsed = edgeMeshSpecSchema.safeParse(raw);
        if (!parsed.success) {
          tally.refused++;
          return parsed.error.issues.length > 0;
        }
        tally.accepted++;
        const mesh = {
          apiVersion: 'edgemesh.p2p.dev/v1alpha1',
          kind: 'EdgeMesh',
          metadata: { name: 'fuzz', namespace: 'ns', uid: 'u', generation: 1 },
          spec: parsed.data,
        } as EdgeMesh;
        const image = agentImage(parsed.data, { image: 'registry.example/edgemesh:1' });
        if (isBlocker(image)) return false;
        const children = desiredChildren(mesh, new Map([['n', { zone: 'z', region: 'r', weight: 1 }]]), {
          image,
        });
        return children.length > 0;
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`# fuzz EdgeMesh specs: ${RUNS} cases, ${tally.accepted} accepted, ${tally.refused} refused`);
    assert.ok(
      tally.accepted > 0 && tally.refused > 0,
      'both paths taken: the generator reaches the reconciler',
    );
  });
});
