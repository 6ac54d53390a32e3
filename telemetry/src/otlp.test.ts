import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { otlpMetricReader, startOtlpTracing } from './otlp.ts';

describe('OTLP/HTTP export', () => {
  const posts: { path: string; body: string }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      posts.push({ path: req.url ?? '', body: Buffer.concat(parts).toString('utf8') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  let endpoint: string;
  before(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`; // a trailing slash is fine
  });
  after(() => server.close());

  it('sends spans to /v1/traces with the resource it was given', async () => {
    const tracing = await startOtlpTracing(endpoint, {
      'service.name': 'edgemesh-test',
      'service.instance.id': 'n1',
    });
    trace.getTracer('t').startSpan('edgemesh.test_span').end();
    await tracing.shutdown(); // flushes
    const sent = posts.find((p) => p.path === '/v1/traces');
    assert.ok(sent, 'a POST to /v1/traces');
    assert.match(sent.body, /edgemesh\.test_span/);
    assert.match(sent.body, /"service\.instance\.id"/);
    assert.match(sent.body, /"n1"/);
  });

  it('pushes metrics to /v1/metrics every OTEL_METRIC_EXPORT_INTERVAL ms', async () => {
    const reader = await otlpMetricReader(endpoint, { OTEL_METRIC_EXPORT_INTERVAL: '100' });
    const provider = new MeterProvider({ readers: [reader] });
    provider.getMeter('t').createCounter('edgemesh.test_counter').add(3);
    const deadline = Date.now() + 5000;
    while (!posts.some((p) => p.path === '/v1/metrics' && p.body.includes('edgemesh.test_counter'))) {
      assert.ok(Date.now() < deadline, 'no metrics push within 5 s at a 100 ms interval');
      await new Promise((r) => setTimeout(r, 20));
    }
    await provider.shutdown();
  });
});
