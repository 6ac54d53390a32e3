import {
  type ControlEvent,
  decodeEvent,
  encodeEvent,
  eventVersion,
  type ProtocolRange,
  subjectFor,
  subjects,
} from '@edgemesh/contracts';
import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  headers as natsHeaders,
  type MsgHdrs,
  type NatsConnection,
} from '@nats-io/transport-node';
import { ATTR_MESSAGING_DESTINATION_NAME, ATTR_MESSAGING_SYSTEM } from '@edgemesh/telemetry';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, tracer } from '../telemetry/tracing.ts';
import type { EventSigner } from '../security/event-signer.ts';

export type ControlState = 'off' | 'connecting' | 'connected' | 'disconnected' | 'closed';

/**
 * The agent's side of the control plane: publish events, receive validated ones. Events are hints
 * (see the trust note in @edgemesh/contracts); nothing the data plane needs waits on this.
 */
export interface ControlPlane {
  state(): ControlState;
  /** Sends `event` if connected; otherwise it is dropped (counted), as events are re-sent periodically. */
  publish(event: ControlEvent): void;
  /** Receives every valid event of this mesh sent by others. */
  onEvent(handler: (event: ControlEvent) => void): void;
  /** Called on every (re)connection, e.g. to announce at once instead of at the next period. */
  onConnect(handler: () => void): void;
  close(): Promise<void>;
}

/** No control plane configured: the agent runs on static peers alone. */
export const noControlPlane: ControlPlane = {
  state: () => 'off',
  publish: () => undefined,
  onEvent: () => undefined,
  onConnect: () => undefined,
  close: () => Promise.resolve(),
};

export interface NatsControlPlaneOptions {
  servers: string[];
  /**
   * A NATS credentials file (user JWT and seed), read at every connect: the server cuts a user whose
   * JWT expired, and the reconnect takes the renewed file.
   */
  credentialsFile?: string | undefined;
  /** The certificate the server is checked by: TLS or no connection. */
  caFile?: string | undefined;
  mesh: string;
  nodeId: string;
  counters: Counters;
  logger: Logger;
  /**
   * Signs what this node publishes and checks what it receives (security/event-signer.ts); without
   * it (mTLS off) events are unsigned and taken as hints, as before.
   */
  signer?: EventSigner;
  /**
   * The protocol versions this node speaks (default: this build's): events go out at its max, and
   * received ones outside it are dropped (`unsupported-version`).
   */
  protocol?: ProtocolRange;
}

/**
 * NATS, connected in the background and reconnected forever: the agent starts and serves without it.
 * Own messages are not echoed back. Every received message is size-checked and validated; garbage is
 * dropped and counted by reason, never acted on.
 */
export class NatsControlPlane implements ControlPlane {
  readonly #opts: NatsControlPlaneOptions;
  readonly #handlers: ((event: ControlEvent) => void)[] = [];
  readonly #connectHandlers: (() => void)[] = [];
  #nc: NatsConnection | undefined;
  #state: ControlState = 'connecting';

  private constructor(opts: NatsControlPlaneOptions) {
    this.#opts = opts;
  }

  static start(opts: NatsControlPlaneOptions): NatsControlPlane {
    const plane = new NatsControlPlane(opts);
    plane
      .#connect()
      .catch((error: unknown) =>
        opts.logger.error({ err: (error as Error).message }, 'control plane: connecting failed'),
      );
    return plane;
  }

  state(): ControlState {
    return this.#state;
  }

  onEvent(handler: (event: ControlEvent) => void): void {
    this.#handlers.push(handler);
  }

  onConnect(handler: () => void): void {
    this.#connectHandlers.push(handler);
  }

  #connected(): void {
    this.#state = 'connected';
    for (const handler of this.#connectHandlers) handler();
  }

