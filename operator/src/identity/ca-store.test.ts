import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { createCa, readPemBundle } from '@edgemesh/identity';
import {
  advanceCaRotation,
  ensureMeshCa,
  loadMeshCa,
  readingOnce,
  SecretConflictError,
  type SecretApi,
  type StoredSecret,
} from './ca-store.ts';

const MESH = { namespace: 'shop', name: 'cdn' };
const OWNER = { ...MESH, uid: 'u', apiVersion: 'edgemesh.p2p.dev/v1alpha1' };
const TIMING = { propagateMs: 1000, retireMs: 5000 };

/** Secrets in memory, with create and merge-patch as the API server does them. */
function memorySecrets(): SecretApi & { data: () => Record<string, string>; delete: (name: string) => void } {
  const store = new Map<string, StoredSecret>();
  return {
    data: () => store.get('shop/edgemesh-cdn-ca')!.data,
    delete: (name) => store.delete(`shop/${name}`),
    read: (namespace, name) => Promise.resolve(store.get(`${namespace}/${name}`)),
    create: (secret) => {
      const key = `${secret.metadata.namespace}/${secret.metadata.name}`;
      if (store.has(key)) return Promise.resolve(false);
      const owners = (secret.metadata.ownerReferences ?? []) as { uid: string }[];
      store.set(key, { data: { ...secret.data }, ownerUids: owners.map((o) => o.uid) });
      return Promise.resolve(true);
    },
    setOwners: (namespace, name, owners) => {
      const secret = store.get(`${namespace}/${name}`)!;
      const ownerUids = (owners as { uid: string }[]).map((o) => o.uid);
      store.set(`${namespace}/${name}`, { ...secret, ownerUids });
      return Promise.resolve();
    },
    patchData: (namespace, name, changes) => {
      const secret = store.get(`${namespace}/${name}`)!;
      const data = { ...secret.data };
      for (const [k, v] of Object.entries(changes))
        if (v === null) delete data[k];
        else data[k] = v;
      store.set(`${namespace}/${name}`, { ...secret, data });
      return Promise.resolve();
    },
  };
}

const text = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString();
const fingerprints = (pem: string) => readPemBundle(pem).map((c) => c.fingerprint256);
const fp = (pem: string) => new X509Certificate(pem).fingerprint256;

