import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, it } from 'node:test';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusEndpoint } from './prometheus.ts';
import { observeProcess } from './runtime.ts';

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
