import { once } from 'node:events';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { crdDefaultProblems, crdValidator, type Validate } from './crd-validation.ts';
import { builtinValidator } from './builtin-validation.ts';

/**
 * An in-process Kubernetes API server for the operator's tests and benchmark, served over HTTP to
 * the real @kubernetes/client-node. It behaves like kube-apiserver in what the operator relies on:
 * - discovery (/api, /apis, resource lists; the ServiceAccount issuer's OpenID configuration and
 *   keys), list, get, create, update, delete, merge patch and
 *   server-side apply (field manager required; create or merge; fields a manager stops applying are
 *   removed; a no-op apply changes nothing, not even resourceVersion);
 * - resourceVersion on every write, 409 Conflict on a stale update, 409 AlreadyExists on create;
 * - metadata.generation bumped on spec changes only; the status subresource kept apart (writes to
 *   the object ignore status, writes to /status change only status);
 * - watches from a resourceVersion, with bookmarks, and 410 Gone once that version is compacted;
 * - EdgeMesh objects defaulted and validated against the CRD's own schema from crds/ (CEL rules
 *   included); built-in objects validated against Kubernetes' OpenAPI schemas (kubernetes-models);
 * - finalizers and deletionTimestamp; garbage collection of dependents through ownerReferences;
 * - fault injection: failing requests with a status (409, 429, 500), slow responses, dropped watches.
 * Simplifications: apply replaces lists whole (no list-map merge keys); no field selectors; labels
 * selectors support `k=v`, `k!=v` and `k`.
 */

/** The ServiceAccount token issuer kube-apiserver names by default (--service-account-issuer). */
const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  /** Has a status subresource. */
  status: boolean;
}

const TYPES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false, status: true },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, status: true },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, status: true },
  {
    group: '',
    version: 'v1',
    plural: 'serviceaccounts',
    kind: 'ServiceAccount',
    namespaced: true,
    status: false,
  },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, status: false },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true, status: true },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    plural: 'roles',
    kind: 'Role',
    namespaced: true,
    status: false,
  },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    plural: 'rolebindings',
    kind: 'RoleBinding',
    namespaced: true,
    status: false,
  },
  {
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'networkpolicies',
    kind: 'NetworkPolicy',
    namespaced: true,
    status: false,
  },
  {
    group: 'coordination.k8s.io',
    version: 'v1',
    plural: 'leases',
    kind: 'Lease',
    namespaced: true,
    status: false,
  },
  { group: 'events.k8s.io', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, status: false },
  {
    group: 'edgemesh.p2p.dev',
    version: 'v1alpha1',
    plural: 'edgemeshes',
    kind: 'EdgeMesh',
    namespaced: true,
    status: true,
  },
];

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    finalizers?: string[];
    ownerReferences?: { uid: string; kind: string; name: string }[];
    managedFields?: unknown[];
    [k: string]: unknown;
  };
  [k: string]: unknown;
};

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  typeKey: string;
  object: Obj;
}

export interface Fault {
  /** Which requests: by method and a substring or pattern of the path. */
  method?: string;
  path?: string | RegExp;
  /** Answer with this status (and a Status body) instead of serving. */
  status?: number;
  /** Wait this long before serving (or failing). */
  delayMs?: number;
  /** How many matching requests; Infinity for all. */
  times: number;
}

export interface FakeApiServer {
  url: string;
  /** Kubeconfig YAML pointing at this server. */
  kubeconfig: string;
  /** Requests served, by method. */
  stats: { requests: number; byMethod: Record<string, number> };
  /** `group` tells apart same-named resources (core `events` from events.k8s.io `events`). */
  get(plural: string, namespace: string | undefined, name: string, group?: string): Obj | undefined;
  list(plural: string, namespace?: string, group?: string): Obj[];
  /** Creates or replaces an object as a client would, bypassing faults (test set-up). */
  put(object: Obj): Obj;
  remove(plural: string, namespace: string | undefined, name: string): void;
  /** Injects a fault. */
  fault(fault: Fault): void;
  /** Closes every open watch, as a restarting API server or a load balancer would. */
  dropWatches(): void;
  /** Forgets watch history up to now: watches from older versions get 410 Gone. */
  compact(): void;
  close(): Promise<void>;
}

