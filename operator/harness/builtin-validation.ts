type Model = new (o: object) => { validate(): void };

/**
 * Checks built-in objects against Kubernetes' OpenAPI schemas, with the maintained models of the
 * `kubernetes-models` package (one class per kind, built from the upstream schema). Loads the models
 * of `kinds` up front; a kind without a model passes unchecked.
 */
export async function builtinValidator(
  kinds: readonly { group: string; version: string; kind: string }[],
): Promise<(group: string, version: string, kind: string, object: object) => string[]> {
  const models = new Map<string, Model>();
  const id = (group: string, version: string, kind: string) => `${group}/${version}/${kind}`;
  for (const { group, version, kind } of kinds) {
    try {
      const module = (await import(
        `kubernetes-models/${group ? `${group}/` : ''}${version}/${kind}`
      )) as Record<string, Model>;
      if (module[kind]) models.set(id(group, version, kind), module[kind]);
    } catch {
      // no model for this kind: nothing to check against
    }
  }
  return (group, version, kind, object) => {
    const Model = models.get(id(group, version, kind));
    if (!Model) return [];
    try {
      new Model(object).validate();
      return [];
    } catch (error) {
      return [(error as Error).message];
    }
  };
}
