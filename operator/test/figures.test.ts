import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { createPrivateKey, sign, X509Certificate } from 'node:crypto';
import {
  decodeEvent,
  encodeEvent,
  SIGNATURE_HEADER,
  SIGNER_HEADER,
  subjectFor,
  subjects,
} from '@edgemesh/contracts';
import { createNodeKey, MeshCa } from '@edgemesh/identity';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { type NatsServer, natsUnavailable, startNatsServer } from '../../agent/harness/nats-server.ts';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import type { Operator } from '../src/controller.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import { eventually, node } from './support.ts';

const unavailable = natsUnavailable();

describe('mesh figures from the agents’ reports on a real NATS', { skip: unavailable ?? false }, () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let api: FakeApiServer;
  let operator: Operator;

  before(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
    api = await startFakeApiServer();
    api.put(node('edge-0', 'z1', 'r1'));
    operator = await startTestOperator(api, { workers: 1 });
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'cdn', namespace: 'shop' },
      spec: { controlPlane: { natsUrl: nats.url } },
    });
    await eventually(() => api.get('daemonsets', 'shop', 'edgemesh-cdn'));
  });
  after(async () => {
    await operator?.stop();
    await nc?.close();
    await nats?.stop();
    await api?.close();
  });

  it('sends a mesh’s revocation list on its NATS at each reconcile once connected', async () => {
    const sub = nc.subscribe(subjectFor('shop_cdn', 'mesh.revocations'));
    const giveUp = setTimeout(() => sub.unsubscribe(), 10_000);
    await nc.flush();
    const mesh = api.get('edgemeshes', 'shop', 'cdn')!;
    const spec = mesh.spec as { security?: object };
    api.put({ ...mesh, spec: { ...spec, security: { ...spec.security, revokedNodes: ['edge-9'] } } });
    let lists = 0;
    let revoked: string[] | undefined;
    for await (const msg of sub) {
      const decoded = decodeEvent('shop_cdn', msg.data);
      assert.ok(decoded.ok && decoded.event.type === 'mesh.revocations');
      lists++;
      const { nodes } = decoded.event.body as { nodes: string[] };
      if (nodes.length > 0) {
        revoked = nodes;
        break;
      }
    }
    clearTimeout(giveUp);
    assert.deepEqual(revoked, ['edge-9'], `the new list among ${lists} sent`);
    const now = api.get('edgemeshes', 'shop', 'cdn')!;
    api.put({ ...now, spec: { ...(now.spec as object), security: {} } });
  });

  it('manages a mesh whose revocation list is too large for an event: the ConfigMap carries it, a Warning says so', async () => {
    // As many names as the CRD allows, each as long as it allows: about 256 KB, past an event's 64 KiB.
    const revokedNodes = Array.from({ length: 1000 }, (_, i) => `${i}-`.padEnd(253, 'x'));
    const mesh = api.get('edgemeshes', 'shop', 'cdn')!;
    const spec = mesh.spec as { security?: object };
    api.put({ ...mesh, spec: { ...spec, security: { ...spec.security, revokedNodes } } });
    try {
      const generation = (api.get('edgemeshes', 'shop', 'cdn')!.metadata as { generation: number })
        .generation;
      // Reconciled to the end: its status written for this generation, the whole list in the ConfigMap.
      await eventually(
        () =>
          (api.get('edgemeshes', 'shop', 'cdn') as { status?: { observedGeneration?: number } }).status
            ?.observedGeneration === generation,
      );
      const trust = api.get('configmaps', 'shop', 'edgemesh-cdn-trust') as unknown as {
        data: Record<string, string>;
      };
      assert.equal((JSON.parse(trust.data['revoked.json']!) as { nodes: string[] }).nodes.length, 1000);
      const warnings = await eventually(() => {
        const found = (
          api.list('events', 'shop', 'events.k8s.io') as { reason?: string; note?: string }[]
        ).filter((e) => e.reason === 'RevocationsNotPublished');
        return found.length > 0 ? found : undefined;
      });
      assert.match(warnings[0]!.note!, /1000 nodes.*exceeds 65536.*trust ConfigMap/);
    } finally {
      const now = api.get('edgemeshes', 'shop', 'cdn')!;
      api.put({ ...now, spec: { ...(now.spec as object), security: {} } });
    }
  });

  it('sums the nodes’ reports into the status, and ignores garbage, other meshes and reports its nodes did not sign', async () => {
    // The mesh's nodes, with certificates from its CA (which the operator made), sign their reports.
    const secret = (
      api.get('secrets', 'shop', 'edgemesh-cdn-ca') as unknown as { data: Record<string, string> }
    ).data;
    const ca = await MeshCa.load({
      certPem: Buffer.from(secret['ca.crt']!, 'base64').toString(),
      keyPem: Buffer.from(secret['ca.key']!, 'base64').toString(),
    });
    const nodeKey = async (node: string) => {
      const key = await createNodeKey(node);
      const cert = await ca.issue({ csrPem: key.csrPem, mesh: { namespace: 'shop', name: 'cdn' }, node });
      return { key: createPrivateKey(key.keyPem), der: new X509Certificate(cert).raw.toString('base64') };
    };
    const signers = { 'edge-0': await nodeKey('edge-0'), 'edge-1': await nodeKey('edge-1') };
    const signed = (data: Uint8Array, by: keyof typeof signers) => {
      const h = natsHeaders();
      h.set(SIGNER_HEADER, signers[by].der);
      h.set(SIGNATURE_HEADER, sign('sha256', data, signers[by].key).toString('base64'));
      return { headers: h };
    };
    const report = (
      from: string,
      mesh: string,
      hits: number,
      misses: number,
      distrustedPeers = 0,
      distrusted: string[] = [],
    ) =>
      encodeEvent({
        v: 1,
        type: 'node.stats',
        mesh,
        from,
        sentAtMs: Date.now(),
        body: {
          hits,
          misses,
          bytesFromPeers: 1000,
          bytesFromOrigin: 10,
          startedAtMs: 1,
          distrustedPeers,
          distrusted,
        },
      });
    const subject = subjects('shop_cdn').stats;
    let taken: Uint8Array | undefined;
    // Until the status shows the figures (the subscription is in place then): each round sends
    // garbage, another mesh's report, an unsigned one and one signed in another's name, then the two
    // that count.
    await eventually(async () => {
      nc.publish(subject, new TextEncoder().encode('garbage'));
      nc.publish(subject, report('edge-x', 'other-mesh', 0, 1000));
      // Unsigned, and signed by one node in another's name: dropped.
      const forged = report('edge-2', 'shop_cdn', 0, 1000, 9, ['edge-0']);
      nc.publish(subject, forged);
      nc.publish(subject, forged, signed(forged, 'edge-0'));
      const zero = report('edge-0', 'shop_cdn', 80, 20, 1, ['edge-9']);
      nc.publish(subject, zero, signed(zero, 'edge-0'));
      taken = zero;
      const one = report('edge-1', 'shop_cdn', 10, 90, 2, ['edge-8', 'edge-9']);
      nc.publish(subject, one, signed(one, 'edge-1'));
      await nc.flush();
      const status = (
        api.get('edgemeshes', 'shop', 'cdn') as { status?: { hitRatio?: string; bytesFromPeers?: number } }
      ).status;
      return status?.hitRatio ? status : undefined;
    }, 30_000);
    const status = (
      api.get('edgemeshes', 'shop', 'cdn') as unknown as {
        status: {
          hitRatio: string;
          bytesFromPeers: number;
          bytesFromOrigin: number;
          distrustedPeers: number;
          distrustedNodes: { node: string; by: number }[];
        };
      }
    ).status;
    assert.ok(operator.figures.dropped >= 4, `${operator.figures.dropped} dropped: the four kinds refused`);
    assert.equal(status.hitRatio, '0.45');
    assert.equal(status.bytesFromPeers, 2000);
    assert.equal(status.bytesFromOrigin, 20);
    assert.equal(status.distrustedPeers, 2, 'the most any node distrusts');
    assert.deepEqual(
      status.distrustedNodes,
      [
        { node: 'edge-9', by: 2 },
        { node: 'edge-8', by: 1 },
      ],
      'whom the agents distrust, the most distrusted first',
    );
    // A report taken already, published again (any node of the mesh could): not taken twice.
    const dropped = operator.figures.dropped;
    nc.publish(subject, taken, signed(taken!, 'edge-0'));
    await eventually(() => (operator.figures.dropped > dropped ? true : undefined));
    // Blocked (no node matches), its trust unread: unsigned reports still do not count.
    const mesh = api.get('edgemeshes', 'shop', 'cdn')!;
    api.put({ ...mesh, spec: { ...(mesh.spec as object), nodeSelector: { none: 'x' } } });
    await eventually(() =>
      (
        api.get('edgemeshes', 'shop', 'cdn') as { status?: { conditions?: { reason?: string }[] } }
      ).status?.conditions?.some((c) => c.reason === 'NoMatchingNodes')
        ? true
        : undefined,
    );
    const before = operator.figures.dropped;
    nc.publish(subject, report('edge-0', 'shop_cdn', 0, 5000, 7, ['edge-1']));
    await eventually(() => (operator.figures.dropped > before ? true : undefined));
  });

  it('says when the operator cannot reach a mesh’s NATS, without waiting for a resync', async () => {
    // A server that is no NATS: it hangs up on each connection after a while, when the reconciles
    // the new mesh caused (its children appearing) are over.
    const sockets = new Set<Socket>();
    const notNats = createServer((socket) => {
      sockets.add(socket);
      setTimeout(() => socket.destroy(), 1000).unref();
    }).listen(0, '127.0.0.1');
    await once(notNats, 'listening');
    const { port } = notNats.address() as AddressInfo;
    try {
      api.put({
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name: 'unreachable', namespace: 'shop' },
        // Without mTLS no revocation list is sent on NATS, which would make the reconcile wait for it.
        spec: {
          controlPlane: { natsUrl: `nats://127.0.0.1:${port}` },
          ports: { http: 7600, grpc: 7601 },
          security: { mtls: false },
        },
      });
      type Conditions = { status?: { conditions?: { type: string; reason: string }[] } };
      const reason = () =>
        (api.get('edgemeshes', 'shop', 'unreachable') as Conditions | undefined)?.status?.conditions?.find(
          (c) => c.type === 'ControlPlaneConnected',
        )?.reason;
      await eventually(() => reason() === 'OperatorCannotConnect' || undefined);
    } finally {
      api.remove('edgemeshes', 'shop', 'unreachable');
      notNats.close();
      for (const socket of sockets) socket.destroy();
    }
    await eventually(() => operator.figures.meshes === 1 || undefined);
  });

  it('writes the status of a mesh whose NATS does not answer without waiting for it (revocations are sent once it is up)', async () => {
    // Accepts connections and never says a word.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => void sockets.add(socket)).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const { port } = silent.address() as AddressInfo;
    try {
      api.put({
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name: 'silent', namespace: 'shop' },
        spec: { controlPlane: { natsUrl: `nats://127.0.0.1:${port}` }, ports: { http: 7610, grpc: 7611 } },
      });
      type Conditions = { status?: { conditions?: { type: string; reason: string }[] } };
      await eventually(
        () =>
          (api.get('edgemeshes', 'shop', 'silent') as Conditions | undefined)?.status?.conditions?.find(
            (c) => c.type === 'ControlPlaneConnected',
          )?.reason === 'Connecting' || undefined,
      );
    } finally {
      api.remove('edgemeshes', 'shop', 'silent');
      silent.close();
      for (const socket of sockets) socket.destroy();
    }
    await eventually(() => operator.figures.meshes === 1 || undefined);
  });

  it('forgets a deleted mesh and closes the connection no mesh uses any more', async () => {
    assert.deepEqual({ ...operator.figures, dropped: 0 }, { meshes: 1, connections: 1, dropped: 0 });
    api.remove('edgemeshes', 'shop', 'cdn');
    await eventually(
      () => (operator.figures.meshes === 0 && operator.figures.connections === 0) || undefined,
    );
  });
});