class HttpError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

const typeKey = (t: ResourceType) => `${t.group}/${t.plural}`;
const apiVersionOf = (t: ResourceType) => (t.group ? `${t.group}/${t.version}` : t.version);
const keyOf = (ns: string | undefined, name: string) => `${ns ?? ''}/${name}`;
const clone = <T>(value: T): T => structuredClone(value);
const isPlain = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 7386 merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlain(patch)) return clone(patch);
  const out: Record<string, unknown> = isPlain(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Removes from `target` the paths present in `previous` but not in `next` (fields a manager dropped). */
function removeDropped(target: Record<string, unknown>, previous: unknown, next: unknown): void {
  if (!isPlain(previous)) return;
  for (const [k, v] of Object.entries(previous)) {
    if (!isPlain(next) || !(k in next)) delete target[k];
    else if (isPlain(v) && isPlain(target[k])) removeDropped(target[k], v, next[k]);
  }
}

/** A copy with every object's keys in sorted order, as Go's encoding/json writes a map. */
function sortKeys<T>(value: T): T {
  if (Array.isArray(value)) return value.map(sortKeys) as T;
  if (!isPlain(value)) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, sortKeys(value[k])]),
  ) as T;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/**
 * metadata.name and generateName as ObjectMeta validation checks them for most kinds: a DNS
 * subdomain of at most 253 characters; a generateName prefix may end in '-' only.
 */
function nameProblems(meta: { name?: string; generateName?: string }): string[] {
  const problems: string[] = [];
  const check = (field: string, value: string) => {
    if (value.length > 253 || !DNS_SUBDOMAIN.test(value))
      problems.push(
        `metadata.${field}: Invalid value: "${value}": a lowercase RFC 1123 subdomain is required`,
      );
  };
  if (meta.name !== undefined) check('name', meta.name);
  if (meta.generateName !== undefined) check('generateName', meta.generateName.replace(/-$/, 'a'));
  return problems;
}

/** Everything but metadata and status: what metadata.generation tracks. */
const specOf = (o: Obj) =>
  JSON.stringify(
    sortKeys({ ...o, metadata: undefined, status: undefined, apiVersion: undefined, kind: undefined }),
  );

function matchesSelector(labels: Record<string, string> | undefined, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const t = term.trim();
    const ne = /^([^!=]+)!=(.*)$/.exec(t);
    if (ne) return labels?.[ne[1]!] !== ne[2];
    const eq = /^([^=]+)==?(.*)$/.exec(t);
    if (eq) return labels?.[eq[1]!] === eq[2];
    return labels?.[t] !== undefined;
  });
}

