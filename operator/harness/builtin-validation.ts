type Model = new (o: object) => { validate(): void };

/**
 * Checks built-in objects against Kubernetes' OpenAPI schemas, with the maintained models of the
 * `kubernetes-models` package (one class per kind, built from the upstream schema). Loads the models
 * of `kinds` up front (the Prometheus Operator's too, for a ServiceMonitor); a kind without a model
 * is refused, never passed unchecked.
 */
export async function builtinValidator(
  kinds: readonly { group: string; version: string; kind: string }[],
): Promise<(group: string, version: string, kind: string, object: object) => string[]> {
  const models = new Map<string, Model>();
  const id = (group: string, version: string, kind: string) => `${group}/${version}/${kind}`;
  for (const { group, version, kind } of kinds) {
    // Kubernetes' own kinds, then the Prometheus Operator's (ServiceMonitor).
    const path = `${group ? `${group}/` : ''}${version}/${kind}`;
    for (const from of [`kubernetes-models/${path}`, `@kubernetes-models/prometheus-operator/${path}`]) {
      try {
        const module = (await import(from)) as Record<string, Model>;
        if (module[kind]) models.set(id(group, version, kind), module[kind]);
        break;
      } catch {
        // not in this package
      }
    }
  }
  return (group, version, kind, object) => {
    const Model = models.get(id(group, version, kind));
    // A kind no model knows is an error, not a pass: a check that cannot fail is no check.
    if (!Model) return [`no schema known for ${group || 'core'}/${version} ${kind}`];
    try {
      new Model(object).validate();
      return [];
    } catch (error) {
      return [(error as Error).message];
    }
  };
}