describe('mesh CA rotation steps', () => {
  it('reads the CA Secret once for both steps of a reconcile, and again after its own write', async () => {
    const api = memorySecrets();
    let reads = 0;
    const counted: SecretApi = { ...api, read: (ns, name) => (reads++, api.read(ns, name)) };
    const first = readingOnce(counted);
    const stored = await ensureMeshCa(first, OWNER, {});
    await advanceCaRotation(first, MESH, stored, undefined, { timing: TIMING });
    assert.equal(
      reads,
      1,
      'the first reconcile reads it and creates it, and does not read back what it made',
    );
    assert.equal(text(api.data()['ca.crt']), stored.certPem, 'what it stored');
    reads = 0;
    const next = readingOnce(counted);
    const again = await ensureMeshCa(next, OWNER, {});
    await advanceCaRotation(next, MESH, again, undefined, { timing: TIMING });
    assert.equal(reads, 1, 'a steady reconcile reads it once');
    // A rotation asked for: its write is followed by a fresh read.
    reads = 0;
    await advanceCaRotation(next, MESH, again, 'now', { timing: TIMING });
    await advanceCaRotation(next, MESH, again, 'now', { timing: TIMING });
    assert.equal(reads, 1, 'read again after its own patch');
    assert.ok(api.data()['rotation.json'], 'the rotation started');
  });

  it('makes a new mesh’s CA without reading first, and takes the one that exists after all', async () => {
    const api = memorySecrets();
    let reads = 0;
    const counted: SecretApi = { ...api, read: (ns, name) => (reads++, api.read(ns, name)) };
    const once = readingOnce(counted);
    const made = await ensureMeshCa(once, OWNER, {}, { likelyNew: true });
    await advanceCaRotation(once, MESH, made, undefined, { timing: TIMING });
    assert.equal(reads, 0, 'a new mesh: created, and what it stored remembered');
    // Its status was lost, say: likely new again, but the CA is there: the create finds it (409).
    const again = await ensureMeshCa(readingOnce(counted), OWNER, {}, { likelyNew: true });
    assert.equal(again.certPem, made.certPem, 'the CA that exists, not a second one');
    assert.equal(reads, 1);
    // A create refused at admission (a Secret quota) for one that exists: the CA there is taken.
    const refusing: SecretApi = {
      ...api,
      create: () => Promise.reject(Object.assign(new Error('quota'), { code: 403 })),
    };
    const taken = await ensureMeshCa(readingOnce(refusing), OWNER, {}, { likelyNew: true });
    assert.equal(taken.certPem, made.certPem);
    await assert.rejects(
      ensureMeshCa(
        readingOnce({ ...refusing, read: () => Promise.resolve(undefined) }),
        OWNER,
        {},
        { likelyNew: true },
      ),
      /quota/,
      'none there: the refusal',
    );
  });

  it('takes the CA another replica made between its read and its create', async () => {
    const api = memorySecrets();
    const other = await ensureMeshCa(memorySecrets(), OWNER, {});
    let first = true;
    const racing: SecretApi = {
      ...api,
      read: async (ns, name) => {
        if (!first) return api.read(ns, name);
        first = false; // it reads nothing; the other replica's create lands right after
        await api.create({
          metadata: { namespace: ns, name, ownerReferences: [{ uid: OWNER.uid }] },
          type: 'Opaque',
          data: {
            'ca.crt': Buffer.from(other.certPem).toString('base64'),
            'ca.key': Buffer.from(other.keyPem).toString('base64'),
          },
        });
        return undefined;
      },
    };
    const once = readingOnce(racing);
    const taken = await ensureMeshCa(once, OWNER, {});
    assert.equal(taken.certPem, other.certPem, "the winner's CA, read back");
    const step = await advanceCaRotation(once, MESH, taken, undefined, { timing: TIMING });
    assert.equal(step.ca.certPem, other.certPem);
  });

  it('leaves the CA Secret of an earlier mesh of the same name alone, and makes its own once it is gone', async () => {
    const api = memorySecrets();
    // The mesh was deleted and made again: the garbage collector has not deleted its CA Secret yet.
    const earlier = await ensureMeshCa(api, { ...OWNER, uid: 'earlier' }, {});
    for (const likelyNew of [false, true])
      await assert.rejects(
        ensureMeshCa(readingOnce(api), OWNER, {}, { likelyNew }),
        (error: Error) =>
          error instanceof SecretConflictError &&
          /belongs to another object \(uid earlier;/.test(error.message),
        `likelyNew ${likelyNew}: adopted, it would be deleted under the new mesh`,
      );
    // Refused at admission, and the Secret there is not its own: the conflict, not the earlier CA.
    const refusing: SecretApi = {
      ...api,
      create: () => Promise.reject(Object.assign(new Error('quota'), { code: 403 })),
    };
    await assert.rejects(
      ensureMeshCa(readingOnce(refusing), OWNER, {}, { likelyNew: true }),
      SecretConflictError,
    );
    // The issuance endpoint, told the mesh's uid, signs with no CA but the mesh's.
    await assert.rejects(loadMeshCa(api, OWNER), SecretConflictError);
    assert.ok(await loadMeshCa(api, { ...OWNER, uid: 'earlier' }));
    api.delete('edgemesh-cdn-ca'); // collected
    const own = await ensureMeshCa(readingOnce(api), OWNER, {}, { likelyNew: true });
    assert.notEqual(own.certPem, earlier.certPem, 'a CA of its own');
    assert.equal((await api.read('shop', 'edgemesh-cdn-ca'))?.ownerUids[0], OWNER.uid);
    assert.equal((await loadMeshCa(api, OWNER))?.certPem, own.certPem);
  });

  it('takes a CA Secret nobody owns (a mesh deleted with --cascade=orphan, made again), and keeps a conflict message short', async () => {
    const api = memorySecrets();
    const kept = await ensureMeshCa(api, { ...OWNER, uid: 'earlier' }, {});
    const orphaned = memorySecrets();
    await orphaned.create({
      metadata: { namespace: 'shop', name: 'edgemesh-cdn-ca' },
      type: 'Opaque',
      data: api.data(),
    });
    assert.equal((await loadMeshCa(orphaned, OWNER))?.certPem, kept.certPem, 'nobody’s: signed with');
    for (const likelyNew of [false, true])
      assert.equal(
        (await ensureMeshCa(readingOnce(orphaned), OWNER, {}, { likelyNew })).certPem,
        kept.certPem,
        `likelyNew ${likelyNew}`,
      );
    assert.deepEqual(
      (await orphaned.read('shop', 'edgemesh-cdn-ca'))?.ownerUids,
      [OWNER.uid],
      'made the mesh’s: it goes with it',
    );
    // Owners are whatever the Secret's maker wrote: the message names a few, cut short.
    const crowded = memorySecrets();
    await crowded.create({
      metadata: {
        namespace: 'shop',
        name: 'edgemesh-cdn-ca',
        ownerReferences: Array.from({ length: 500 }, (_, i) => ({ uid: `${i}`.repeat(300) })),
      },
      type: 'Opaque',
      data: api.data(),
    });
    await assert.rejects(ensureMeshCa(crowded, OWNER, {}), (error: Error) => error.message.length < 600);
  });

  it('trusts the next CA before it signs, waits for the agents’ ConfigMap to carry it, and keeps the old one to check what it signed', async () => {
    const api = memorySecrets();
    const first = await ensureMeshCa(api, OWNER, {});
    const t0 = Date.now();
    let deliveredNow = false;
    const step = async (atMs: number, requested?: string) =>
      advanceCaRotation(api, MESH, await ensureMeshCa(api, OWNER, {}), requested, {
        nowMs: atMs,
        timing: TIMING,
        delivered: () => Promise.resolve(deliveredNow),
      });

    assert.equal((await step(t0)).did, undefined, 'nothing asked, a young CA: nothing');
    const started = await step(t0, 'r1');
    assert.equal(started.did, 'started');
    const next = text(api.data()['next.crt']);
    // Step 1: both trusted, the old one signs.
    assert.equal(started.ca.certPem, first.certPem);
    assert.deepEqual(fingerprints(started.ca.trustPem), [fp(first.certPem), fp(next)]);
    // The agents' ConfigMap does not carry it yet: however long that takes, the old one signs on.
    const waiting = await step(t0 + 60_000, 'r1');
    assert.equal(waiting.did, undefined);
    assert.equal(waiting.ca.certPem, first.certPem);
    assert.equal(waiting.nextStepInMs, 1000, 'looked at again soon');
    deliveredNow = true;
    assert.equal((await step(t0 + 61_000, 'r1')).nextStepInMs, 1000, 'carried now: the propagation starts');
    assert.equal((await step(t0 + 61_999, 'r1')).did, undefined);
    // Step 2: the new one signs, both still trusted, the old key gone.
    const signing = await step(t0 + 62_000, 'r1');
    assert.equal(signing.did, 'signing');
    assert.equal(fp(signing.ca.certPem), fp(next));
    assert.deepEqual(fingerprints(signing.ca.trustPem), [fp(first.certPem), fp(next)]);
    assert.equal(text(api.data()['ca.crt']), next);
    assert.notEqual(text(api.data()['ca.key']), first.keyPem);
    assert.equal((await step(t0 + 66_999, 'r1')).did, undefined);
    // Step 3: done. The old CA (valid for months yet) stays, to check what it signed; its key is gone.
    const finished = await step(t0 + 67_000, 'r1');
    assert.equal(finished.did, 'finished');
    assert.deepEqual(fingerprints(finished.ca.trustPem), [fp(first.certPem), fp(next)]);
    assert.deepEqual(Object.keys(api.data()).sort(), ['ca.crt', 'ca.key', 'rotation-requested', 'trust.crt']);
    assert.equal((await step(t0 + 68_000, 'r1')).did, undefined, 'the same request twice: one rotation');
    assert.equal((await step(t0 + 68_000, 'r2')).did, 'started', 'a new request: another');
  });

  it('drops a retired CA from the bundle once it has expired', async () => {
    const api = memorySecrets();
    const current = await ensureMeshCa(api, OWNER, {});
    const retired = await createCa(MESH, new Date(Date.now() - 400 * 24 * 3600_000)); // ended a month ago
    await api.patchData!('shop', 'edgemesh-cdn-ca', {
      'trust.crt': Buffer.from(`${retired.certPem}${current.certPem}`).toString('base64'),
    });
    const started = await advanceCaRotation(api, MESH, await ensureMeshCa(api, OWNER, {}), 'r1', {
      timing: TIMING,
    });
    assert.deepEqual(fingerprints(started.ca.trustPem), [
      fp(current.certPem),
      fp(text(api.data()['next.crt'])),
    ]);
  });

  it('starts by itself when a third of the CA’s life is left', async () => {
    const api = memorySecrets();
    const old = await createCa(MESH, new Date(Date.now() - 250 * 24 * 3600_000));
    await api.create({
      metadata: { namespace: 'shop', name: 'edgemesh-cdn-ca', ownerReferences: [{ uid: OWNER.uid }] },
      type: 'Opaque',
      data: {
        'ca.crt': Buffer.from(old.certPem).toString('base64'),
        'ca.key': Buffer.from(old.keyPem).toString('base64'),
      },
    });
    const step = await advanceCaRotation(api, MESH, await ensureMeshCa(api, OWNER, {}), undefined, {
      timing: TIMING,
    });
    assert.equal(step.did, 'started');
    assert.equal(step.why, 'expiring');
  });
});
