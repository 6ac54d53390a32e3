import { type Context, context, propagation, ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import type { Metadata } from '@grpc/grpc-js';

/**
 * Traces: one per object fetch, across every node it touches. The context travels in W3C
 * `traceparent` headers (HTTP) and gRPC metadata (node to node), so the reader's request, the owners'
 * answers and each holder's chunk stream are one trace. Spans go to an OTLP/HTTP endpoint; without
 * one, tracing is off and costs nothing (the API's no-op tracer).
 */
export function startTracing(opts: {
  endpoint: string | undefined;
  nodeId: string;
  zone: string;
  region: string;
}): { shutdown(): Promise<void> } {
  if (!opts.endpoint) return { shutdown: () => Promise.resolve() };
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': 'edgemesh-agent',
      'service.instance.id': opts.nodeId,
      'edgemesh.zone': opts.zone,
      'edgemesh.region': opts.region,
    }),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter: new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/$/, '')}/v1/traces` }),
        scheduledDelayMillis: 500,
      }),
    ],
  });
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}

export const tracer = () => trace.getTracer('edgemesh-agent');
export { context, SpanKind, trace };

/** Puts the active trace context into outgoing gRPC metadata. */
export function injectInto(metadata: Metadata): Metadata {
  propagation.inject(context.active(), metadata, { set: (md, key, value) => md.set(key, value) });
  return metadata;
}

/** The trace context a gRPC call carries in its metadata. */
export function extractFrom(metadata: Metadata): Context {
  return propagation.extract(ROOT_CONTEXT, metadata, {
    get: (md, key) => md.get(key).map(String),
    keys: (md) => Object.keys(md.getMap()),
  });
}

/** The trace context an HTTP request carries (traceparent). */
export function extractFromHeaders(headers: Record<string, string | string[] | undefined>): Context {
  return propagation.extract(ROOT_CONTEXT, headers);
}
