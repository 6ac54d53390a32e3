import { z } from 'zod';
import { stringify } from 'yaml';
import { edgeMeshSpecSchema, edgeMeshStatusSchema, GROUP, KIND, PLURAL, VERSION } from './edgemesh.ts';

type Schema = Record<string, unknown>;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A zod JSON Schema made structural, as Kubernetes requires of a CRD: no `$schema`, no
 * `additionalProperties: false` (unknown fields are pruned instead), no `propertyNames`.
 */
function structural(schema: Schema): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === '$schema' || key === 'propertyNames') continue;
    if (key === 'additionalProperties' && value === false) continue;
    if (key === 'properties') {
      out[key] = Object.fromEntries(
        Object.entries(value as Record<string, Schema>).map(([k, v]) => [k, structural(v)]),
      );
    } else if ((key === 'items' || key === 'additionalProperties') && typeof value === 'object') {
      out[key] = structural(value as Schema);
    } else {
      out[key] = value;
    }
  }
  // zod bounds every integer to the safe range; Kubernetes needs no such bound.
  if (out.minimum === Number.MIN_SAFE_INTEGER) delete out.minimum;
  if (out.maximum === Number.MAX_SAFE_INTEGER) delete out.maximum;
  // A free-form object (affinity) keeps its fields rather than having them pruned.
  if (out['x-kubernetes-preserve-unknown-fields'] === true) delete out.additionalProperties;
  // An object's default (zod's prefault `{}`) carries its properties' defaults: a real API server
  // checks a default against the object's CEL rules as it is written, so `{}` fails a rule that
  // reads a defaulted field ("no such key").
  if (isRecord(out.default) && isRecord(out.properties)) {
    const filled = { ...out.default };
    for (const [name, property] of Object.entries(out.properties as Record<string, Schema>))
      if (!(name in filled) && property.default !== undefined)
        filled[name] = structuredClone(property.default);
    out.default = filled;
  }
  return out;
}

const toSchema = (schema: z.ZodType) => structural(z.toJSONSchema(schema, { io: 'input' }));

/** A printer column's path to a field of the Ready condition. */
const READY = (field: string) => `.status.conditions[?(@.type=="Ready")].${field}`;

/** The longest mesh name: its Service, `edgemesh-<name>`, is a DNS-1035 label of at most 63 characters. */
export const MAX_MESH_NAME = 63 - 'edgemesh-'.length;
/** What a mesh's name may be (with at most MAX_MESH_NAME characters). */
export const MESH_NAME_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';

/** The EdgeMesh CustomResourceDefinition, from the schemas in edgemesh.ts. */
export function edgeMeshCrd(): Schema {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: 'edgemesh',
        shortNames: ['em'],
        categories: ['edgemesh'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'Ready', type: 'string', jsonPath: READY('status') },
            { name: 'Nodes', type: 'integer', jsonPath: '.status.desiredAgents' },
            { name: 'Ready agents', type: 'integer', jsonPath: '.status.readyAgents' },
            { name: 'Reporting', type: 'integer', jsonPath: '.status.reportingAgents' },
            { name: 'Hit ratio', type: 'string', jsonPath: '.status.hitRatio' },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
            // `kubectl get em -o wide`: why a mesh is (not) Ready.
            { name: 'Reason', type: 'string', priority: 1, jsonPath: READY('reason') },
            { name: 'Message', type: 'string', priority: 1, jsonPath: READY('message') },
          ],
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: 'A mesh of EdgeMesh agents on the nodes it selects.',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string', description: `The API version: ${GROUP}/${VERSION}.` },
                kind: { type: 'string', description: `The kind: ${KIND}.` },
                // The API server allows nothing here but bounds on the name (`kubectl explain` shows
                // ObjectMeta's own text). The mesh's name is in its children's (`edgemesh-<name>`: a
                // Service's is a DNS-1035 label of at most 63 characters) and in a label value. A bound
                // on a field, not a rule on the object, so that a mesh stored before it keeps its
                // status writes (Kubernetes lets an unchanged field through a tightened schema; a rule
                // on the whole object would be judged again at every status write).
                metadata: {
                  type: 'object',
                  properties: {
                    name: {
                      type: 'string',
                      maxLength: MAX_MESH_NAME,
                      pattern: MESH_NAME_PATTERN,
                    },
                  },
                },
                spec: toSchema(edgeMeshSpecSchema),
                status: toSchema(edgeMeshStatusSchema),
              },
            },
          },
        },
      ],
    },
  };
}

/** The CRD file's text, as `npm run crds` writes it to crds/. */
export function edgeMeshCrdYaml(): string {
  return `# Generated from operator/src/api/edgemesh.ts by \`npm run crds\`. Do not edit.\n${stringify(edgeMeshCrd(), { lineWidth: 0 })}`;
}

export const CRD_FILE = new URL('../../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url);
