import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';

/** The fake answers like kube-apiserver where the operator relies on it; checked over plain HTTP. */
describe('the API server fake', () => {
  let api: FakeApiServer;
  const call = async (method: string, path: string, body?: unknown, type = 'application/json') => {
    const res = await fetch(`${api.url}${path}`, {
      method,
      headers: { 'content-type': type },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    // Answers are untyped JSON: the assertions say what they expect of them.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const cm = (name: string, data: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name },
    data,
  });

  before(async () => {
    api = await startFakeApiServer({ bookmarkMs: 50, historyLimit: 100 });
  });
  after(() => api.close());

  it('serves the ServiceAccount issuer’s OpenID configuration and keys, as the operator reads them', async () => {
    // Without them the operator's read of the cluster token keys failed on the fake alone, and
    // each reconcile read two ConfigMaps more than against a real server.
    const discovery = await call('GET', '/.well-known/openid-configuration');
    assert.equal(discovery.status, 200);
    assert.equal(discovery.body.issuer, 'https://kubernetes.default.svc.cluster.local');
    const jwks = await call('GET', '/openid/v1/jwks');
    assert.equal(jwks.status, 200);
    assert.equal(jwks.body.keys.length, 1);
    assert.equal(jwks.body.keys[0].kty, 'EC');
    assert.equal(jwks.body.keys[0].d, undefined, 'no private part');
  });

  it('answers 409 to a stale update and to a second create', async () => {
    const created = await call('POST', '/api/v1/namespaces/n/configmaps', cm('a', { x: '1' }));
    assert.equal(created.status, 201);
    assert.equal((await call('POST', '/api/v1/namespaces/n/configmaps', cm('a', {}))).status, 409);
    const fresh = await call('PUT', '/api/v1/namespaces/n/configmaps/a', {
      ...created.body,
      data: { x: '2' },
    });
    assert.equal(fresh.status, 200);
    assert.notEqual(fresh.body.metadata.resourceVersion, created.body.metadata.resourceVersion);
    const stale = await call('PUT', '/api/v1/namespaces/n/configmaps/a', {
      ...created.body,
      data: { x: '3' },
    });
    assert.equal(stale.status, 409);
    assert.equal(stale.body.reason, 'Conflict');
  });

  it('bumps generation on spec changes only, and keeps the status subresource apart', async () => {
    const path = '/apis/edgemesh.p2p.dev/v1alpha1/namespaces/n/edgemeshes';
    const body = {
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'm' },
      spec: { controlPlane: { natsUrl: 'nats://x:4222' } },
      status: { readyAgents: 9 },
    };
    const created = await call('POST', path, body);
    assert.equal(created.body.metadata.generation, 1);
    assert.equal(created.body.status, undefined, 'status is not set through the object');
    assert.equal(created.body.spec.replication.factor, 3, 'defaults from the CRD schema');
    const status = await call(
      'PATCH',
      `${path}/m/status`,
      { status: { readyAgents: 2 }, spec: { replication: { factor: 1 } } },
      'application/merge-patch+json',
    );
    assert.equal(status.body.status.readyAgents, 2);
    assert.equal(status.body.spec.replication.factor, 3, '/status changes only status');
    assert.equal(status.body.metadata.generation, 1, 'no generation bump for status');
    const spec = await call(
      'PATCH',
      `${path}/m`,
      { spec: { replication: { factor: 2 } }, status: { readyAgents: 0 } },
      'application/merge-patch+json',
    );
    assert.equal(spec.body.metadata.generation, 2);
    assert.equal(spec.body.status.readyAgents, 2, 'the object cannot change status');
  });

  it('requires a field manager for server-side apply, creates or merges, and a no-op apply changes nothing', async () => {
    const path = '/api/v1/namespaces/n/configmaps/applied';
    const type = 'application/apply-patch+yaml';
    assert.equal((await call('PATCH', path, cm('applied', { a: '1' }), type)).status, 400);
    const first = await call(
      'PATCH',
      `${path}?fieldManager=op&force=true`,
      cm('applied', { a: '1', b: '2' }),
      type,
    );
    assert.equal(first.status, 201);
    const same = await call(
      'PATCH',
      `${path}?fieldManager=op&force=true`,
      cm('applied', { a: '1', b: '2' }),
      type,
    );
    assert.equal(same.body.metadata.resourceVersion, first.body.metadata.resourceVersion);
    const dropped = await call(
      'PATCH',
      `${path}?fieldManager=op&force=true`,
      cm('applied', { a: '1' }),
      type,
    );
    assert.deepEqual(dropped.body.data, { a: '1' }, 'a field the manager stopped applying is removed');
  });

  it('validates built-in objects against Kubernetes’ schemas', async () => {
    const bad = {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: 'd' },
      spec: {
        selector: {},
        template: { spec: { containers: [{ name: 'c', ports: [{ containerPort: 'eighty' }] }] } },
      },
    };
    const res = await call('POST', '/apis/apps/v1/namespaces/n/daemonsets', bad);
    assert.equal(res.status, 422);
    assert.match(res.body.message, /containerPort/);
  });

  it('streams watch events from a resourceVersion, with bookmarks, and 410 Gone once compacted', async () => {
    const list = await call('GET', '/api/v1/namespaces/n/configmaps');
    const from = list.body.metadata.resourceVersion as string;
    const controller = new AbortController();
    const res = await fetch(
      `${api.url}/api/v1/namespaces/n/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion=${from}`,
      { signal: controller.signal },
    );
    await call('POST', '/api/v1/namespaces/n/configmaps', cm('w', {}));
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('BOOKMARK')) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    assert.match(text, /"type":"ADDED".*"name":"w"/);
    api.compact();
    const gone = await (
      await fetch(`${api.url}/api/v1/namespaces/n/configmaps?watch=true&resourceVersion=${from}`)
    ).text();
    assert.match(gone, /"code":410/);
  });

  it('deletes dependents with their owner, and waits for finalizers', async () => {
    const owner = await call('POST', '/api/v1/namespaces/n/configmaps', {
      ...cm('owner', {}),
      metadata: { name: 'owner', finalizers: ['x/y'] },
    });
    const ref = { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.body.metadata.uid };
    await call('POST', '/api/v1/namespaces/n/configmaps', {
      ...cm('child', {}),
      metadata: { name: 'child', ownerReferences: [ref] },
    });
    const deleting = await call('DELETE', '/api/v1/namespaces/n/configmaps/owner');
    assert.ok(deleting.body.metadata.deletionTimestamp, 'a finalizer holds it');
    assert.ok(api.get('configmaps', 'n', 'child'));
    await call(
      'PATCH',
      '/api/v1/namespaces/n/configmaps/owner',
      { metadata: { finalizers: null } },
      'application/merge-patch+json',
    );
    assert.equal(api.get('configmaps', 'n', 'owner'), undefined);
    assert.equal(api.get('configmaps', 'n', 'child'), undefined, 'the dependent was collected');
  });

  it('injects faults and slow answers', async () => {
    api.fault({ method: 'GET', path: '/configmaps/a', status: 429, times: 1 });
    api.fault({ method: 'GET', path: '/configmaps/a', delayMs: 50, times: 1 });
    assert.equal((await call('GET', '/api/v1/namespaces/n/configmaps/a')).status, 429);
    const started = performance.now();
    assert.equal((await call('GET', '/api/v1/namespaces/n/configmaps/a')).status, 200);
    assert.ok(performance.now() - started >= 45);
  });

  // Where the real API server (e2e/cluster.test.ts) showed the fake to differ; see docs/operator.md.
  it('serves a custom resource with its keys sorted, as the real server encodes unstructured JSON', async () => {
    const path = '/apis/edgemesh.p2p.dev/v1alpha1/namespaces/n/edgemeshes';
    await call('POST', path, {
      kind: 'EdgeMesh',
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      metadata: { name: 'sorted' },
      spec: { ports: { http: 7000, grpc: 7001 }, controlPlane: { natsUrl: 'nats://x:4222' } },
    });
    const { body } = await call('GET', `${path}/sorted`);
    assert.deepEqual(Object.keys(body), ['apiVersion', 'kind', 'metadata', 'spec']);
    assert.deepEqual(Object.keys(body.spec.ports as object), ['exposure', 'grpc', 'http']);
  });

  it('refuses a name or generateName prefix that is not a DNS subdomain (422)', async () => {
    const bad = (metadata: object) =>
      call('POST', '/api/v1/namespaces/n/configmaps', { ...cm('x', {}), metadata });
    assert.equal((await bad({ name: 'Not_A_Name' })).status, 422);
    assert.equal((await bad({ name: 'cdn.abc', generateName: 'cdn.' })).status, 422);
    assert.equal((await bad({ name: 'cdn-abc', generateName: 'cdn-' })).status, 201);
  });

  it('refuses a CRD whose defaults fail its own CEL rules, as the real server refuses to create it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-crd-'));
    try {
      const crd = readFileSync(
        new URL('../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url),
        'utf8',
      );
      const broken = crd.replace(
        /( +)default:\n +http: 7480\n +grpc: 7481\n +exposure: Service\n/,
        '$1default: {}\n',
      );
      assert.notEqual(broken, crd, 'the CRD has the ports default this test breaks');
      await writeFile(join(dir, 'crd.yaml'), broken);
      await assert.rejects(
        startFakeApiServer({ crdFile: pathToFileURL(join(dir, 'crd.yaml')) }),
        /no such key|http/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
