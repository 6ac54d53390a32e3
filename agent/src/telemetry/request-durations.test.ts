import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Attributes } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type HistogramMetricData,
  MeterProvider,
  MetricReader,
} from '@opentelemetry/sdk-metrics';
import { PrometheusEndpoint } from '@edgemesh/telemetry';
import { RequestDurations } from './request-durations.ts';

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NAME = 'http.server.request.duration';
const DESCRIPTION = 'Duration of HTTP server requests';
const resource = resourceFromAttributes({ 'service.name': 'test' });

/** Requests as the agent records them: method, route, status, error type, seconds. */
type Request = [string, string, number | undefined, string | undefined, number];
const REQUESTS: Request[] = [
  ['GET', '/v1/objects/{*key}', 200, undefined, 0.0001],
  ['GET', '/v1/objects/{*key}', 200, undefined, 0.001], // on a bound: counted in that bound's bucket
  ['GET', '/v1/objects/{*key}', 200, undefined, 0.0010001],
  ['GET', '/v1/objects/{*key}', 200, undefined, 10],
  ['GET', '/v1/objects/{*key}', 200, undefined, 42], // above every bound
  ['GET', '/v1/objects/{*key}', 404, undefined, 0.003],
  ['PUT', '/v1/objects/{*key}', undefined, 'aborted', 0.2],
  ['GET', '/v1/objects/{*key}', 200, 'aborted', 0.07],
  ['BREW', '/v1/status', 405, undefined, 0], // a method the conventions do not name: _OTHER
  ['brew', '/v1/status', 405, undefined, 0.5], // methods are case-sensitive: _OTHER too
  ['GET', '/v1/status', 200, undefined, -1], // negative: not recorded (the SDK warns and drops it)
  ['GET', '/v1/status', 200, undefined, Number.NaN], // nor NaN
  ['DELETE', '/v1/objects/{*key}', 204, undefined, 0.0125],
];

/** The SDK's histogram given the same requests, with the attributes metrics.ts used to give it. */
function sdkRecord(provider: MeterProvider, requests: Request[]): void {
  const histogram = provider.getMeter('edgemesh-agent').createHistogram(NAME, {
    description: DESCRIPTION,
    unit: 's',
    advice: { explicitBucketBoundaries: BOUNDS },
  });
  const known = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE']);
  for (const [method, route, status, errorType, seconds] of requests) {
    const attributes: Attributes = {
      'http.request.method': known.has(method) ? method : '_OTHER',
      'http.route': route,
    };
    if (status !== undefined) attributes['http.response.status_code'] = status;
    if (errorType !== undefined) attributes['error.type'] = errorType;
    if (seconds >= 0) histogram.record(seconds, attributes); // the SDK warns of a negative value
  }
}

function ours(): RequestDurations {
  return new RequestDurations({
    name: NAME,
    description: DESCRIPTION,
    bounds: BOUNDS,
    scope: 'edgemesh-agent',
    resource,
  });
}

