import { hostname } from 'node:os';
import { formatRange, PROTOCOL, type ProtocolRange } from '@edgemesh/contracts';
import type { AgentConfig } from '../config/schema.ts';
import { type ControlPlane, NatsControlPlane, noControlPlane } from '../control/control-plane.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Clock } from '../time/clock.ts';
import { GrpcPeer } from '../transport/peer-client.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import { EventSigner } from '../security/event-signer.ts';
import type { Revocations } from '../security/revocations.ts';
import { peerChannelCredentials, peerTlsOptions } from '../security/grpc-credentials.ts';
import type { PeerTransport, PingResult } from '../transport/peer-transport.ts';
import type { Manifest } from '../cache/manifest.ts';
import { HolderIndex } from './holder-index.ts';
import { saveLife } from './life.ts';
import type { Holder, HopClass } from '../domain.ts';
import { type Member, Membership, REFUTATIONS_PER_LIFE, REVIVE_TIMEOUT_MS } from './membership.ts';
import { Placement } from './placement.ts';
import { hopClass, rankByCost } from './proximity.ts';
import { StaticPeers } from './static-peers.ts';
import { Reputation } from './reputation.ts';
import { Vivaldi } from './vivaldi.ts';
import { PendingReleases } from './pending-releases.ts';

/** How long keys let go of gather before their owners are told (one call per owner for all of them). */
export const RELEASE_DELAY_MS = 250;

export interface OverlayOptions {
  config: AgentConfig;
  logger: Logger;
  clock: Clock;
  counters: Counters;
  /** This node's identity for mutual TLS with every peer, and to sign its events; undefined: plaintext (mTLS off). */
  credentials?: NodeCredentials | undefined;
  /** Nodes whose events are dropped. */
  revocations?: Revocations;
  /** The protocol versions this node speaks (default: this build's; docs/upgrades.md). */
  protocol?: ProtocolRange | undefined;
}

/**
 * The agent's view of the mesh: members learned over the control plane and confirmed by probes,
 * static peers from configuration, and this node's network coordinate.
 */
export class Overlay {
  readonly vivaldi = new Vivaldi();
  /** What each peer did as this node verified it; distrusted peers are not chosen (rank). */
  readonly reputation: Reputation;
  /** Holders of the keys this node owns (or stands in for). */
  readonly index: HolderIndex;
  readonly control: ControlPlane;
  readonly staticPeers: StaticPeers;
  readonly #opts: OverlayOptions;
  #membership: Membership | undefined;
  #placement: { version: string; placement: Placement } | undefined;
  readonly #listeners: (() => void)[] = [];
  readonly #restartListeners: ((nodeId: string, address: string) => void)[] = [];
  readonly #forgottenListeners: ((nodeId: string, address: string) => void)[] = [];
  /** Peers (and the range each said) already logged as speaking no version in common. */
  readonly #incompatibleLogged = new Set<string>();
  /** The last save of a life this node took while running (Membership's onOwnLife); saves never reject. */
  #lifeSaved: Promise<void> = Promise.resolve();
  /** Keys this node let go of since the owners were last told (announceRelease). */
  readonly #released = new PendingReleases();
  #releaseTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: OverlayOptions) {
    this.#opts = opts;
    const { config, logger, counters } = opts;
    // Holds are sent to the owners as the holder sees them, and views differ for a moment (a member
    // one side has confirmed and the other not yet): a key is kept while this node is among its
    // owners or the next as many in placement order (its stand-ins), not for any key a member names.
    this.index = new HolderIndex(opts.clock, {
      owns: (key) => this.ownerOrder(key, 2 * config.replication.factor).includes('self'),
    });
    this.reputation = new Reputation(opts.clock, {
      self: config.nodeId,
      // A report counts until two more should have come: a node that stops reporting is not heard.
      hearsayTtlMs: 3 * config.controlPlane.statsIntervalMs,
    });
    this.staticPeers = new StaticPeers(
      // A static peer given by address only may be any node of this mesh; given with an id, that node.
      config.peers.map((p) => this.#connect(p.id, p.address, p.id === p.address ? undefined : p.id)),
      logger,
    );
    this.control =
      config.controlPlane.servers.length > 0
        ? NatsControlPlane.start({
            servers: config.controlPlane.servers,
            credentialsFile: config.controlPlane.credentialsFile,
            caFile: config.controlPlane.caFile,
            mesh: config.mesh,
            nodeId: config.nodeId,
            counters,
            logger,
            ...(opts.protocol ? { protocol: opts.protocol } : {}),
            ...(opts.credentials
              ? {
                  signer: new EventSigner(opts.credentials, {
                    ...(opts.revocations ? { revocations: opts.revocations } : {}),
                    now: () => opts.clock.now(),
                  }),
                }
              : {}),
          })
        : noControlPlane;
  }

