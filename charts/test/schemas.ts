import { builtinValidator } from '../../operator/harness/builtin-validation.ts';
import type { K8sObject } from '../lib/helm.ts';

const groupVersion = (o: K8sObject) => {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  return { group: group!, version: version!, kind: o.kind };
};

/**
 * Every problem Kubernetes' schemas find in `rendered`, as `Kind name: message`; empty when all pass.
 * A kind without a known schema is a problem too (builtinValidator), never a silent pass.
 */
export async function schemaProblems(rendered: readonly K8sObject[]): Promise<string[]> {
  const validate = await builtinValidator(rendered.map(groupVersion));
  return rendered.flatMap((o) => {
    const { group, version, kind } = groupVersion(o);
    return validate(group, version, kind, o).map((p) => `${o.kind} ${o.metadata.name}: ${p}`);
  });
}
