import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';
import type { Metadata } from '@grpc/grpc-js';
import type { Resource } from '@opentelemetry/resources';
import { startOtlpTracing } from '@edgemesh/telemetry';

/**
 * Traces: one per object fetch, across every node it touches. The context travels in W3C
 * `traceparent` headers (HTTP) and gRPC metadata (node to node), so the reader's request, the owners'
 * answers and each holder's chunk stream are one trace. Spans go to an OTLP/HTTP endpoint. Without
 * one, tracing is off and costs nothing: the API's no-op tracer, and the SDK is never loaded (it is
 * about 4 MB of an idle agent's memory). `resource`: the agent's (resource.ts), as on its metrics.
 */
export async function startTracing(
  endpoint: string | undefined,
  resource: Resource,
): Promise<{ shutdown(): Promise<void> }> {
  if (!endpoint) return { shutdown: () => Promise.resolve() };
  return startOtlpTracing(endpoint, resource);
}

export const tracer = () => trace.getTracer('edgemesh-agent');
export { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace };

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