  /**
   * Starts probing and announcing, once this node's data plane is reachable at `grpcPort`. `life` is
   * this start's second (life.ts: it follows the last one when the clock is behind); the clock's by
   * default.
   */
  start(grpcPort: number, life?: number): void {
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
        incarnation: (life ?? Math.floor(clock.now() / 1000)) * REFUTATIONS_PER_LIFE,
      },
      control: this.control,
      connect: (info) => this.#connect(info.nodeId, info.grpc, info.nodeId),
      clock,
      logger,
      vivaldi: this.vivaldi,
      timing: config.membership,
      onIgnored: (reason) => Counters.bump(counters.controlDropped, reason),
      onChange: () => {
        for (const listener of this.#listeners) listener();
      },
      onOwnLife: (life) => {
        // One save after the other, so the last life taken is the one kept (it logs its own failures).
        this.#lifeSaved = this.#lifeSaved
          .then(() => saveLife(config.store.dir, life, logger))
          .catch(() => undefined);
      },
      onRestarted: (nodeId, address) => {
        for (const listener of this.#restartListeners) listener(nodeId, address);
      },
      onForgotten: (nodeId, address) => {
        // The member itself, not only an address it left (a move): its own figures go with it, and
        // those of any other peer neither a member nor a static peer (counters.ts, keepPeers).
        if (!this.#membership?.knows(nodeId)) {
          const statics = new Set(this.staticPeers.list().map((p) => p.id));
          counters.keepPeers((peer) => statics.has(peer) || this.#membership?.knows(peer) === true);
        }
        for (const listener of this.#forgottenListeners) listener(nodeId, address);
      },
    });
    this.#membership.start();
    this.staticPeers.start();
  }

  /**
   * Waits, for at most the join grace after start, until this node's view of the mesh is formed
   * (Membership.joined): a lookup that found nobody is then worth one more try. True when it waited.
   */
  untilJoined(): Promise<boolean> {
    return this.#membership?.untilJoined() ?? Promise.resolve(false);
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

  /** The peers among `key`'s owners by placement over the confirmed members and this node. */
  owners(key: string): PeerTransport[] {
    return this.placementOf(key).peers;
  }

  /** `key`'s owners: whether this node is one, and the others' connections. */
  placementOf(key: string): { self: boolean; peers: PeerTransport[] } {
    const order = this.ownerOrder(key);
    return { self: order.includes('self'), peers: order.filter((o) => o !== 'self') };
  }

  /** Live members after `key`'s owners in placement order (as many again as the factor): stand-ins for owners that cannot copy. */
  standInsOf(key: string): PeerTransport[] {
    const factor = this.#opts.config.replication.factor;
    return this.ownerOrder(key, 2 * factor)
      .slice(factor)
      .filter((o) => o !== 'self');
  }

  /** Whether the member at `peer`'s address is counted alive (on this connection or a newer one). */
  isAlive(peer: PeerTransport): boolean {
    return (this.#membership?.alive() ?? []).some((m) => m.transport.address === peer.address);
  }

  /** `key`'s first `count` owners (by default the replication factor) in placement order, this node marked 'self'. */
  ownerOrder(key: string, count = this.#opts.config.replication.factor): ('self' | PeerTransport)[] {
    const members = this.#membership?.alive() ?? [];
    const self = this.#membership?.self;
    const version = members.map((m) => `${m.info.nodeId}:${m.info.weight}`).join();
    if (this.#placement?.version !== version) {
      const nodes = [...members.map((m) => m.info), ...(self ? [self] : [])];
      const placed = nodes.map((n) => ({ id: n.nodeId, zone: n.zone, region: n.region, weight: n.weight }));
      this.#placement = { version, placement: new Placement(placed) };
    }
    const byId = new Map(members.map((m) => [m.info.nodeId, m.transport]));
    return this.#placement.placement
      .owners(key, count)
      .flatMap<'self' | PeerTransport>((owner) =>
        owner.id === self?.nodeId ? ['self'] : (byId.get(owner.id) ?? []),
      );
  }

  /**
   * The confirmed members a direct-exchange target names: a node id, `zone:<zone>`, `region:<region>`
   * or `all`; `self` says whether this node is named too.
   */
  targets(target: string): { self: boolean; peers: { id: string; transport: PeerTransport }[] } {
    const { config } = this.#opts;
    const matches = targetMatcher(target);
    return {
      self: matches({ nodeId: config.nodeId, zone: config.zone, region: config.region }),
      peers: messageTargets(this.#membership?.all() ?? [], target).map((m) => ({
        id: m.info.nodeId,
        transport: m.transport,
      })),
    };
  }

  /**
   * Tries now the members `target` names (as targets() reads it; any member when undefined) that do
   * not count alive (Membership.reviveNow); true when one of them is alive then. A target naming one
   * node waits up to a try's own timeout (a fresh connection's handshakes take longer than a miss
   * may wait, and the sender asked for that node); others wait as a miss does.
   */
  reviveNow(target?: string): Promise<boolean> {
    const matches = target === undefined ? () => true : targetMatcher(target);
    const waitMs = target !== undefined && namesOneNode(target) ? REVIVE_TIMEOUT_MS : undefined;
    return this.#membership?.reviveNow(matches, waitMs) ?? Promise.resolve(false);
  }

  /** This node as a holder others can reach, once started. */
  selfHolder(): Holder | undefined {
    const self = this.#membership?.self;
    return self && { nodeId: self.nodeId, grpc: self.grpc };
  }

  /** Forgets revoked members at once. */
  evict(nodeIds: Iterable<string>): void {
    for (const nodeId of nodeIds) this.#membership?.evict(nodeId);
  }

  /** Calls `listener` whenever a member comes or goes. */
  onMembershipChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** Hears a member that restarted at the same address (what it held may be gone). */
  onMemberRestart(listener: (nodeId: string, address: string) => void): void {
    this.#restartListeners.push(listener);
  }

  /** Hears a member forgotten (dead past the retention, or revoked): its address means nothing now. */
  onMemberForgotten(listener: (nodeId: string, address: string) => void): void {
    this.#forgottenListeners.push(listener);
  }

  /**
   * `holders` cheapest first: same zone, same region, then elsewhere; then by RTT (measured, else
   * estimated). Peers whose reputation fell below the threshold are left out.
   */
  rank(all: readonly PeerTransport[]): PeerTransport[] {
    const { config } = this.#opts;
    const holders = all.filter((peer) => this.reputation.trusted(peer.id));
    const members = new Map((this.#membership?.all() ?? []).map((m) => [m.transport.address, m]));
    const statics = new Map(this.staticPeers.states().map((s) => [s.address, s]));
    const candidates = holders.map((transport) => {
      const member = members.get(transport.address);
      if (member) {
        const estimate = member.info.coordinate ? this.vivaldi.estimate(member.info.coordinate) : undefined;
        return {
          transport,
          id: member.info.nodeId,
          zone: member.info.zone,
          region: member.info.region,
          rttMs: member.rttMs ?? estimate,
        };
      }
      const s = statics.get(transport.address);
      return { transport, id: transport.id, zone: s?.zone ?? '', region: s?.region ?? '', rttMs: s?.rttMs };
    });
    return rankByCost({ id: config.nodeId, zone: config.zone, region: config.region }, candidates).map(
      (c) => c.transport,
    );
  }

  /** How far a peer is from this node by topology ('remote' when its place is unknown). */
  hopClassOf(transport: PeerTransport): HopClass {
    const { config } = this.#opts;
    const self = { id: config.nodeId, zone: config.zone, region: config.region };
    return hopClass(self, { id: transport.id, ...this.placeOf(transport) });
  }

  /** Where a peer is, as its membership (or static peer entry) says; empty strings when unknown. */
  placeOf(transport: PeerTransport): { zone: string; region: string } {
    const member = this.#membership?.all().find((m) => m.transport.address === transport.address);
    if (member) return { zone: member.info.zone, region: member.info.region };
    const s = this.staticPeers.states().find((p) => p.address === transport.address);
    return { zone: s?.zone ?? '', region: s?.region ?? '' };
  }

  /** The zone a member is in ("region/zone"), for sharing upload fairly; '?' for an unknown node. */
  groupOf(nodeId: string): string {
    const member = this.#membership?.all().find((m) => m.info.nodeId === nodeId);
    return member ? `${member.info.region}/${member.info.zone}` : '?';
  }

  /**
   * A confirmed member's connection for a holder or source another node named (alive, or suspect:
   * Membership.memberAt); undefined for anyone else.
   */
  resolve(holder: Holder): PeerTransport | undefined {
    return this.#membership?.memberAt(holder.nodeId, holder.grpc)?.transport;
  }

  /**
   * Records that `holder` holds `manifest`, if it is a member confirmed at that address (a Hold from
   * anyone else is ignored: it could only send readers to the wrong place) and this node owns the key
   * (HolderIndex's `owns`, above).
   */
  recordHolder(manifest: Manifest, holder: Holder): void {
    if (this.resolve(holder)) this.index.record(manifest, holder);
  }

  /** Tells the key's owners that this node now holds `manifest` (best effort, in the background). */
  announceHolding(manifest: Manifest): void {
    const holder = this.selfHolder();
    if (!holder) return;
    this.#released.cancel(manifest.key); // held again before the owners were told it was let go
    for (const owner of this.owners(manifest.key)) {
      owner
        .hold(manifest, holder, AbortSignal.timeout(this.#opts.config.transfer.peerTimeoutMs))
        .catch((error: Error) => {
          this.#opts.logger.debug(
            { owner: owner.id, key: manifest.key, err: error.message },
            'Hold not delivered',
          );
        });
    }
  }

  /**
   * Tells `key`'s owners, soon and with other keys let go of meanwhile (RELEASE_DELAY_MS), that this
   * node holds it no more, so they stop sending readers here to hear NOT_FOUND (best effort: at
   * most MAX_PENDING_RELEASES wait at once, and an owner that misses one forgets the record when it
   * expires). Not for a purge (every owner applies it), a newer version (its Hold replaces the
   * record) or an expiry (owners drop an expired version's records themselves: HolderIndex.lookup).
   */
  announceRelease(key: string): void {
    if (!this.#membership || this.#closed || !this.#released.add(key)) return;
    this.#releaseTimer ??= this.#releasesIn(RELEASE_DELAY_MS);
  }

  /**
   * One Release call to each owner of a slice of the keys let go of (RELEASE_SLICE); the next slice
   * once these calls are over, so a full disk's eviction is told a slice at a time, not in thousands
   * of calls at once.
   */
  async #sendReleases(): Promise<void> {
    const holder = this.selfHolder();
    if (!holder || this.#closed) {
      this.#releaseTimer = undefined;
      return;
    }
    const calls = this.#released.take((key) => this.owners(key));
    await Promise.all(
      calls.map(([owner, keys]) =>
        owner
          .release(keys, holder, AbortSignal.timeout(this.#opts.config.transfer.peerTimeoutMs))
          .catch((error: Error) =>
            this.#opts.logger.debug({ owner: owner.id, err: error.message }, 'Release not delivered'),
          ),
      ),
    );
    // Keys let go of meanwhile wait for this; then the next slice (announceRelease starts no timer
    // while one is set).
    this.#releaseTimer = this.#released.size > 0 && !this.#closed ? this.#releasesIn(1) : undefined;
  }

  /**
   * A timer for #sendReleases; a round that throws is logged, and the keys still waiting go with the
   * next announceRelease.
   */
  #releasesIn(ms: number): NodeJS.Timeout {
    return setTimeout(() => {
      this.#sendReleases().catch((error: Error) => {
        this.#releaseTimer = undefined;
        this.#opts.logger.warn({ err: error.message }, 'Releases not sent');
      });
    }, ms).unref();
  }

  probeFor(target: string): Promise<PingResult | undefined> {
    return this.#membership?.probeFor(target) ?? Promise.resolve(undefined);
  }

  /** This node's incarnation (Membership: its life and refutations), once started. */
  get incarnation(): number | undefined {
    return this.#membership?.self.incarnation;
  }

  /** The incarnation this node knows of member `nodeId` (told to it when it pings this node). */
  incarnationOf(nodeId: string): number | undefined {
    return this.#membership?.incarnationOf(nodeId);
  }

  /** Lifeguard's local health score (0 when there is no membership); a gauge reads it per scrape. */
  get localHealth(): number {
    return this.#membership?.localHealth ?? 0;
  }

  status() {
    const members = (this.#membership?.all() ?? []).map((m) => ({
      nodeId: m.info.nodeId,
      zone: m.info.zone,
      region: m.info.region,
      grpc: m.info.grpc,
      state: m.state,
      ...(m.rttMs === undefined ? {} : { rttMs: m.rttMs }),
      ...protocolStatus(m.transport),
    }));
    return {
      mesh: this.#opts.config.mesh,
      /** The protocol versions this node speaks (docs/upgrades.md). */
      protocol: formatRange(this.#opts.protocol ?? PROTOCOL),
      controlPlane: this.control.state(),
      incarnation: this.#membership?.self.incarnation,
      localHealth: this.#membership?.localHealth,
      members,
      static: this.staticPeers.states(),
      reputation: this.reputation.snapshot(),
      reportedDistrusted: this.reputation.reported(),
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#releaseTimer);
    this.#released.clear();
    this.#membership?.close();
    this.staticPeers.close();
    await this.control.close();
    await this.#lifeSaved; // a life taken just before: kept for the next start
  }

  /** A connection to `address`; over mTLS, the peer's certificate must name `expected` (any node of the mesh when undefined). */
  #connect(id: string, address: string, expected: string | undefined): GrpcPeer {
    const { config, credentials } = this.#opts;
    return new GrpcPeer({
      id,
      address,
      ...(credentials ? { credentials: (seen) => peerChannelCredentials(credentials, expected, seen) } : {}),
      ...(credentials && config.grpc.bulkStream
        ? { bulkTls: () => peerTlsOptions(credentials, expected) }
        : {}),
      flowControlWindow: config.grpc.flowControlWindow,
      timeoutMs: config.transfer.peerTimeoutMs,
      from: config.nodeId,
      ...(this.#opts.protocol ? { protocol: this.#opts.protocol } : {}),
      onIncompatible: (error) => {
        Counters.bump(this.#opts.counters.peersRefused, 'protocol');
        const seen = `${id} ${error.theirs}`;
        if (this.#incompatibleLogged.has(seen)) return;
        if (this.#incompatibleLogged.size >= 1024) this.#incompatibleLogged.clear();
        this.#incompatibleLogged.add(seen);
        this.#opts.logger.warn(
          { peer: id, address, err: error.message },
          'peer refused: no protocol version in common (upgrade one of the two; docs/upgrades.md)',
        );
      },
    });
  }
}

/** What /v1/status shows of a peer's protocol: the version agreed, or why it was refused. */
function protocolStatus(transport: PeerTransport): { protocol?: string; refused?: string } {
  const { version, refused } = transport.protocol?.() ?? {};
  if (refused) return { refused };
  return version ? { protocol: `${version.major}.${version.minor}` } : {};
}

/**
 * The members a direct-exchange message to `target` goes to: the alive ones it names, and a suspect
 * too when it names that one node (its answers may only be late, and trying beats refusing the
 * message; a group leaves suspects out, as one that is gone would hold the whole delivery up to its
 * timeout).
 */
export function messageTargets(members: readonly Member[], target: string): Member[] {
  const matches = targetMatcher(target);
  const single = namesOneNode(target);
  return members.filter((m) => (m.state === 'alive' || (single && m.state === 'suspect')) && matches(m.info));
}

/** Whether a direct-exchange target names one node (a node id), not a zone, a region or all. */
const namesOneNode = (target: string) =>
  target !== 'all' && !target.startsWith('zone:') && !target.startsWith('region:');

/** Whether a node is named by a direct-exchange target: a node id, `zone:<zone>`, `region:<region>` or `all`. */
function targetMatcher(target: string): (node: { nodeId: string; zone: string; region: string }) => boolean {
  return (node) => {
    if (target === 'all') return true;
    if (target.startsWith('zone:')) return node.zone !== '' && node.zone === target.slice(5);
    if (target.startsWith('region:')) return node.region !== '' && node.region === target.slice(7);
    return node.nodeId === target;
  };
}