  publish(event: ControlEvent): void {
    const nc = this.#nc;
    if (!nc || this.#state !== 'connected') {
      Counters.bump(this.#opts.counters.controlDropped, 'not-connected');
      return;
    }
    const data = encodeEvent(this.#versioned(event));
    const subject = subjectFor(this.#opts.mesh, event.type);
    const signed = this.#opts.signer?.sign(data);
    // Inside a trace (a DELETE's purge), the event carries it on in a `traceparent` header, so the
    // nodes that act on it join the same trace; periodic events are sent without one.
    const active = trace.getActiveSpan();
    const withHeaders = (carrier: Record<string, string>) => {
      const h = natsHeaders();
      for (const [k, v] of Object.entries({ ...carrier, ...signed })) h.set(k, v);
      return h;
    };
    if (!active) nc.publish(subject, data, signed ? { headers: withHeaders({}) } : {});
    else {
      const span = tracer().startSpan(`publish ${event.type}`, {
        kind: SpanKind.PRODUCER,
        attributes: { [ATTR_MESSAGING_SYSTEM]: 'nats', [ATTR_MESSAGING_DESTINATION_NAME]: subject },
      });
      const carrier: Record<string, string> = {};
      propagation.inject(trace.setSpan(context.active(), span), carrier);
      nc.publish(subject, data, { headers: withHeaders(carrier) });
      span.end();
    }
    this.#opts.counters.controlBytesOut += data.length;
  }

  /** `event` stamped with the version this node sends at (contracts' eventVersion). */
  #versioned(event: ControlEvent): ControlEvent {
    const version = eventVersion(this.#opts.protocol);
    const stamped: ControlEvent = { ...event, ...version };
    if (version.minor === undefined) delete stamped.minor; // sent at x.0: no minor field
    return stamped;
  }

  async close(): Promise<void> {
    this.#state = 'closed';
    await this.#nc
      ?.drain()
      .catch((error: Error) => this.#opts.logger.debug({ err: error.message }, 'NATS drain'));
  }

  async #connect(): Promise<void> {
    const { logger, mesh, nodeId } = this.#opts;
    try {
      const nc = await connect({
        servers: this.#opts.servers,
        name: `edgemesh-agent/${mesh}/${nodeId}`,
        noEcho: true,
        waitOnFirstConnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        pingInterval: 5000,
        // Credentials refused (expired, say) may be renewed on disk: keep trying, as for any fault.
        ignoreAuthErrorAbort: true,
        ...(this.#opts.credentialsFile
          ? { authenticator: credsAuthenticator(() => readFileSync(this.#opts.credentialsFile!)) }
          : {}),
        ...(this.#opts.caFile ? { tls: { caFile: this.#opts.caFile } } : {}),
      });
      if (this.#state === 'closed') return void (await nc.close());
      this.#nc = nc;
      nc.subscribe(subjects(mesh).all, {
        callback: (error, msg) => {
          if (!error) return this.#receive(msg.data, msg.headers);
          // The server refused this mesh's subjects: credentials of another mesh, or none it allows.
          logger.error(
            { err: error.message, subject: subjects(mesh).all },
            'control plane: NATS refused this mesh’s subjects; check the credentials',
          );
        },
      });
      this.#watch(nc).catch((error: unknown) =>
        logger.warn({ err: (error as Error).message }, 'control plane: status watch ended'),
      );
      logger.info({ servers: this.#opts.servers }, 'control plane connected');
      this.#connected();
    } catch (error) {
      this.#state = 'closed';
      logger.error({ err: (error as Error).message }, 'control plane gave up connecting');
    }
  }

  async #watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.#state === 'closed') return;
      if (s.type === 'disconnect') {
        this.#state = 'disconnected';
        this.#opts.logger.warn('control plane disconnected; data plane carries on, reconnecting');
      } else if (s.type === 'reconnect') {
        this.#opts.logger.info('control plane reconnected');
        this.#connected();
      }
    }
  }

  #receive(data: Uint8Array, headers: MsgHdrs | undefined): void {
    const { counters } = this.#opts;
    counters.controlMessagesIn++;
    counters.controlBytesIn += data.length;
    const result = decodeEvent(this.#opts.mesh, data, this.#opts.protocol);
    if (!result.ok) {
      Counters.bump(counters.controlDropped, result.reason);
      return;
    }
    const refused = this.#opts.signer?.check(data, (name) => headers?.get(name) || undefined, result.event);
    if (refused) {
      Counters.bump(counters.controlDropped, refused);
      return;
    }
    const traceparent = headers?.get('traceparent');
    if (!traceparent) return this.#handle(result.event);
    // Sent inside a trace: handle it in a span of that trace (a malformed header: of a new trace).
    const parent = propagation.extract(ROOT_CONTEXT, {
      traceparent,
      tracestate: headers?.get('tracestate') ?? '',
    });
    const span = tracer().startSpan(
      `process ${result.event.type}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: { [ATTR_MESSAGING_SYSTEM]: 'nats', 'edgemesh.from': result.event.from },
      },
      parent,
    );
    context.with(trace.setSpan(parent, span), () => this.#handle(result.event));
    span.end();
  }

  #handle(event: ControlEvent): void {
    const { counters } = this.#opts;
    for (const handler of this.#handlers) {
      try {
        handler(event);
      } catch (error) {
        Counters.bump(counters.controlDropped, 'handler-failed');
        this.#opts.logger.error({ err: error, type: event.type }, 'control event handler failed');
      }
    }
  }
}
