import { hostname } from 'node:os';
import type { AgentConfig } from '../config/schema.ts';
import { type ControlPlane, NatsControlPlane, noControlPlane } from '../control/control-plane.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Clock } from '../time/clock.ts';
import { GrpcPeer } from '../transport/peer-client.ts';
import type { PeerTransport, PingResult } from '../transport/peer-transport.ts';
import { Membership } from './membership.ts';
import { StaticPeers } from './static-peers.ts';
import { Vivaldi } from './vivaldi.ts';

export interface OverlayOptions {
  config: AgentConfig;
  logger: Logger;
  clock: Clock;
  counters: Counters;
}

/**
 * The agent's view of the mesh: members learned over the control plane and confirmed by probes,
 * static peers from configuration, and this node's network coordinate.
 */
export class Overlay {
  readonly vivaldi = new Vivaldi();
  readonly control: ControlPlane;
  readonly staticPeers: StaticPeers;
  readonly #opts: OverlayOptions;
  #membership: Membership | undefined;

  constructor(opts: OverlayOptions) {
    this.#opts = opts;
    const { config, logger, counters } = opts;
    this.staticPeers = new StaticPeers(
      config.peers.map((p) => this.#connect(p.id, p.address)),
      logger,
    );
    this.control =
      config.controlPlane.servers.length > 0
        ? NatsControlPlane.start({
            servers: config.controlPlane.servers,
            mesh: config.mesh,
            nodeId: config.nodeId,
            counters,
            logger,
          })
        : noControlPlane;
  }

  /** Starts probing and announcing, once this node's data plane is reachable at `grpcPort`. */
  start(grpcPort: number): void {
    const { config, logger, clock, counters } = this.#opts;
    const host = config.grpc.host === '0.0.0.0' || config.grpc.host === '::' ? hostname() : config.grpc.host;
    const grpc = config.grpc.advertise ?? `${host.includes(':') ? `[${host}]` : host}:${grpcPort}`;
    this.#membership = new Membership({
      mesh: config.mesh,
      self: {
        nodeId: config.nodeId,
        zone: config.zone,
        region: config.region,
        grpc,
        weight: config.weight,
        incarnation: Math.floor(clock.now() / 1000),
      },
      control: this.control,
      connect: (info) => this.#connect(info.nodeId, info.grpc),
      clock,
      logger,
      vivaldi: this.vivaldi,
      timing: config.membership,
      onIgnored: (reason) => Counters.bump(counters.controlDropped, reason),
    });
    this.#membership.start();
    this.staticPeers.start();
  }

  /** Everyone to fetch from: confirmed members and static peers, each address once. */
  peers(): PeerTransport[] {
    const byAddress = new Map<string, PeerTransport>();
    for (const member of this.#membership?.alive() ?? [])
      byAddress.set(member.transport.address, member.transport);
    for (const peer of this.staticPeers.list())
      if (!byAddress.has(peer.address)) byAddress.set(peer.address, peer);
    return [...byAddress.values()];
  }

  probeFor(target: string): Promise<PingResult | undefined> {
    return this.#membership?.probeFor(target) ?? Promise.resolve(undefined);
  }

  status() {
    const members = (this.#membership?.all() ?? []).map((m) => ({
      nodeId: m.info.nodeId,
      zone: m.info.zone,
      region: m.info.region,
      grpc: m.info.grpc,
      state: m.state,
      ...(m.rttMs === undefined ? {} : { rttMs: m.rttMs }),
    }));
    return {
      mesh: this.#opts.config.mesh,
      controlPlane: this.control.state(),
      incarnation: this.#membership?.self.incarnation,
      members,
      static: this.staticPeers.states(),
    };
  }

  async close(): Promise<void> {
    this.#membership?.close();
    this.staticPeers.close();
    await this.control.close();
  }

  #connect(id: string, address: string): GrpcPeer {
    const { config } = this.#opts;
    return new GrpcPeer({
      id,
      address,
      flowControlWindow: config.grpc.flowControlWindow,
      timeoutMs: config.transfer.peerTimeoutMs,
    });
  }
}
