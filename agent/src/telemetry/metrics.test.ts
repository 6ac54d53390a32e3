import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AggregationTemporality,
  type HistogramMetricData,
  MetricReader,
  type MetricReaderOptions,
} from '@opentelemetry/sdk-metrics';
import type { StoreStats } from '../cache/object-store.ts';
import { Counters } from './counters.ts';
import { AgentMetrics } from './metrics.ts';

describe('AgentMetrics.recordRequest', () => {
  it('labels a request with its status code only when one was sent, and with error_type when it was cut', async () => {
    const metrics = new AgentMetrics({
      counters: new Counters(),
      store: () => ({}) as StoreStats,
      peersKnown: () => 0,
      runtime: false,
    });
    try {
      const route = '/v1/objects/{*key}';
      metrics.recordRequest({ method: 'PUT', path: '/v1/objects/a', route, status: 201, seconds: 0.01 });
      // A PUT whose client hung up before any answer; a GET whose client left mid-body.
      metrics.recordRequest({
        method: 'PUT',
        path: '/v1/objects/b',
        route,
        errorType: 'aborted',
        seconds: 0.01,
      });
      metrics.recordRequest({
        method: 'GET',
        path: '/v1/objects/c',
        route,
        status: 200,
        errorType: 'aborted',
        seconds: 0.01,
      });
      const series = (await metrics.scrape())
        .split('\n')
        .filter((line) => line.startsWith('http_server_request_duration_seconds_count{'))
        .map((line) => line.replace(/^[^{]*/, ''))
        .sort();
      assert.deepEqual(series, [
        '{http_request_method="GET",http_route="/v1/objects/{*key}",http_response_status_code="200",error_type="aborted"} 1',
        '{http_request_method="PUT",http_route="/v1/objects/{*key}",error_type="aborted"} 1',
        '{http_request_method="PUT",http_route="/v1/objects/{*key}",http_response_status_code="201"} 1',
      ]);
    } finally {
      await metrics.shutdown();
    }
  });

  it("gives each reader the request histogram with that reader's temporality", async () => {
    class TestReader extends MetricReader {
      constructor(opts: MetricReaderOptions) {
        super(opts);
      }
      protected override async onShutdown(): Promise<void> {}
      protected override async onForceFlush(): Promise<void> {}
    }
    const make =
      (temporality: AggregationTemporality) => (producers: MetricReaderOptions['metricProducers']) =>
        new TestReader({ aggregationTemporalitySelector: () => temporality, metricProducers: producers });
    const readers: TestReader[] = [];
    const metrics = new AgentMetrics({
      counters: new Counters(),
      store: () => ({}) as StoreStats,
      peersKnown: () => 0,
      runtime: false,
      readers: [AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE].map(
        (t) => (producers) => readers[readers.push(make(t)(producers)) - 1]!,
      ),
    });
    const counts = async (reader: TestReader) => {
      const { resourceMetrics } = await reader.collect();
      return resourceMetrics.scopeMetrics
        .flatMap((scope) => scope.metrics)
        .filter((m) => m.descriptor.name === 'http.server.request.duration')
        .flatMap((m) =>
          (m as HistogramMetricData).dataPoints.map((p) => [m.aggregationTemporality, p.value.count]),
        );
    };
    try {
      const request = {
        method: 'GET',
        path: '/v1/objects/a',
        route: '/v1/objects/{*key}',
        status: 200,
        seconds: 0.01,
      };
      metrics.recordRequest(request);
      const [delta, cumulative] = readers as [TestReader, TestReader];
      assert.deepEqual(await counts(delta), [[AggregationTemporality.DELTA, 1]]);
      metrics.recordRequest(request);
      assert.deepEqual(await counts(delta), [[AggregationTemporality.DELTA, 1]]);
      assert.deepEqual(await counts(cumulative), [[AggregationTemporality.CUMULATIVE, 2]]);
    } finally {
      await metrics.shutdown();
    }
  });
});
