import { type ControlEvent, decodeEvent, encodeEvent, subjectFor, subjects } from '@edgemesh/contracts';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';

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
  mesh: string;
  nodeId: string;
  counters: Counters;
  logger: Logger;
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
    void plane.#connect();
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
    const data = encodeEvent(event);
    nc.publish(subjectFor(this.#opts.mesh, event.type), data);
    this.#opts.counters.controlBytesOut += data.length;
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
      });
      if (this.#state === 'closed') return void (await nc.close());
      this.#nc = nc;
      nc.subscribe(subjects(mesh).all, {
        callback: (error, msg) => (error ? undefined : this.#receive(msg.data)),
      });
      void this.#watch(nc);
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

  #receive(data: Uint8Array): void {
    const { counters } = this.#opts;
    counters.controlMessagesIn++;
    counters.controlBytesIn += data.length;
    const result = decodeEvent(this.#opts.mesh, data);
    if (!result.ok) {
      Counters.bump(counters.controlDropped, result.reason);
      return;
    }
    for (const handler of this.#handlers) {
      try {
        handler(result.event);
      } catch (error) {
        Counters.bump(counters.controlDropped, 'handler-failed');
        this.#opts.logger.error({ err: error, type: result.event.type }, 'control event handler failed');
      }
    }
  }
}