export async function startFakeApiServer(
  opts: { crdFile?: URL; bookmarkMs?: number; historyLimit?: number; host?: string } = {},
): Promise<FakeApiServer> {
  const crdFile = opts.crdFile ?? new URL('../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url);
  const crd = parseYaml(readFileSync(crdFile, 'utf8')) as {
    spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] };
  };
  const refused = crdDefaultProblems(crd.spec.versions[0]!.schema.openAPIV3Schema);
  if (refused.length > 0) throw new Error(`the CRD is invalid: ${refused.join('; ')}`);
  const validators = new Map<string, Validate>([
    ['edgemesh.p2p.dev/edgemeshes', crdValidator(crd.spec.versions[0]!.schema.openAPIV3Schema)],
  ]);
  const builtin = await builtinValidator(TYPES.filter((t) => !t.group.endsWith('.p2p.dev')));
  const store = new Map<string, Map<string, Obj>>(TYPES.map((t) => [typeKey(t), new Map()]));
  /** What each field manager last applied, per object uid. */
  const applied = new Map<string, Map<string, unknown>>();
  let rv = 1;
  let history: WatchEvent[] = [];
  let compactedAt = 0;
  const historyLimit = opts.historyLimit ?? 10_000;
  const watchers = new Set<{ t: ResourceType; ns?: string; selector: string | null; res: ServerResponse }>();
  const faults: Fault[] = [];
  const stats = { requests: 0, byMethod: {} as Record<string, number> };
  const tokenKey = {
    use: 'sig',
    alg: 'ES256',
    kid: randomUUID(),
    ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }),
  };

  const record = (t: ResourceType, type: WatchEvent['type'], object: Obj) => {
    const event: WatchEvent = {
      rv: Number(object.metadata.resourceVersion),
      type,
      typeKey: typeKey(t),
      object: clone(object),
    };
    history.push(event);
    if (history.length > historyLimit) {
      compactedAt = history[history.length - historyLimit - 1]!.rv;
      history = history.slice(-historyLimit);
    }
    for (const w of watchers) {
      if (typeKey(w.t) !== event.typeKey) continue;
      if (w.ns && w.ns !== object.metadata.namespace) continue;
      if (!matchesSelector(object.metadata.labels, w.selector)) continue;
      w.res.write(`${JSON.stringify({ type, object })}\n`);
    }
  };

  const validate = (t: ResourceType, object: Obj) => {
    const custom = validators.get(typeKey(t));
    const problems = [
      ...nameProblems(object.metadata),
      ...(custom ? custom(object) : builtin(t.group, t.version, t.kind, object)),
    ];
    if (problems.length > 0)
      throw new HttpError(
        422,
        'Invalid',
        `${t.kind} "${object.metadata.name}" is invalid: ${problems.join('; ')}`,
      );
  };

  /** Stores `next` as the new state of an object (create when `prev` is undefined). */
  const commit = (t: ResourceType, prev: Obj | undefined, next: Obj): Obj => {
    const objects = store.get(typeKey(t))!;
    const key = keyOf(next.metadata.namespace, next.metadata.name);
    next.apiVersion = apiVersionOf(t);
    next.kind = t.kind;
    if (!prev) {
      next.metadata.uid = randomUUID();
      next.metadata.creationTimestamp = new Date().toISOString();
      next.metadata.generation = 1;
    } else {
      next.metadata.uid = prev.metadata.uid;
      next.metadata.creationTimestamp = prev.metadata.creationTimestamp;
      next.metadata.generation = (prev.metadata.generation ?? 1) + (specOf(prev) === specOf(next) ? 0 : 1);
      if (prev.metadata.deletionTimestamp) next.metadata.deletionTimestamp = prev.metadata.deletionTimestamp;
      const same =
        JSON.stringify(sortKeys({ ...next, metadata: { ...next.metadata, resourceVersion: undefined } })) ===
        JSON.stringify(sortKeys({ ...prev, metadata: { ...prev.metadata, resourceVersion: undefined } }));
      if (same) return prev; // a no-op write changes nothing, not even resourceVersion
    }
    next.metadata.resourceVersion = String(++rv);
    if (prev?.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      objects.delete(key);
      record(t, 'DELETED', next);
      collectGarbage(next.metadata.uid!);
      return next;
    }
    // A custom resource is stored and served as unstructured JSON, which Go encodes with its keys
    // sorted: clients see that order, not the order they wrote.
    if (validators.has(typeKey(t))) next = sortKeys(next);
    objects.set(key, next);
    record(t, prev ? 'MODIFIED' : 'ADDED', next);
    return next;
  };

  const remove = (t: ResourceType, object: Obj): Obj => {
    if ((object.metadata.finalizers ?? []).length > 0) {
      if (object.metadata.deletionTimestamp) return object;
      const next = clone(object);
      next.metadata.deletionTimestamp = new Date().toISOString();
      next.metadata.resourceVersion = String(++rv);
      store.get(typeKey(t))!.set(keyOf(object.metadata.namespace, object.metadata.name), next);
      record(t, 'MODIFIED', next);
      return next;
    }
    store.get(typeKey(t))!.delete(keyOf(object.metadata.namespace, object.metadata.name));
    const gone = clone(object);
    gone.metadata.resourceVersion = String(++rv);
    record(t, 'DELETED', gone);
    applied.delete(object.metadata.uid!);
    collectGarbage(object.metadata.uid!);
    return gone;
  };

  /** Background cascading deletion: dependents whose owner is gone go too. */
  const collectGarbage = (uid: string) => {
    for (const t of TYPES) {
      for (const o of [...store.get(typeKey(t))!.values()]) {
        if (o.metadata.ownerReferences?.some((r) => r.uid === uid)) remove(t, o);
      }
    }
  };

  const resolve = (url: URL) => {
    const parts = url.pathname.split('/').filter(Boolean);
    let group = '';
    let version: string;
    let rest: string[];
    if (parts[0] === 'api') [version, rest] = [parts[1]!, parts.slice(2)];
    else if (parts[0] === 'apis') [group, version, rest] = [parts[1]!, parts[2]!, parts.slice(3)];
    else return undefined;
    let namespace: string | undefined;
    if (
      rest[0] === 'namespaces' &&
      rest.length >= 3 &&
      TYPES.some((t) => t.plural === rest[2] && t.namespaced)
    ) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const t = TYPES.find((x) => x.group === group && x.version === version && x.plural === rest[0]);
    if (!t) return { group, version, t: undefined, namespace, name: undefined, sub: undefined, rest };
    return { group, version, t, namespace, name: rest[1], sub: rest[2], rest };
  };

  const discovery = (url: URL): unknown => {
    // ServiceAccount token discovery, as kube-apiserver serves it (the operator hands the keys to
    // agents, which check their clients' tokens with them). The fake issues no tokens itself.
    if (url.pathname === '/.well-known/openid-configuration')
      return {
        issuer: SERVICE_ACCOUNT_ISSUER,
        jwks_uri: `${SERVICE_ACCOUNT_ISSUER}/openid/v1/jwks`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['ES256'],
      };
    if (url.pathname === '/openid/v1/jwks') return { keys: [tokenKey] };
    if (url.pathname === '/api')
      return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
    if (url.pathname === '/apis') {
      const groups = [...new Set(TYPES.filter((t) => t.group).map((t) => `${t.group}/${t.version}`))];
      return {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: groups.map((gv) => {
          const [name, version] = gv.split('/') as [string, string];
          return {
            name,
            versions: [{ groupVersion: gv, version }],
            preferredVersion: { groupVersion: gv, version },
          };
        }),
      };
    }
    const r = resolve(url);
    if (!r || r.rest.length > 0) return undefined;
    const resources = TYPES.filter((t) => t.group === r.group && t.version === r.version);
    if (resources.length === 0) return undefined;
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: r.group ? `${r.group}/${r.version}` : r.version,
      resources: resources.flatMap((t) => [
        {
          name: t.plural,
          singularName: t.kind.toLowerCase(),
          namespaced: t.namespaced,
          kind: t.kind,
          verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
        },
        ...(t.status
          ? [
              {
                name: `${t.plural}/status`,
                namespaced: t.namespaced,
                kind: t.kind,
                verbs: ['get', 'patch', 'update'],
              },
            ]
          : []),
      ]),
    };
  };

  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if (!text) return undefined;
    try {
      if (!(req.headers['content-type'] ?? '').includes('yaml')) return JSON.parse(text);
      try {
        return JSON.parse(text); // JSON is YAML, and most clients send it
      } catch {
        return parseYaml(text);
      }
    } catch (error) {
      throw new HttpError(400, 'BadRequest', `could not parse the body: ${(error as Error).message}`);
    }
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const statusBody = (code: number, reason: string, message: string) => ({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  });

  const watch = (res: ServerResponse, t: ResourceType, ns: string | undefined, url: URL) => {
    const from = Number(url.searchParams.get('resourceVersion') ?? '0');
    const selector = url.searchParams.get('labelSelector');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders(); // a watch answers at once, events or not
    if (from > 0 && from < compactedAt) {
      const gone = statusBody(410, 'Expired', `too old resource version: ${from} (${compactedAt})`);
      res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
      return;
    }
    const w = { t, ns, selector, res };
    for (const e of history) {
      if (e.rv <= from || e.typeKey !== typeKey(t)) continue;
      if (ns && e.object.metadata.namespace !== ns) continue;
      if (!matchesSelector(e.object.metadata.labels, selector)) continue;
      res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    }
    watchers.add(w);
    const bookmarks =
      url.searchParams.get('allowWatchBookmarks') === 'true'
        ? setInterval(() => {
            res.write(
              `${JSON.stringify({ type: 'BOOKMARK', object: { kind: t.kind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(rv) } } })}\n`,
            );
          }, opts.bookmarkMs ?? 1000)
        : undefined;
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      watchers.delete(w);
      clearInterval(bookmarks);
      clearTimeout(timer);
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    stats.requests++;
    stats.byMethod[method] = (stats.byMethod[method] ?? 0) + 1;
    const fault = faults.find(
      (f) =>
        f.times > 0 &&
        (!f.method || f.method === method) &&
        (!f.path || (typeof f.path === 'string' ? url.pathname.includes(f.path) : f.path.test(url.pathname))),
    );
    if (fault) {
      fault.times--;
      if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
      if (fault.status) {
        if (fault.status === 429) res.setHeader('retry-after', '1');
        return send(res, fault.status, statusBody(fault.status, 'InjectedFault', `injected ${fault.status}`));
      }
    }
    if (method === 'GET') {
      const d = discovery(url);
      if (d) return send(res, 200, d);
    }
    const r = resolve(url);
    if (!r?.t)
      throw new HttpError(
        404,
        'NotFound',
        `the server could not find the requested resource ${url.pathname}`,
      );
    const { t, namespace, name, sub } = r;
    const objects = store.get(typeKey(t))!;
    if (t.namespaced && name !== undefined && !namespace)
      throw new HttpError(404, 'NotFound', 'a namespaced resource needs a namespace');
    const existing = name === undefined ? undefined : objects.get(keyOf(namespace, name));
    const notFound = () => new HttpError(404, 'NotFound', `${t.plural} "${name}" not found`);

    if (method === 'GET' && name === undefined) {
      if (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1')
        return watch(res, t, namespace, url);
      const selector = url.searchParams.get('labelSelector');
      const items = [...objects.values()].filter(
        (o) =>
          (!namespace || o.metadata.namespace === namespace) && matchesSelector(o.metadata.labels, selector),
      );
      return send(res, 200, {
        kind: `${t.kind}List`,
        apiVersion: apiVersionOf(t),
        metadata: { resourceVersion: String(rv) },
        items,
      });
    }
    if (method === 'GET') {
      if (!existing) throw notFound();
      return send(res, 200, existing);
    }
    if (method === 'DELETE') {
      if (!existing) throw notFound();
      return send(res, 200, remove(t, existing));
    }
    const body = (await readBody(req)) as Obj | undefined;
    if (!isPlain(body)) throw new HttpError(400, 'BadRequest', 'a JSON or YAML object is required');
    if (method === 'POST' && name === undefined) {
      const object = clone(body);
      if (!isPlain(object.metadata) || !object.metadata.name)
        throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
      if (objects.has(keyOf(namespace, object.metadata.name)))
        throw new HttpError(409, 'AlreadyExists', `${t.plural} "${object.metadata.name}" already exists`);
      object.metadata.namespace = t.namespaced ? namespace : undefined;
      if (t.status && t.group === 'edgemesh.p2p.dev') delete object.status;
      validate(t, object);
      return send(res, 201, commit(t, undefined, object));
    }
    if (name === undefined) throw new HttpError(405, 'MethodNotAllowed', `${method} needs a name`);
    if (sub !== undefined && (sub !== 'status' || !t.status))
      throw new HttpError(404, 'NotFound', `no subresource ${sub}`);

    let next: Obj;
    if (method === 'PUT') {
      if (!existing) throw notFound();
      const want = body.metadata?.resourceVersion;
      if (!want)
        throw new HttpError(
          422,
          'Invalid',
          'metadata.resourceVersion: Invalid value: 0: must be specified for an update',
        );
      if (want !== existing.metadata.resourceVersion)
        throw new HttpError(
          409,
          'Conflict',
          `Operation cannot be fulfilled on ${t.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        );
      next = clone(body);
    } else if (method === 'PATCH') {
      const type = req.headers['content-type'] ?? '';
      if (type.includes('apply-patch')) {
        const manager = url.searchParams.get('fieldManager');
        if (!manager)
          throw new HttpError(
            400,
            'BadRequest',
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
          );
        if (!existing) {
          if (sub) throw notFound();
          const created = clone(body);
          created.metadata.namespace = t.namespaced ? namespace : undefined;
          created.metadata.managedFields = [{ manager, operation: 'Apply', apiVersion: apiVersionOf(t) }];
          validate(t, created);
          const stored = commit(t, undefined, created);
          applied.set(stored.metadata.uid!, new Map([[manager, clone(body)]]));
          return send(res, 201, stored);
        }
        const managers = applied.get(existing.metadata.uid!) ?? new Map<string, unknown>();
        next = mergePatch(existing, body) as Obj;
        removeDropped(next, managers.get(manager), body);
        managers.set(manager, clone(body));
        applied.set(existing.metadata.uid!, managers);
        const fields = (existing.metadata.managedFields ?? []) as { manager: string }[];
        if (!fields.some((f) => f.manager === manager))
          next.metadata.managedFields = [
            ...fields,
            { manager, operation: 'Apply', apiVersion: apiVersionOf(t) },
          ];
      } else if (
        type.includes('merge-patch') ||
        (type.includes('strategic-merge-patch') && !t.group.includes('.p2p.'))
      ) {
        if (!existing) throw notFound();
        next = mergePatch(existing, body) as Obj;
      } else {
        throw new HttpError(
          415,
          'UnsupportedMediaType',
          `the body of the request was in an unknown format: ${type}`,
        );
      }
      if (
        body.metadata?.resourceVersion &&
        body.metadata.resourceVersion !== existing.metadata.resourceVersion
      )
        throw new HttpError(
          409,
          'Conflict',
          `Operation cannot be fulfilled on ${t.plural} "${name}": the object has been modified`,
        );
    } else {
      throw new HttpError(405, 'MethodNotAllowed', `${method} is not supported`);
    }
    const prev = existing;
    next.metadata = { ...next.metadata, name: prev.metadata.name, namespace: prev.metadata.namespace };
    if (t.status) {
      // The status subresource: /status changes only status; the object itself never does.
      if (sub === 'status') next = { ...clone(prev), status: next.status };
      else if (prev.status === undefined) delete next.status;
      else next.status = clone(prev.status);
    }
    validate(t, next);
    return send(res, 200, commit(t, prev, next));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const e = error instanceof HttpError ? error : new HttpError(500, 'InternalError', String(error));
      if (!res.headersSent) send(res, e.status, statusBody(e.status, e.reason, e.message));
      else res.end();
    });
  });
  const host = opts.host ?? '127.0.0.1';
  server.listen(0, host);
  await once(server, 'listening');
  const url = `http://${host}:${(server.address() as AddressInfo).port}`;
  const typeOf = (plural: string, group?: string) => {
    const t = TYPES.find((x) => x.plural === plural && (group === undefined || x.group === group));
    if (!t) throw new Error(`unknown resource ${plural}`);
    return t;
  };
  return {
    url,
    kubeconfig: [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: fake, cluster: {server: "' + url + '", insecure-skip-tls-verify: true}}]',
      'users: [{name: fake, user: {token: fake}}]',
      'contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: default}}]',
      'current-context: fake',
      '',
    ].join('\n'),
    stats,
    get: (plural, ns, name, group) => store.get(typeKey(typeOf(plural, group)))!.get(keyOf(ns, name)),
    list: (plural, ns, group) =>
      [...store.get(typeKey(typeOf(plural, group)))!.values()].filter(
        (o) => !ns || o.metadata.namespace === ns,
      ),
    put(object) {
      const [group, version] = object.apiVersion!.includes('/')
        ? object.apiVersion!.split('/')
        : ['', object.apiVersion!];
      const t = TYPES.find((x) => x.group === group && x.version === version && x.kind === object.kind);
      if (!t) throw new Error(`unknown kind ${object.kind}`);
      const prev = store.get(typeKey(t))!.get(keyOf(object.metadata.namespace, object.metadata.name));
      const next = clone(object);
      validate(t, next);
      return commit(t, prev, next);
    },
    remove(plural, ns, name) {
      const t = typeOf(plural);
      const o = store.get(typeKey(t))!.get(keyOf(ns, name));
      if (o) remove(t, o);
    },
    fault: (f) => faults.push(f),
    dropWatches() {
      for (const w of [...watchers]) w.res.destroy();
    },
    compact() {
      compactedAt = rv;
      history = [];
    },
    async close() {
      for (const w of [...watchers]) w.res.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, 'close').catch(() => undefined);
    },
  };
}
