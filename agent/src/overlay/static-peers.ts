import type { Logger } from '../telemetry/logger.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import { every } from '../time/every.ts';

/** Default interval between liveness pings. */
export const PING_INTERVAL_MS = 5000;

export interface PeerState {
  id: string;
  address: string;
  alive: boolean;
  rttMs?: number;
  nodeId?: string;
  zone?: string;
  region?: string;
}

/**
 * A fixed list of peers (from configuration) kept under watch with periodic pings. Membership, when
 * it arrives, replaces this with a list that changes; consumers only see `list()` and `states()`.
 */
export class StaticPeers {
  readonly #peers: readonly PeerTransport[];
  readonly #states = new Map<string, PeerState>();
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;

  constructor(peers: readonly PeerTransport[], logger: Logger) {
    this.#peers = peers;
    this.#logger = logger;
    for (const p of peers) this.#states.set(p.id, { id: p.id, address: p.address, alive: false });
  }

  list(): readonly PeerTransport[] {
    return this.#peers;
  }

  states(): PeerState[] {
    return [...this.#states.values()];
  }

  /** Pings every peer now and then every `intervalMs`. */
  start(intervalMs = PING_INTERVAL_MS): void {
    const failed = (error: Error) =>
      this.#logger.warn({ err: error.message }, 'static peers: ping round failed');
    this.pingAll().catch(failed);
    this.#timer = every(intervalMs, () => this.pingAll(), failed);
  }

  async pingAll(): Promise<void> {
    await Promise.all(
      this.#peers.map(async (peer) => {
        const state = this.#states.get(peer.id)!;
        try {
          const r = await peer.ping(AbortSignal.timeout(2000));
          if (!state.alive)
            this.#logger.info({ peer: peer.id, peerNode: r.nodeId, rttMs: r.rttMs }, 'peer is up');
          Object.assign(state, {
            alive: true,
            rttMs: r.rttMs,
            nodeId: r.nodeId,
            zone: r.zone,
            region: r.region,
          });
        } catch (error) {
          if (state.alive)
            this.#logger.warn({ peer: peer.id, err: (error as Error).message }, 'peer is down');
          state.alive = false;
        }
      }),
    );
  }

  close(): void {
    clearInterval(this.#timer);
    for (const peer of this.#peers) peer.close();
  }
}
