/** A JSON Schema (OpenAPI v3, as in a CRD), as far as walking its fields needs. */
export type FieldSchema = {
  description?: string;
  properties?: Record<string, FieldSchema>;
  items?: FieldSchema;
  additionalProperties?: FieldSchema | boolean;
  [k: string]: unknown;
};

/**
 * Every field of a schema, as dotted paths (`[]` for an array's items, `{}` for a map's values),
 * with its schema, parents before their fields.
 */
export function schemaFields(schema: FieldSchema, path = ''): [string, FieldSchema][] {
  const out: [string, FieldSchema][] = [];
  for (const [name, field] of Object.entries(schema.properties ?? {})) {
    const at = path ? `${path}.${name}` : name;
    out.push([at, field], ...schemaFields(field, at));
  }
  if (schema.items) out.push(...schemaFields(schema.items, `${path}[]`));
  if (typeof schema.additionalProperties === 'object')
    out.push(...schemaFields(schema.additionalProperties, `${path}{}`));
  return out;
}

/** Whether a field has fields of its own (an object with properties, an array of such objects). */
export const hasSubfields = (schema: FieldSchema): boolean =>
  Object.keys(schema.properties ?? {}).length > 0 ||
  (schema.items !== undefined && hasSubfields(schema.items));
