import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SecretConflictError, type SecretApi } from '../identity/ca-store.ts';
import {
  EXPIRES_ANNOTATION,
  ensureMeshNatsCredentials,
  ensureNatsAuth,
  type KubeRequests,
} from './nats-auth-store.ts';
import { createNatsAuthKeys } from './nats-auth.ts';

type Stored = { metadata: { annotations?: Record<string, string> }; data?: Record<string, string> };

/** The API server, as far as the store uses it: objects by path, GET and apply (PATCH). */
function fakeApi() {
  const objects = new Map<string, Stored>();
  const writes: string[] = [];
  const http: KubeRequests = {
    request<T>(method: string, path: string, body?: unknown): Promise<T> {
      const key = path.split('?')[0]!;
      if (method === 'GET') {
        const found = objects.get(key);
        return found
          ? Promise.resolve(found as T)
          : Promise.reject(Object.assign(new Error('404'), { code: 404 }));
      }
      writes.push(key);
      objects.set(key, body as Stored);
      return Promise.resolve(body as T);
    },
  };
  const secrets = new Map<string, Record<string, string>>();
  const secretApi: SecretApi = {
    read: (namespace, name) => {
      const data = secrets.get(`${namespace}/${name}`);
      return Promise.resolve(data && { data, ownerUids: [] });
    },
    create: (secret) => {
      const key = `${secret.metadata.namespace}/${secret.metadata.name}`;
      if (secrets.has(key)) return Promise.resolve(false);
      secrets.set(key, secret.data);
      return Promise.resolve(true);
    },
  };
  return { http, objects, writes, secrets, secretApi };
}

const MESH = {
  namespace: 'shop',
  name: 'cdn',
  uid: 'u1',
  apiVersion: 'edgemesh.p2p.dev/v1alpha1',
  id: 'shop_cdn',
};
const SECRET = '/api/v1/namespaces/shop/secrets/edgemesh-cdn-nats';
const CONFIG = '/api/v1/namespaces/ops/configmaps/nats-config';

describe('the NATS authentication store', () => {
  it('renews a mesh’s user at two thirds of its life, not before', async () => {
    const api = fakeApi();
    const keys = createNatsAuthKeys();
    const t0 = Date.parse('2026-11-30T00:00:00Z');
    const ensure = (atMs: number) => ensureMeshNatsCredentials(api.http, keys, MESH, 3600, {}, atMs);
    assert.deepEqual(await ensure(t0), { secretName: 'edgemesh-cdn-nats', renewInMs: 2400_000 });
    const first = api.objects.get(SECRET)!;
    assert.equal(first.metadata.annotations?.[EXPIRES_ANNOTATION], '2026-11-30T01:00:00.000Z');
    assert.equal((await ensure(t0 + 2390_000)).renewInMs, 10_000, 'a third of its life and 10 s left');
    assert.equal(api.writes.length, 1, 'still fresh: nothing written');
    await ensure(t0 + 2410_000);
    assert.equal(api.writes.length, 2, 'renewed');
    const renewed = api.objects.get(SECRET)!;
    assert.notEqual(renewed.data?.creds, first.data?.creds, 'a new user');
    assert.equal(renewed.metadata.annotations?.[EXPIRES_ANNOTATION], '2026-11-30T01:40:10.000Z');
    // A Secret without its credentials (emptied by hand) is made whole again.
    api.objects.set(SECRET, { metadata: renewed.metadata, data: {} });
    await ensure(t0 + 2420_000);
    assert.ok(api.objects.get(SECRET)!.data?.creds);
    // Credentials of another account (the keys were made again) are made again at once.
    const before: number = api.writes.length;
    await ensureMeshNatsCredentials(api.http, createNatsAuthKeys(), MESH, 3600, {}, t0 + 2421_000);
    assert.equal(api.writes.length, before + 1);
  });

  it('never overwrites a Secret of that name that the mesh does not own', async () => {
    const api = fakeApi();
    api.objects.set(SECRET, { metadata: {}, data: { creds: 'dXNlcg==' } });
    await assert.rejects(
      ensureMeshNatsCredentials(api.http, createNatsAuthKeys(), MESH, 3600, {}),
      (error: Error) => error instanceof SecretConflictError,
    );
    assert.equal(api.writes.length, 0);
  });

  it('makes the keys once; a replica that loses the race, and a restart, use the winner’s', async () => {
    const api = fakeApi();
    const a = await ensureNatsAuth(api.http, api.secretApi, 'ops', 'nats', {});
    assert.equal(a.rewritten, false, 'made, not rewritten');
    const conf = api.objects.get(CONFIG)!.data!['nats.conf'];
    const b = await ensureNatsAuth(api.http, api.secretApi, 'ops', 'nats', {});
    assert.deepEqual(b, a);
    assert.equal(api.writes.length, 1, 'the configuration is not written again');
    // The configuration made from other keys (say, restored from a backup) is replaced.
    api.objects.set(CONFIG, { metadata: {}, data: { 'nats.conf': '# keys: operator X\n' } });
    assert.equal((await ensureNatsAuth(api.http, api.secretApi, 'ops', 'nats', {})).rewritten, true);
    assert.equal(api.objects.get(CONFIG)!.data!['nats.conf']!.split('\n')[0], conf!.split('\n')[0]);
    // Keys that are not nkey seeds are an error, never replaced silently.
    api.secrets.set('ops/bad-keys', { operator: Buffer.from('nonsense').toString('base64') });
    await assert.rejects(ensureNatsAuth(api.http, api.secretApi, 'ops', 'bad', {}), /not an nkey seed/);
  });
});
