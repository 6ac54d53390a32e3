import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { trace, ValueType } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  MeterProvider,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import { eventually } from '../../agent/harness/agent-process.ts';
import { startOtlpReceiver } from '../../agent/harness/otlp-receiver.ts';
import { otlpMetricReader, otlpMetricReaderFactory, startOtlpTracing } from './otlp.ts';

describe('OTLP/HTTP export', () => {
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  before(async () => {
    receiver = await startOtlpReceiver();
  });
  after(() => receiver.close());

  it('sends spans to /v1/traces with the resource it was given', async () => {
    // A trailing slash on the endpoint is fine.
    const tracing = await startOtlpTracing(
      `${receiver.url}/`,
      resourceFromAttributes({ 'service.name': 'edgemesh-test', 'service.instance.id': 'n1' }),
    );
    trace.getTracer('t').startSpan('edgemesh.test_span').end();
    await tracing.shutdown(); // flushes
    const sent = receiver.spans.find((s) => s.name === 'edgemesh.test_span');
    assert.ok(sent, 'the span arrived at /v1/traces');
    assert.equal(sent.resource['service.instance.id'], 'n1');
    assert.equal(sent.resource['service.name'], 'edgemesh-test');
  });

  it('pushes metrics to /v1/metrics every OTEL_METRIC_EXPORT_INTERVAL ms', async () => {
    const reader = await otlpMetricReader(receiver.url, { OTEL_METRIC_EXPORT_INTERVAL: '100' });
    const provider = new MeterProvider({ readers: [reader] });
    provider.getMeter('t').createCounter('edgemesh.test_counter').add(3);
    await eventually(
      () => Promise.resolve(receiver.metrics.some((m) => m.name === 'edgemesh.test_counter') || undefined),
      5000,
      'a metrics push within 5 s at a 100 ms interval',
    );
    await provider.shutdown();
  });

  it("pushes what the factory's producers give too, beside its MeterProvider's instruments", async () => {
    const make = await otlpMetricReaderFactory(receiver.url, { OTEL_METRIC_EXPORT_INTERVAL: '100' });
    const resource = resourceFromAttributes({ 'service.name': 'edgemesh-test' });
    const produced: MetricProducer = {
      collect: () =>
        Promise.resolve({
          resourceMetrics: {
            resource,
            scopeMetrics: [
              {
                scope: { name: 't' },
                metrics: [
                  {
                    descriptor: {
                      name: 'edgemesh.test_produced',
                      description: '',
                      unit: '',
                      valueType: ValueType.INT,
                    },
                    aggregationTemporality: AggregationTemporality.CUMULATIVE,
                    dataPointType: DataPointType.SUM,
                    isMonotonic: true,
                    dataPoints: [{ attributes: {}, startTime: [0, 0], endTime: [1, 0], value: 7 }],
                  },
                ],
              },
            ],
          },
          errors: [],
        }),
    };
    const provider = new MeterProvider({ readers: [make([produced])], resource });
    await eventually(
      () => Promise.resolve(receiver.metrics.some((m) => m.name === 'edgemesh.test_produced') || undefined),
      5000,
      'the produced metric pushed within 5 s at a 100 ms interval',
    );
    await provider.shutdown();
  });
});
