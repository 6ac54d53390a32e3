import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, it } from 'node:test';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusEndpoint } from './prometheus.ts';
import { observeNode, observeProcess, observeRuntime } from './runtime.ts';

/** The value of one series of a Prometheus text, by its name and labels as written. */
function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `${series} in\n${text}`);
  return Number(line.slice(series.length + 1));
}

/** Spends about `ms` of this thread's CPU time. */
function spin(ms: number): void {
  const start = process.cpuUsage();
  while (true) {
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1000 >= ms) return;
  }
}

describe('the process metrics (observeProcess)', () => {
  it('give CPU time by mode, its utilisation since the last collection and resident memory', async () => {
    const endpoint = new PrometheusEndpoint();
    const meters = new MeterProvider({ readers: [endpoint.reader] });
    observeProcess(meters.getMeter('t'));
    const user = 'process_cpu_time_seconds_total{process_cpu_state="user"}';
    const system = 'process_cpu_time_seconds_total{process_cpu_state="system"}';
    const utilization = 'process_cpu_utilization_ratio{process_cpu_state="user"}';
    // The CPU time and wall time around and between the two collections: the collection's own
    // interval lies between the inner and the outer span of each.
    const outerStart = { at: performance.now(), usage: process.cpuUsage() };
    const first = await endpoint.text();
    const innerStart = { at: performance.now(), usage: process.cpuUsage() };
    spin(200);
    const innerEnd = { at: performance.now(), usage: process.cpuUsage(innerStart.usage) };
    const second = await endpoint.text();
    const outerEnd = { at: performance.now(), usage: process.cpuUsage(outerStart.usage) };
    // CPU time: what process.cpuUsage() says, in seconds, rising by what was spent in between.
    assert.ok(value(first, user) >= outerStart.usage.user / 1e6);
    const rise = value(second, user) - value(first, user);
    assert.ok(
      rise >= innerEnd.usage.user / 1e6 && rise <= outerEnd.usage.user / 1e6,
      `user time rose ${rise} s`,
    );
    assert.ok(value(second, system) >= value(first, system));
    // Utilisation: the user time spent between the collections over the wall time and the CPUs.
    const cpus = availableParallelism();
    const ratio = value(second, utilization);
    const low = innerEnd.usage.user / ((outerEnd.at - outerStart.at) * 1000 * cpus);
    const high = outerEnd.usage.user / ((innerEnd.at - innerStart.at) * 1000 * cpus);
    assert.ok(ratio >= low && ratio <= high, `utilisation ${ratio}, expected ${low} to ${high}`);
    // Resident memory: this process's, as the kernel counts it.
    const rss = value(second, 'process_memory_usage_bytes');
    assert.ok(Math.abs(rss - process.memoryUsage.rss()) < 64 * 2 ** 20, `rss ${rss}`);
    assert.match(second, /^# TYPE process_cpu_time_seconds_total counter$/m);
    assert.match(second, /^# TYPE process_memory_usage_bytes gauge$/m);
    await meters.shutdown();
  });
});

describe('the runtime metrics (observeNode)', () => {
  it('give the event loop’s utilisation, time and delay, GC pauses, heap spaces and active resources, until stopped', async () => {
    const endpoint = new PrometheusEndpoint();
    const meters = new MeterProvider({ readers: [endpoint.reader] });
    const runtime = observeNode(meters.getMeter('t'));
    // Garbage for the collector, and a timer that keeps the loop alive (an active resource).
    let junk: object[] = [];
    for (let i = 0; i < 300_000; i++) junk.push({ i });
    junk = [];
    const timer = setInterval(() => {}, 1000);
    // The delay is reported once the monitor has 5 samples (10 ms apart): collect until it is.
    let text = '';
    for (let tries = 0; !/^nodejs_eventloop_delay_p99_seconds /m.test(text); tries++) {
      assert.ok(tries < 500, 'the event loop delay is reported');
      await new Promise((resolve) => setImmediate(resolve));
      text = await endpoint.text();
    }
    clearInterval(timer);
    for (const series of [
      'nodejs_eventloop_utilization_ratio',
      'nodejs_eventloop_time_seconds_total{nodejs_eventloop_state="active"}',
      'nodejs_eventloop_time_seconds_total{nodejs_eventloop_state="idle"}',
      'nodejs_eventloop_delay_min_seconds',
      'nodejs_eventloop_delay_max_seconds',
      'nodejs_eventloop_delay_mean_seconds',
      'nodejs_eventloop_delay_stddev_seconds',
      'nodejs_eventloop_delay_p50_seconds',
      'nodejs_eventloop_delay_p90_seconds',
      'v8js_memory_heap_space_available_size_bytes{v8js_heap_space_name="old_space"}',
      'v8js_memory_heap_space_physical_size_bytes{v8js_heap_space_name="old_space"}',
      'v8js_memory_heap_used_bytes{v8js_heap_space_name="old_space"}',
      'v8js_memory_heap_space_size_bytes{v8js_heap_space_name="new_space"}',
      'v8js_resource_active{v8js_resource_type="Timeout"}',
    ])
      assert.ok(value(text, series) >= 0, series);
    assert.ok(value(text, 'nodejs_eventloop_utilization_ratio') <= 1);
    // Collections back to back: no NaN (a utilisation over no time is left out, not 0/0).
    const [one, two] = await Promise.all([endpoint.text(), endpoint.text()]);
    assert.doesNotMatch(one + two, /\bNaN\b/);
    assert.ok(
      value(text, 'nodejs_eventloop_delay_p99_seconds') >= value(text, 'nodejs_eventloop_delay_p50_seconds'),
    );
    assert.match(
      text,
      /^v8js_gc_duration_seconds_count\{v8js_gc_type="minor"\} [1-9]/m,
      'the collections were seen',
    );
    // Stopped: no more readings (an SDK keeps reporting a cumulative series' last value).
    runtime.stop();
    const active = 'nodejs_eventloop_time_seconds_total{nodejs_eventloop_state="active"}';
    const stopped = value(await endpoint.text(), active);
    for (let i = 0; i < 100_000; i++) junk.push({ i });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(value(await endpoint.text(), active), stopped, 'nothing read once stopped');
    await meters.shutdown();
  });
});

describe('observeRuntime', () => {
  it('stops every reading it started, the process’s too', async () => {
    const endpoint = new PrometheusEndpoint();
    const meters = new MeterProvider({ readers: [endpoint.reader] });
    const runtime = observeRuntime(meters);
    const user = 'process_cpu_time_seconds_total{process_cpu_state="user"}';
    const active = 'nodejs_eventloop_time_seconds_total{nodejs_eventloop_state="active"}';
    const before = await endpoint.text();
    assert.ok(value(before, user) > 0 && value(before, active) > 0);
    runtime.stop();
    runtime.stop(); // twice: nothing more to stop, no error
    const stopped = await endpoint.text();
    spin(50);
    const later = await endpoint.text();
    assert.equal(value(later, user), value(stopped, user), 'process CPU time read once stopped');
    assert.equal(value(later, active), value(stopped, active), 'event loop time read once stopped');
    await meters.shutdown();
  });
});
