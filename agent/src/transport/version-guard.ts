import {
  formatRange,
  negotiate,
  parseRange,
  PROTOCOL_METADATA,
  type ProtocolRange,
  UNVERSIONED,
} from '@edgemesh/contracts';
import {
  Metadata,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import type { Logger } from '../telemetry/logger.ts';

/** How many refused callers are remembered so that each is logged once. */
const MAX_REFUSALS_LOGGED = 1024;
/** How much of what a caller advertised goes into a log line or an error (a range is at most 32). */
const MAX_SAID = 64;

/** A caller's host, without the port (which each of its connections changes): `ipv4:192.0.2.7`. */
export function peerHost(call: { getPeer(): string }): string {
  return call.getPeer().replace(/:\d+$/, '');
}

export interface VersionGuardOptions {
  /** The protocol versions this node speaks. */
  ours: ProtocolRange;
  logger: Logger;
  /** Told of every refused call (a counter). */
  refused: () => void;
  /** The authenticated node of a call, when there is one (else its address is logged). */
  callerOf: (call: object) => string | undefined;
}

/**
 * Wraps the peer service's handlers so that a call whose caller speaks no protocol version in common
 * with this node (metadata `edgemesh-protocol`; none: 1.0) is refused FAILED_PRECONDITION, with this
 * node's range in the trailers under the same key, counted, and logged once per caller;
 * the handler never sees it. Calls of callers in range go through untouched.
 */
export function versionGuarded<T extends Record<string, (...args: never[]) => void>>(
  opts: VersionGuardOptions,
  handlers: T,
): T {
  const ours = formatRange(opts.ours);
  const logged = new Set<string>();
  const wrapped: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(handlers)) {
    const run = handler as (call: unknown, callback?: sendUnaryData<unknown>) => void;
    wrapped[name] = (
      call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
      callback?: sendUnaryData<unknown>,
    ) => {
      const advertised = call.metadata.get(PROTOCOL_METADATA)[0];
      const theirs = advertised === undefined ? UNVERSIONED : parseRange(String(advertised));
      if (theirs && negotiate(opts.ours, theirs)) return run(call, callback);
      const said =
        advertised === undefined
          ? 'nothing (taken as 1.0)'
          : JSON.stringify(String(advertised).slice(0, MAX_SAID));
      opts.refused();
      // Logged once per caller (its node, else its address without the port), whatever it says:
      // what it advertises is its to choose, and would otherwise make every call a new line.
      const caller = opts.callerOf(call) ?? peerHost(call);
      if (!logged.has(caller)) {
        if (logged.size >= MAX_REFUSALS_LOGGED) logged.clear();
        logged.add(caller);
        opts.logger.warn(
          { caller, method: name, theirs: said, ours },
          'peer refused: no protocol version in common (upgrade one of the two; docs/upgrades.md)',
        );
      }
      const metadata = new Metadata();
      metadata.set(PROTOCOL_METADATA, ours);
      const details = `protocol: the caller speaks ${said}, this node ${ours}: no version in common`;
      const refusal = Object.assign(new Error(details), {
        code: status.FAILED_PRECONDITION,
        details,
        metadata,
      });
      if (callback) return callback(refusal);
      call.emit('error', refusal);
    };
  }
  return wrapped as T;
}
