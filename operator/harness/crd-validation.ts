import { CelScalar, celEnv, celFunc, celMethod, parse, plan } from '@bufbuild/cel';
import { quantityNanos } from '../src/api/edgemesh.ts';
import { Ajv } from 'ajv';

/** Problems with an object (empty: valid). May fill in defaults, as the API server does. */
export type Validate = (object: { spec?: unknown; status?: unknown; [k: string]: unknown }) => string[];

type Schema = {
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string }[];
  [k: string]: unknown;
};

/**
 * The part of Kubernetes' CEL quantity library the CRD's rules use: `quantity(s)` and `compareTo`,
 * compared exactly as Kubernetes compares (quantityNanos). A quantity is its text here, so only
 * `compareTo` compares it (on a real server `<` between quantities is a type error; here it would
 * compare text).
 */
const QUANTITY_FUNCS = [
  celFunc('quantity', [CelScalar.STRING], CelScalar.STRING, (s) => {
    quantityNanos(s); // what is no quantity is an error, as on a real server
    return s;
  }),
  celMethod('compareTo', CelScalar.STRING, [CelScalar.STRING], CelScalar.INT, function (other) {
    const [a, b] = [quantityNanos(this), quantityNanos(other)];
    return a < b ? -1n : a > b ? 1n : 0n;
  }),
];

const ENV = celEnv({ funcs: QUANTITY_FUNCS });
/**
 * Each rule parsed and planned once, as kube-apiserver compiles a CRD's rules once when it is
 * stored (parsing them at every write cost the fake more CPU than the rest of a request).
 */
const programs = new Map<string, (bindings: { self: never }) => unknown>();
function program(rule: string): (bindings: { self: never }) => unknown {
  let made = programs.get(rule);
  if (!made) {
    made = plan(ENV, parse(rule));
    programs.set(rule, made);
  }
  return made;
}

/** CEL sees objects as maps. */
function toCel(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toCel);
  if (typeof value === 'object' && value !== null)
    return new Map(Object.entries(value).map(([k, v]) => [k, toCel(v)]));
  return value;
}

/** Evaluates every CEL rule of `schema` against `value`, as the API server does at admission. */
function celProblems(schema: Schema, value: unknown, path: string): string[] {
  if (value === undefined || value === null) return [];
  const problems: string[] = [];
  for (const { rule, message } of schema['x-kubernetes-validations'] ?? []) {
    let ok: unknown;
    try {
      ok = program(rule)({ self: toCel(value) as never });
    } catch (error) {
      ok = `error: ${(error as Error).message}`;
    }
    if (ok !== true)
      problems.push(`${path || '<root>'}: Invalid value: ${message ?? `failed rule: ${rule}`}`);
  }
  if (schema.properties && typeof value === 'object') {
    for (const [k, s] of Object.entries(schema.properties))
      problems.push(...celProblems(s, (value as Record<string, unknown>)[k], `${path}.${k}`));
  }
  if (schema.items && Array.isArray(value))
    value.forEach((v, i) => problems.push(...celProblems(schema.items!, v, `${path}[${i}]`)));
  return problems;
}

/** Drops what ajv cannot read from a Kubernetes structural schema. */
function forAjv(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(forAjv);
  if (typeof schema !== 'object' || schema === null) return schema;
  return Object.fromEntries(
    Object.entries(schema)
      .filter(([k]) => !k.startsWith('x-kubernetes-'))
      .map(([k, v]) => [
        k,
        k === 'properties'
          ? Object.fromEntries(Object.entries(v as object).map(([p, s]) => [p, forAjv(s)]))
          : forAjv(v),
      ]),
  );
}

/**
 * A validator for a custom resource from its CRD's openAPIV3Schema: applies the schema's defaults,
 * checks types, bounds, patterns and enums (ajv) and then the CEL rules (x-kubernetes-validations).
 */
export function crdValidator(openAPIV3Schema: Record<string, unknown>): Validate {
  const ajv = new Ajv({ useDefaults: true, allErrors: true, strict: false });
  const check = ajv.compile(forAjv(openAPIV3Schema) as object);
  return (object) => {
    if (!check(object))
      return (check.errors ?? []).map((e) => `${e.instancePath || '<root>'} ${e.message ?? 'is invalid'}`);
    return celProblems(openAPIV3Schema, object, '');
  };
}

/**
 * Problems a real API server finds in a CRD's schema itself: every `default` must pass the CEL
 * rules of the field it defaults, evaluated on the default as written (the server does not fill
 * in nested defaults first). A CRD with such a default is refused at creation.
 */
export function crdDefaultProblems(schema: Schema, path = ''): string[] {
  const problems: string[] = [];
  if (schema.default !== undefined)
    problems.push(
      ...celProblems(
        { 'x-kubernetes-validations': schema['x-kubernetes-validations'] },
        schema.default,
        path,
      ).map((p) => `${p} (the default)`),
    );
  for (const [k, s] of Object.entries(schema.properties ?? {}))
    problems.push(...crdDefaultProblems(s, `${path}.${k}`));
  if (schema.items) problems.push(...crdDefaultProblems(schema.items, `${path}[]`));
  return problems;
}
