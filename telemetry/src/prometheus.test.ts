import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusEndpoint, prometheusName } from './prometheus.ts';
import { observeBuildInfo } from './build-info.ts';
import { observeRuntime } from './runtime.ts';
import { promtoolCheck } from './promtool.ts';

describe('Prometheus names', () => {
  it('end in the unit and counters in _total, as Prometheus names things', () => {
    assert.equal(
      prometheusName('edgemesh.peer.received', 'counter', 'By'),
      'edgemesh_peer_received_bytes_total',
    );
    assert.equal(
      prometheusName('http.server.request.duration', 'histogram', 's'),
      'http_server_request_duration_seconds',
    );
    assert.equal(prometheusName('edgemesh.cache.size', 'gauge', 'By'), 'edgemesh_cache_size_bytes');
    assert.equal(
      prometheusName('nodejs.eventloop.utilization', 'gauge', '1'),
      'nodejs_eventloop_utilization_ratio',
    );
    assert.equal(prometheusName('edgemesh.cache.entries', 'gauge', '{object}'), 'edgemesh_cache_entries');
    assert.equal(prometheusName('edgemesh.cache.lookups', 'counter'), 'edgemesh_cache_lookups_total');
    // a name that already says its unit is left alone
    assert.equal(
      prometheusName('workqueue_queue_duration_seconds', 'histogram', 's'),
      'workqueue_queue_duration_seconds',
    );
    assert.equal(prometheusName('workqueue_adds_total', 'counter'), 'workqueue_adds_total');
  });
});

describe('the Prometheus endpoint', () => {
  const provider = () => {
    const endpoint = new PrometheusEndpoint({
      labels: { zone: 'cloud.availability_zone', mesh: 'edgemesh.mesh' },
    });
    const meters = new MeterProvider({
      readers: [endpoint.reader],
      resource: resourceFromAttributes({
        'service.name': 't',
        'cloud.availability_zone': 'z1',
        'edgemesh.mesh': 'm1',
      }),
    });
    return { endpoint, meters };
  };

  it('serves metrics under those names, with the chosen resource attributes on every series', async () => {
    const { endpoint, meters } = provider();
    const meter = meters.getMeter('t');
    meter.createCounter('edgemesh.stored', { unit: 'By' }).add(5);
    meter.createHistogram('edgemesh.wait.duration', { unit: 's' }).record(0.2);
    observeBuildInfo(meter, { version: '1.2.3', revision: 'abc' });
    const text = await endpoint.text();
    assert.match(text, /^edgemesh_stored_bytes_total\{zone="z1",mesh="m1"\} 5$/m);
    assert.match(text, /^edgemesh_wait_duration_seconds_count\{zone="z1",mesh="m1"\} 1$/m);
    assert.match(text, /^edgemesh_build_info\{version="1.2.3",revision="abc",zone="z1",mesh="m1"\} 1$/m);
    assert.match(text, /^target_info\{.*service_name="t".*\} 1$/m);
    assert.doesNotMatch(text, /otel_scope_name/, 'no instrumentation scope labels');
    await meters.shutdown();
  });

  it('passes promtool check metrics, with the process and runtime metrics too', async (t) => {
    const { endpoint, meters } = provider();
    const runtime = observeRuntime(meters);
    meters.getMeter('t').createCounter('edgemesh.stored', { unit: 'By' }).add(1);
    // The event loop's utilisation is reported over time it has run (none before its first turn).
    await new Promise((resolve) => setImmediate(resolve));
    const text = await endpoint.text();
    runtime.stop();
    await meters.shutdown();
    const problems = await promtoolCheck(text);
    if (problems === undefined) t.skip('promtool is not installed (Debian: apt-get install prometheus)');
    else assert.equal(problems, '', 'promtool check metrics finds nothing');
    for (const name of [
      'process_cpu_time_seconds_total',
      'process_memory_usage_bytes',
      'nodejs_eventloop_utilization_ratio',
      'v8js_memory_heap_used_bytes',
    ])
      assert.match(text, new RegExp(`^${name}\\{`, 'm'), name);
  });
});