/** A reader with a fixed temporality, read on demand. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

const points = async (reader: MetricReader) => {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  const metric = resourceMetrics.scopeMetrics
    .flatMap((s) => s.metrics)
    .find((m) => m.descriptor.name === NAME);
  assert.ok(metric, `${NAME} collected`);
  return (metric as HistogramMetricData).dataPoints
    .map((p) => ({ attributes: p.attributes, value: p.value }))
    .sort((a, b) => JSON.stringify(a.attributes).localeCompare(JSON.stringify(b.attributes)));
};

describe('RequestDurations', () => {
  it("serves the same Prometheus text as the SDK's histogram given the same requests", async () => {
    const sdk = new PrometheusEndpoint();
    const sdkProvider = new MeterProvider({ readers: [sdk.reader], resource });
    sdkRecord(sdkProvider, REQUESTS);
    const durations = ours();
    const mine = new PrometheusEndpoint({
      producers: [durations.producer(() => AggregationTemporality.CUMULATIVE)],
    });
    const provider = new MeterProvider({ readers: [mine.reader], resource });
    // Its HELP, TYPE and every series' lines (series in any order: Prometheus reads them by label).
    const text = async (e: PrometheusEndpoint) =>
      (await e.text())
        .split('\n')
        .filter((l) => l.includes('http_server_request_duration'))
        .sort();
    // Before any request: neither has anything of it, not even its HELP line.
    const sdkEmpty = new PrometheusEndpoint();
    const sdkEmptyProvider = new MeterProvider({ readers: [sdkEmpty.reader], resource });
    sdkRecord(sdkEmptyProvider, []);
    assert.deepEqual(await text(mine), []);
    assert.deepEqual(await text(sdkEmpty), []);
    for (const r of REQUESTS) durations.record(...r);
    const expected = await text(sdk);
    assert.ok(expected.length > 50, 'the SDK served the histogram');
    assert.deepEqual(await text(mine), expected);
    await Promise.all([sdkProvider.shutdown(), provider.shutdown(), sdkEmptyProvider.shutdown()]);
  });

  it('gives a delta reader what arrived since its last collection, and a cumulative one everything', async () => {
    const durations = ours();
    const delta = new TestReader({
      aggregationTemporalitySelector: () => AggregationTemporality.DELTA,
      metricProducers: [durations.producer(() => AggregationTemporality.DELTA)],
    });
    const cumulative = new TestReader({
      metricProducers: [durations.producer(() => AggregationTemporality.CUMULATIVE)],
    });
    const provider = new MeterProvider({ readers: [delta, cumulative], resource });
    const [first, second] = [REQUESTS.slice(0, 5), REQUESTS.slice(5)];
    for (const r of first) durations.record(...r);
    await points(delta);
    for (const r of second) durations.record(...r);
    // The SDK's delta histogram given only the second part, without min and max.
    const expected = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
    const sdkProvider = new MeterProvider({ readers: [expected], resource });
    sdkRecord(sdkProvider, first);
    await expected.collect();
    sdkRecord(sdkProvider, second);
    // Min, max and sum of the interval alone, as the SDK's delta has them (the sum not a difference
    // of running totals).
    assert.deepEqual(await points(delta), await points(expected));
    // Nothing since: no point (and no metric) for a delta reader, as the SDK.
    const { resourceMetrics } = await delta.collect();
    assert.deepEqual(
      resourceMetrics.scopeMetrics.flatMap((m) => m.metrics),
      [],
    );
    // The cumulative reader still sees every request, min and max included.
    const all = new TestReader();
    const allProvider = new MeterProvider({ readers: [all], resource });
    sdkRecord(allProvider, REQUESTS);
    assert.deepEqual(await points(cumulative), await points(all));
    await Promise.all([provider.shutdown(), sdkProvider.shutdown(), allProvider.shutdown()]);
  });

  it('puts label sets beyond 2,000 into one overflow set, as the SDK does', async () => {
    const many: Request[] = Array.from({ length: 2100 }, (_, i) => [
      'GET',
      `/route/${i}`,
      200,
      undefined,
      0.01,
    ]);
    const sdk = new PrometheusEndpoint();
    const sdkProvider = new MeterProvider({ readers: [sdk.reader], resource });
    sdkRecord(sdkProvider, many);
    const durations = ours();
    const mine = new PrometheusEndpoint({
      producers: [durations.producer(() => AggregationTemporality.CUMULATIVE)],
    });
    const provider = new MeterProvider({ readers: [mine.reader], resource });
    for (const r of many) durations.record(...r);
    const counts = async (e: PrometheusEndpoint) =>
      (await e.text())
        .split('\n')
        .filter((l) => l.startsWith('http_server_request_duration_seconds_count'))
        .sort();
    const expected = await counts(sdk);
    assert.equal(expected.length, 2000);
    assert.ok(
      expected.includes('http_server_request_duration_seconds_count{otel_metric_overflow="true"} 101'),
    );
    assert.deepEqual(await counts(mine), expected);
    await Promise.all([sdkProvider.shutdown(), provider.shutdown()]);
  });
});
