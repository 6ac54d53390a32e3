import assert from 'node:assert/strict';
import { verify, X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { revocationSignedBytes } from '@edgemesh/contracts';
import { readPemBundle } from '@edgemesh/identity';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import type { Operator } from '../src/controller.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import { eventually, node } from './support.ts';

const NS = 'shop';
type Data = { data: Record<string, string> };
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString());

/**
 * A rotation of a mesh's CA driven by the operator, with an overlapping trust bundle: asked for with
 * an annotation on the mesh, it adds a new CA to what the agents trust, then signs with it, then
 * ends once the old one's certificates have, each step recorded as an Event. Steps are short here (2 s each); in a cluster
 * they are 10 minutes, then a day.
 */
describe('mesh CA rotation', () => {
  let api: FakeApiServer;
  let operator: Operator;
  const secret = () => api.get('secrets', NS, 'edgemesh-cdn-ca') as unknown as Data;
  const bundle = () =>
    readPemBundle((api.get('configmaps', NS, 'edgemesh-cdn-trust') as unknown as Data).data['ca.crt']!).map(
      (c) => c.fingerprint256,
    );
  const fingerprint = (pem: string | undefined) => new X509Certificate(pem!).fingerprint256;
  const rotationEvents = () =>
    (api.list('events', NS, 'events.k8s.io') as { reason?: string; note?: string }[])
      .filter((e) => e.reason === 'CARotation')
      .map((e) => e.note!.split(' ').slice(0, 3).join(' '));

  before(async () => {
    api = await startFakeApiServer();
    api.put(node('edge-0', 'z1', 'r1'));
    operator = await startTestOperator(api, {
      workers: 1,
      caRotation: { propagateMs: 2000, retireMs: 2000 },
    });
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'cdn', namespace: NS },
      spec: { controlPlane: { natsUrl: 'nats://127.0.0.1:1' }, security: { revokedNodes: ['edge-9'] } },
    });
    await eventually(() => api.get('configmaps', NS, 'edgemesh-cdn-trust'));
  });
  after(async () => {
    await operator?.stop();
    await api?.close();
  });

  it('trusts the new CA first, then signs with it once the agents’ ConfigMap carries it, and keeps the old one only to check', async () => {
    const old = fingerprint(unb64(secret().data['ca.crt']));
    assert.deepEqual(bundle(), [old]);
    const mesh = api.get('edgemeshes', NS, 'cdn')!;
    api.put({ ...mesh, metadata: { ...mesh.metadata, annotations: { 'edgemesh.p2p.dev/rotate-ca': '1' } } });
    await eventually(() => (rotationEvents().length === 3 ? true : undefined), 30_000);
    assert.deepEqual(rotationEvents(), ['a new CA', 'the new CA', 'every certificate of']);
    // The end state: the new CA signs; the old one, its key gone, is still trusted (until it expires)
    // so that what it vouched for stays verifiable.
    const now = secret().data;
    const current = fingerprint(unb64(now['ca.crt']));
    assert.notEqual(current, old);
    await eventually(() => (bundle().join() === [old, current].join() ? true : undefined));
    assert.deepEqual(Object.keys(now).sort(), ['ca.crt', 'ca.key', 'rotation-requested', 'trust.crt']);
    // The revocation list is signed again, by the new CA.
    const trust = (api.get('configmaps', NS, 'edgemesh-cdn-trust') as unknown as Data).data;
    const list = JSON.parse(trust['revoked.json']!) as {
      nodes: string[];
      issuedAtMs: number;
      signature: string;
    };
    assert.ok(
      verify(
        'sha256',
        revocationSignedBytes('shop_cdn', list.nodes, list.issuedAtMs),
        new X509Certificate(unb64(now['ca.crt'])!).publicKey,
        Buffer.from(list.signature, 'base64'),
      ),
    );
    // The same annotation again starts nothing; a new value would.
    const again = api.get('edgemeshes', NS, 'cdn')!;
    api.put({ ...again, spec: { ...(again.spec as object), replication: { factor: 2, writeCopies: 1 } } });
    await eventually(() =>
      (api.get('daemonsets', NS, 'edgemesh-cdn') as { metadata: { generation: number } }).metadata
        .generation > 1
        ? true
        : undefined,
    );
    assert.equal(rotationEvents().length, 3);
  });
});
