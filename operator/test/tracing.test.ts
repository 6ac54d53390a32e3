import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startOtlpReceiver } from '../../agent/harness/otlp-receiver.ts';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import type { Operator } from '../src/controller.ts';
import { otlpMetricReader } from '@edgemesh/telemetry';
import { operatorResource, startTracing } from '../src/kit/tracing.ts';
import { eventually, node } from './support.ts';

describe('operator traces and metrics (OTLP)', () => {
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let tracing: { shutdown(): Promise<void> };
  let api: FakeApiServer;
  let operator: Operator;

  before(async () => {
    receiver = await startOtlpReceiver();
    tracing = await startTracing(
      receiver.url,
      await operatorResource('op-1', { version: 'test', revision: 'r' }),
    );
    api = await startFakeApiServer();
    api.put(node('edge-0', 'z1', 'r1'));
    operator = await startTestOperator(api, {
      identity: 'op-1',
      metricReaders: [await otlpMetricReader(receiver.url, { OTEL_METRIC_EXPORT_INTERVAL: '300' })],
    });
  });
  after(async () => {
    await operator?.stop();
    await tracing?.shutdown();
    await api?.close();
    receiver?.close();
  });

  it('exports a span per reconcile, naming the mesh', async () => {
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'cdn', namespace: 'shop' },
      spec: { controlPlane: { natsUrl: 'nats://127.0.0.1:1' } },
    });
    const span = await eventually(
      () =>
        receiver.spans.find(
          (s) => s.name === 'edgemesh.reconcile' && s.attributes['edgemesh.mesh'] === 'shop/cdn',
        ),
      15_000,
    );
    assert.equal(span.resource['service.name'], 'edgemesh-operator');
    assert.equal(span.resource['service.instance.id'], 'op-1');
  });

  it('pushes its reconcile and queue metrics over OTLP, with the replica as resource', async () => {
    const got = await eventually(
      () => receiver.metrics.find((m) => m.name === 'controller_runtime_reconcile'),
      10_000,
    );
    assert.equal(got.resource['service.name'], 'edgemesh-operator');
    assert.equal(got.resource['service.instance.id'], 'op-1');
    for (const name of ['workqueue_depth', 'workqueue_adds', 'controller_runtime_reconcile_time_seconds'])
      assert.ok(
        receiver.metrics.some((m) => m.name === name),
        name,
      );
  });
});
