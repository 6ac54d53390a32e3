import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { encodeEvent, subjects } from '@edgemesh/contracts';
import { connect, type NatsConnection } from '@nats-io/transport-node';
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

  it('sums the nodes’ reports into the status, and ignores garbage and other meshes', async () => {
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
    nc.publish(subject, new TextEncoder().encode('garbage'));
    nc.publish(subject, report('edge-x', 'other-mesh', 0, 1000));
    // Let the subscription be in place before the reports that count.
    await eventually(async () => {
      nc.publish(subject, report('edge-0', 'shop_cdn', 80, 20, 1, ['edge-9']));
      nc.publish(subject, report('edge-1', 'shop_cdn', 10, 90, 2, ['edge-8', 'edge-9']));
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
  });

  it('forgets a deleted mesh and closes the connection no mesh uses any more', async () => {
    assert.deepEqual(operator.figures, { meshes: 1, connections: 1 });
    api.remove('edgemeshes', 'shop', 'cdn');
    await eventually(
      () => (operator.figures.meshes === 0 && operator.figures.connections === 0) || undefined,
    );
  });
});
