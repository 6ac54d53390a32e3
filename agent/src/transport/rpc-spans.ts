import { Metadata } from '@grpc/grpc-js';
import type { Attributes } from '@opentelemetry/api';
import {
  ATTR_RPC_METHOD,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  RPC_SYSTEM_NAME_VALUE_GRPC,
} from '@opentelemetry/semantic-conventions';
import { context, propagation, SpanKind, SpanStatusCode, trace, tracer } from '../telemetry/tracing.ts';

/** The peer service's full name, as gRPC and the spans name it. */
export const PEER_SERVICE = 'edgemesh.peer.v1.Peer';

/**
 * The peer RPCs that get spans, on both sides: everything a fetch, a write or a message does.
 * Pings and probes (a few a second, all the time) would only be noise.
 */
export const TRACED_RPCS: ReadonlySet<string> = new Set([
  'GetManifest',
  'FetchChunks',
  'Watch',
  'FetchOrigin',
  'Replicate',
  'Hold',
  'Purge',
  'Deliver',
]);

/** A span's name and RPC attributes (OpenTelemetry's RPC conventions) for `method`. */
export function rpcSpan(method: string): { name: string; attributes: Attributes } {
  const name = `${PEER_SERVICE}/${method}`;
  return {
    name,
    attributes: { [ATTR_RPC_SYSTEM_NAME]: RPC_SYSTEM_NAME_VALUE_GRPC, [ATTR_RPC_METHOD]: name },
  };
}

/** An outgoing call's metadata, carrying its trace context, and a way to end the call's span. */
export interface ClientCall {
  metadata: Metadata;
  /** Ends the client span (once; later calls do nothing), as an error when given one. */
  end(error?: Error | null): void;
}

/**
 * A call to a peer at `address` (host:port): for TRACED_RPCS a client span, child of the active
 * one, whose context the metadata carries, so the peer's server span is its child; for others only
 * the active context, as before.
 */
export function clientCall(method: string, address: string): ClientCall {
  const metadata = new Metadata();
  const setter = { set: (md: Metadata, key: string, value: string) => md.set(key, value) };
  if (!TRACED_RPCS.has(method)) {
    propagation.inject(context.active(), metadata, setter);
    return { metadata, end: () => {} };
  }
  const { name, attributes } = rpcSpan(method);
  const colon = address.lastIndexOf(':');
  const port = Number(address.slice(colon + 1));
  const span = tracer().startSpan(name, {
    kind: SpanKind.CLIENT,
    attributes: {
      ...attributes,
      [ATTR_SERVER_ADDRESS]: colon > 0 ? address.slice(0, colon).replace(/^\[(.*)\]$/, '$1') : address,
      ...(colon > 0 && Number.isInteger(port) ? { [ATTR_SERVER_PORT]: port } : {}),
    },
  });
  propagation.inject(trace.setSpan(context.active(), span), metadata, setter);
  let ended = false;
  return {
    metadata,
    end(error) {
      if (ended) return;
      ended = true;
      if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      span.end();
    },
  };
}
