import type { HopClass } from '../domain.ts';

/** Where the bytes of a response came from (the X-Edgemesh-Source header). */
export const SOURCES = ['local', 'peer', 'origin'] as const;
export type Source = (typeof SOURCES)[number];

/**
 * The agent's counters as plain numbers: cheap to bump on the hot path, read by /v1/status, and
 * exported to OpenTelemetry by observable instruments (metrics.ts), so each figure exists once.
 */
export class Counters {
  hits = 0;
  misses = 0;
  readonly bytesServed: Record<Source, number> = { local: 0, peer: 0, origin: 0 };
  bytesStored = 0;
  corruptChunks = 0;
  readonly removals = new Map<string, number>();
  /**
   * Chunks received from each peer that failed verification, and chunk bytes received from each,
   * until the peer is forgotten (keepPeers); bytesFromPeers is the running total of the bytes.
   */
  readonly badChunksByPeer = new Map<string, number>();
  /** The same, by how far the peer was (metrics: a label per peer would grow with the mesh squared). */
  readonly rejectedByHop: Record<HopClass, number> = { node: 0, zone: 0, region: 0, remote: 0 };
  readonly bytesFromPeer = new Map<string, number>();
  bytesFromPeers = 0;
  /** Chunk bytes received from peers, by how far they came (same zone, same region, elsewhere). */
  readonly bytesByHop: Record<HopClass, number> = { node: 0, zone: 0, region: 0, remote: 0 };
  /** Fetches this agent made from origins, and the object bytes they brought. */
  originFetches = 0;
  bytesFromOrigin = 0;
  /** Misses its owners knew nothing of that were not asked of every member (MAX_FANOUTS_PER_S). */
  fanoutsSkipped = 0;
  /**
   * Holders of a whole object named to a read (by its owners, mostly) that answered they hold it no
   * more: records older than the holder's eviction (its Release not heard yet, lost or not sent, an
   * owner of 1.0, a swarm member that let it go since it was named).
   */
  holdersGone = 0;
  /** Chunk bytes this agent served to peers over gRPC. */
  bytesToPeers = 0;
  /**
   * Connections whose TLS handshake ended here on the peer port with a certificate OpenSSL verified
   * (gRPC and bulk, before their node is authenticated): the mesh's connection churn, each costing
   * both ends a handshake's CPU.
   */
  peerHandshakes = 0;
  /** Control-plane traffic (NATS): messages and bytes in, bytes out, and what was dropped and why. */
  controlMessagesIn = 0;
  controlBytesIn = 0;
  controlBytesOut = 0;
  readonly controlDropped = new Map<string, number>();
  /** Peer calls and claims refused, by why (unauthenticated: no valid certificate; claim: a node id not the caller's). */
  readonly peersRefused = new Map<string, number>();
  /**
   * Local clients refused, by why (unauthenticated: no valid token; unauthorized: not allowed that;
   * over-limit; pipelined: with a body, or past 32, waiting on one connection; slow-receiver, idle,
   * slow (moving below http.minBytesPerSecond);
   * malformed, too-large, timeout: a request node:http's parser refused; expectation: an Expect
   * other than 100-continue).
   */
  readonly clientsRefused = new Map<string, number>();
  /** Memory given back while the agent was quiet (quiet-compaction.ts): how often, the pauses, RSS freed. */
  readonly quietCompactions = { count: 0, pauseMs: 0, freedBytes: 0 };

  static bump(map: Map<string, number>, key: string, by = 1): void {
    map.set(key, (map.get(key) ?? 0) + by);
  }

  /** Chunk bytes received from a peer, counted for it and in the total. */
  fromPeer(peer: string, bytes: number): void {
    Counters.bump(this.bytesFromPeer, peer, bytes);
    this.bytesFromPeers += bytes;
  }

  /**
   * Lets go of the figures of every peer `known` no longer names (a member forgotten: dead past its
   * retention), so a mesh whose nodes come and go does not fill these maps for the agent's lifetime;
   * the totals stay. Every such peer, not only the one just forgotten: a chunk that arrived from a
   * peer after it was forgotten made its entry again, and goes at the next sweep.
   */
  keepPeers(known: (peer: string) => boolean): void {
    for (const map of [this.badChunksByPeer, this.bytesFromPeer])
      for (const peer of map.keys()) if (!known(peer)) map.delete(peer);
  }

  snapshot() {
    return {
      hits: this.hits,
      misses: this.misses,
      bytesServed: { ...this.bytesServed },
      bytesStored: this.bytesStored,
      corruptChunks: this.corruptChunks,
      removals: Object.fromEntries(this.removals),
      badChunksByPeer: Object.fromEntries(this.badChunksByPeer),
      bytesFromPeer: Object.fromEntries(this.bytesFromPeer),
      bytesFromPeers: this.bytesFromPeers,
      bytesByHop: { ...this.bytesByHop },
      bytesToPeers: this.bytesToPeers,
      peerHandshakes: this.peerHandshakes,
      originFetches: this.originFetches,
      bytesFromOrigin: this.bytesFromOrigin,
      fanoutsSkipped: this.fanoutsSkipped,
      holdersGone: this.holdersGone,
      peersRefused: Object.fromEntries(this.peersRefused),
      clientsRefused: Object.fromEntries(this.clientsRefused),
      quietCompactions: { ...this.quietCompactions },
      control: {
        messagesIn: this.controlMessagesIn,
        bytesIn: this.controlBytesIn,
        bytesOut: this.controlBytesOut,
        dropped: Object.fromEntries(this.controlDropped),
      },
    };
  }
}
