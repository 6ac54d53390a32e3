import { KubeConfig } from '@kubernetes/client-node';
import { KubeApiError, KubeHttp } from '../src/kit/kube-http.ts';
import { type FakeApiServer, startFakeApiServer } from './fake-apiserver.ts';

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  [k: string]: unknown;
};

/**
 * What the operator's behaviour tests need of a cluster, from the API server fake or a real
 * control plane (e2e/harness/control-plane.ts), so that one suite runs against both: the real one
 * for behaviour, the fake also for the faults it can inject (`fake`).
 */
export interface TestCluster {
  readonly name: string;
  /** An admin kubeconfig (text). */
  readonly kubeconfig: string;
  /** The fake, when this is the fake: fault injection, dropped watches, compaction. */
  readonly fake?: FakeApiServer;
  get(plural: string, namespace: string | undefined, name: string, group?: string): Promise<Obj | undefined>;
  list(plural: string, namespace: string, group?: string): Promise<Obj[]>;
  /** Creates an object, or replaces it when it carries a resourceVersion. */
  put(object: Obj): Promise<void>;
  remove(plural: string, namespace: string | undefined, name: string): Promise<void>;
  /**
   * Brings a DaemonSet's status to "every agent ready and up to date": the fake has no DaemonSet
   * controller or kubelets, so this writes what they would; on a real control plane they do it.
   */
  rollOut(namespace: string, name: string, agents: number): Promise<void>;
  close(): Promise<void>;
}

/** The group of each plural the tests name without one. */
const GROUPS: Record<string, string> = {
  daemonsets: 'apps',
  roles: 'rbac.authorization.k8s.io',
  rolebindings: 'rbac.authorization.k8s.io',
  networkpolicies: 'networking.k8s.io',
  edgemeshes: 'edgemesh.p2p.dev',
  leases: 'coordination.k8s.io',
};
const VERSIONS: Record<string, string> = { 'edgemesh.p2p.dev': 'v1alpha1' };

/** The API path of a collection, e.g. /apis/apps/v1/namespaces/shop/daemonsets; no namespace: all of them. */
export function collectionPath(plural: string, namespace: string | undefined, group = GROUPS[plural] ?? '') {
  const base = group ? `/apis/${group}/${VERSIONS[group] ?? 'v1'}` : '/api/v1';
  return `${base}${namespace ? `/namespaces/${namespace}` : ''}/${plural}`;
}

export async function fakeCluster(nodes: Obj[]): Promise<TestCluster> {
  const api = await startFakeApiServer({ bookmarkMs: 200 });
  for (const node of nodes) api.put(node);
  return {
    name: 'the API server fake',
    kubeconfig: api.kubeconfig,
    fake: api,
    get: (plural, namespace, name, group) => Promise.resolve(api.get(plural, namespace, name, group) as Obj),
    list: (plural, namespace, group) => Promise.resolve(api.list(plural, namespace, group) as Obj[]),
    put: (object) => Promise.resolve(void api.put(object as never)),
    remove: (plural, namespace, name) => Promise.resolve(api.remove(plural, namespace, name)),
    rollOut(namespace, name, agents) {
      const ds = api.get('daemonsets', namespace, name)!;
      api.put({
        ...ds,
        status: {
          observedGeneration: ds.metadata.generation,
          desiredNumberScheduled: agents,
          currentNumberScheduled: agents,
          numberReady: agents,
          updatedNumberScheduled: agents,
          numberMisscheduled: 0,
        },
      });
      return Promise.resolve();
    },
    close: () => api.close(),
  };
}

/**
 * A real control plane with the EdgeMesh CRD installed, the namespaces made and the nodes
 * simulated by kwok, or the reason it cannot run here.
 */
export async function realCluster(nodes: Obj[], namespaces: string[]): Promise<TestCluster | string> {
  const { controlPlaneUnavailable, startControlPlane } = await import('../../e2e/harness/control-plane.ts');
  const why = controlPlaneUnavailable();
  if (why) return why;
  const crd = new URL('../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url).pathname;
  const cp = await startControlPlane({
    nodes: nodes.map((n) => ({ name: n.metadata.name, labels: n.metadata.labels as Record<string, string> })),
    apply: [crd],
  });
  try {
    // A real server keeps objects only in namespaces that exist (the fake does not check).
    for (const namespace of namespaces) cp.kubectl(['create', 'namespace', namespace]);
  } catch (error) {
    await cp.stop();
    throw error;
  }
  const kc = new KubeConfig();
  kc.loadFromString(cp.kubeconfigText);
  const http = new KubeHttp(kc);
  const get = async (path: string) => {
    try {
      return await http.request<Obj>('GET', path);
    } catch (error) {
      if (error instanceof KubeApiError && error.code === 404) return undefined;
      throw error;
    }
  };
  return {
    name: `a real control plane (Kubernetes ${cp.versions.kubernetes})`,
    kubeconfig: cp.kubeconfigText,
    get: (plural, namespace, name, group) => get(`${collectionPath(plural, namespace, group)}/${name}`),
    list: async (plural, namespace, group) =>
      ((await get(collectionPath(plural, namespace, group))) as unknown as { items: Obj[] }).items,
    async put(object) {
      const [group, version] = object.apiVersion!.includes('/') ? object.apiVersion!.split('/') : ['', 'v1'];
      const plural = `${object.kind!.toLowerCase()}s`;
      const base =
        (group ? `/apis/${group}/${version}` : '/api/v1') +
        (object.metadata.namespace ? `/namespaces/${object.metadata.namespace}` : '') +
        `/${plural}`;
      if (object.metadata.resourceVersion)
        await http.request('PUT', `${base}/${object.metadata.name}`, object);
      else await http.request('POST', base, object);
    },
    async remove(plural, namespace, name) {
      await http.request('DELETE', `${collectionPath(plural, namespace)}/${name}`);
    },
    rollOut: () => Promise.resolve(),
    async close() {
      await http.close();
      await cp.stop();
    },
  };
}
