import type { AuditEvent } from './control-plane.ts';

/** One rbac.authorization.k8s.io/v1 PolicyRule (resource rules only). */
export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** A granted permission, one verb on one resource of one group: `group/resource:verb`. */
export type Grant = string;

/**
 * What an audited request needed: its group, resource (with /subresource) and verb; a server-side
 * apply that created its object (201) was also authorized for `create`, a check the API server
 * makes inside the request, so it has no audit event of its own.
 */
export function needed(event: AuditEvent): Grant[] {
  const ref = event.objectRef;
  if (!ref?.resource) return []; // a non-resource URL (discovery, /version)
  const resource = `${ref.apiGroup ?? ''}/${ref.subresource ? `${ref.resource}/${ref.subresource}` : ref.resource}`;
  const created = event.verb === 'patch' && event.responseStatus?.code === 201;
  return [`${resource}:${event.verb}`, ...(created ? [`${resource}:create`] : [])];
}

/** Every grant a set of rules spells out (no wildcards: the chart test refuses them). */
export function grants(rules: readonly PolicyRule[]): Grant[] {
  return rules.flatMap((rule) =>
    (rule.apiGroups ?? []).flatMap((group) =>
      (rule.resources ?? []).flatMap((resource) => rule.verbs.map((verb) => `${group}/${resource}:${verb}`)),
    ),
  );
}

/**
 * The requests one user made, from an audit log with one ResponseComplete (or, for a watch that
 * is still open, ResponseStarted) event per request.
 */
export function requestsOf(events: readonly AuditEvent[], username: string): AuditEvent[] {
  return events.filter(
    (e) => e.user.username === username && (e.stage === 'ResponseComplete' || e.stage === 'ResponseStarted'),
  );
}
