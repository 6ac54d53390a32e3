import { decodeEvent, SIGNATURE_HEADER, SIGNER_HEADER, subjects } from '@edgemesh/contracts';
import { type MeshRef, NodeSigners, readPemBundle } from '@edgemesh/identity';
import { connect, credsAuthenticator, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';

/** A node's report counts for this long after it was sent; then the node is assumed gone. */
const NODE_TTL_MS = 5 * 60_000;
/** A NATS that could not be reached is tried again after this long (at a later reconcile). */
const RETRY_MS = 30_000;
/** A report dated further ahead of this clock is not taken (as agents take no event from the future). */
const MAX_AHEAD_MS = 5 * 60_000;
/** A mesh whose figures changed is reconciled (its status rewritten) at most this often. */
const REFRESH_MS = 15_000;
/**
 * A node whose last report is at most this old reports on the control plane (agents report every
 * 10 s): six reports may be lost before it counts as gone.
 */
export const REPORTING_WINDOW_MS = 60_000;

type NodeStats = {
  hits: number;
  misses: number;
  bytesFromPeers: number;
  bytesFromOrigin: number;
  distrustedPeers?: number | undefined;
  distrusted?: string[] | undefined;
};

/**
 * Whose reports count, for a mesh with node identities: only events signed by a node of the mesh
 * (under its trust bundle, PEM) about itself, and none of its revoked nodes.
 */
export interface MeshSigners {
  mesh: MeshRef;
  bundlePem: string;
  revoked: readonly string[];
}

/** How the operator authenticates on a mesh's NATS: a credentials file (read at each connect), named by `id`. */
export interface NatsAuth {
  /** Tells connections apart (never the secret itself). */
  id: string;
  creds: () => Uint8Array;
  /** The NATS server's certificate (PEM), when it serves TLS: the connection checks it by this. */
  caPem?: string;
}

interface MeshEntry {
  /** The EdgeMesh (namespace/name) to reconcile when figures change. */
  key: string;
  /** The connection it is followed on: its servers and credentials. */
  connection: string;
  sub?: Subscription;
  /** Each node's latest report, with when it was sent. */
  nodes: Map<string, NodeStats & { at: number }>;
  lastRefresh: number;
  timer?: NodeJS.Timeout;
  /** When the connection failed: a watch() after RETRY_MS tries again. */
  failedAt?: number;
  /** A retry of a connection that failed: reported as failed until it is up (no flapping status). */
  retrying?: boolean;
  /** With node identities: the checks every report must pass, on the trust bundle of the moment. */
  signers?: {
    check: NodeSigners;
    bundlePem: string;
    revoked: Set<string>;
  };
}

/** Whether a mesh's agents report on the control plane, as the operator sees it. */
export interface ControlPlanePresence {
  /** The operator's own connection to the mesh's NATS: up, still being made, or refused/unreachable. */
  connection: 'up' | 'connecting' | 'failed';
  /** The nodes asked about whose agent reported in the last REPORTING_WINDOW_MS. */
  reporting: number;
  /** When the first of those reports leaves the window (the count may fall then); none: no report. */
  changesInMs?: number;
}

export interface MeshFigures {
  /** Lookups that were local hits, as a decimal string ("0.87"); absent before any lookup. */
  hitRatio?: string;
  bytesFromPeers: number;
  bytesFromOrigin: number;
  /** The most peers any one node distrusts (its reputation of them fell too low); 0: none. */
  distrustedPeers: number;
  /**
   * The nodes agents report they distrust (from what each verified itself), with how many agents
   * do: the most distrusted first, at most 16.
   */
  distrustedNodes: { node: string; by: number }[];
}

/**
 * The mesh figures the agents report on the control plane (`node.stats` events on
 * `edgemesh.<mesh>.stats`), summed over the nodes of each mesh. One NATS connection per server list,
 * one subscription per mesh; every message is validated (contracts' decodeEvent) and garbage is
 * dropped and counted. When a mesh's figures change, `onChange` is called (at most every 15 s), so
 * the reconciler writes them into the EdgeMesh status. Nothing here blocks a reconcile: a NATS that
 * is down only means no figures.
 */
export class FiguresCollector {
  readonly #logger: Logger;
  readonly #onChange: (key: string) => void;
  readonly #now: () => number;
  readonly #connections = new Map<string, Promise<NatsConnection>>();
  readonly #meshes = new Map<string, MeshEntry>();
  dropped = 0;

  constructor(opts: { logger: Logger; onChange: (key: string) => void; now?: () => number }) {
    this.#logger = opts.logger;
    this.#onChange = opts.onChange;
    this.#now = opts.now ?? Date.now;
  }

  /**
   * Publishes `data` on `subject` over the connection mesh `meshId` is followed on (watch() first);
   * best effort: false, at once, when that connection is not up.
   */
  async publish(meshId: string, subject: string, data: Uint8Array): Promise<boolean> {
    const entry = this.#meshes.get(meshId);
    // Only on a connection that is up: a reconcile (revocations) never waits for one being made,
    // which an unresponsive NATS holds for the client's whole connect timeout. The reconcile that
    // follows the connection coming up publishes again.
    const connection = entry?.sub && this.#connections.get(entry.connection);
    if (!connection) return false;
    try {
      (await connection).publish(subject, data);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Follows the reports of mesh `meshId` (EdgeMesh `key`) on `servers`, authenticated with `auth`
   * when the NATS wants credentials. Idempotent.
   */
  watch(
    meshId: string,
    key: string,
    servers: string[],
    auth?: NatsAuth,
    signers?: MeshSigners | 'keep',
  ): void {
    const connection = `${servers.join(',')}#${auth?.id ?? ''}`;
    const known = this.#meshes.get(meshId);
    if (known) this.#setSigners(known, signers);
    if (
      known?.connection === connection &&
      (known.failedAt === undefined || this.#now() - known.failedAt < RETRY_MS)
    )
      return;
    const retrying = known?.connection === connection;
    if (known) this.forget(meshId);
    const entry: MeshEntry = { key, connection, nodes: new Map(), lastRefresh: 0, retrying };
    this.#setSigners(entry, signers);
    this.#meshes.set(meshId, entry);
    void this.#connection(connection, servers, auth)
      .then((nc) => {
        if (this.#meshes.get(meshId) !== entry) return;
        // The status says so (ControlPlaneConnected): connected, waiting for reports. Not through
        // the reports' throttle, which would hold the first reports back.
        this.#onChange(entry.key);
        entry.sub = nc.subscribe(subjects(meshId).stats, {
          callback: (error, msg) => {
            if (error) return;
            const decoded = decodeEvent(meshId, msg.data);
            if (!decoded.ok || decoded.event.type !== 'node.stats') {
              this.dropped++;
              return;
            }
            const { signers } = entry;
            if (signers) {
              const signed = signers.check.check(
                msg.data,
                msg.headers?.get(SIGNER_HEADER),
                msg.headers?.get(SIGNATURE_HEADER),
              );
              if (
                'refusal' in signed ||
                signed.identity.node !== decoded.event.from ||
                signers.revoked.has(signed.identity.node)
              ) {
                this.dropped++;
                return;
              }
            }
            // Only a newer report of a node replaces its last (a replayed one changes nothing), and
            // none dated ahead of this clock by more than events may be.
            const { from, sentAtMs } = decoded.event;
            if (sentAtMs <= (entry.nodes.get(from)?.at ?? -1) || sentAtMs > this.#now() + MAX_AHEAD_MS) {
              this.dropped++;
              return;
            }
            entry.nodes.set(from, { ...decoded.event.body, at: sentAtMs });
            this.#changed(entry);
          },
        });
      })
      .catch((error: unknown) => {
        entry.failedAt = this.#now();
        if (this.#meshes.get(meshId) === entry && !entry.retrying) this.#onChange(entry.key);
        this.#logger.warn(
          { mesh: meshId, err: (error as Error).message },
          'no mesh figures: NATS unreachable',
        );
      });
  }

  /**
   * `keep`: a mesh with node identities whose trust could not be read this time (it is blocked): the
   * checks it had stay, and with none yet no report counts. Never a fallback to unsigned reports.
   */
  #setSigners(entry: MeshEntry, signers: MeshSigners | 'keep' | undefined): void {
    if (signers === 'keep') {
      entry.signers ??= {
        check: new NodeSigners({ trust: () => [], mesh: { namespace: '', name: '' } }),
        bundlePem: '',
        revoked: new Set(),
      };
      return;
    }
    if (!signers) return void delete entry.signers;
    const revoked = new Set(signers.revoked);
    if (entry.signers?.bundlePem === signers.bundlePem) return void (entry.signers.revoked = revoked);
    const bundle = readPemBundle(signers.bundlePem);
    entry.signers = {
      check: new NodeSigners({ trust: () => bundle, mesh: signers.mesh, now: this.#now }),
      bundlePem: signers.bundlePem,
      revoked,
    };
  }

  /** Stops following a mesh (deleted, or moved to other servers); a connection no mesh uses is closed. */
  forget(meshId: string): void {
    const entry = this.#meshes.get(meshId);
    if (!entry) return;
    entry.sub?.unsubscribe();
    clearTimeout(entry.timer);
    this.#meshes.delete(meshId);
    if ([...this.#meshes.values()].some((m) => m.connection === entry.connection)) return;
    const nc = this.#connections.get(entry.connection);
    this.#connections.delete(entry.connection);
    nc?.then((c) => c.close()).catch(() => undefined);
  }

  /** How many meshes are followed, over how many NATS connections. */
  get following(): { meshes: number; connections: number; dropped: number } {
    return { meshes: this.#meshes.size, connections: this.#connections.size, dropped: this.dropped };
  }

  /** Which of `nodes` (the mesh's selected nodes) report, and whether the operator is connected at all. */
  presence(meshId: string, nodes: Iterable<string>): ControlPlanePresence {
    const entry = this.#meshes.get(meshId);
    const connection = entry?.sub
      ? 'up'
      : entry?.failedAt !== undefined || entry?.retrying
        ? 'failed'
        : 'connecting';
    const horizon = this.#now() - REPORTING_WINDOW_MS;
    let reporting = 0;
    let oldest = Infinity;
    for (const node of nodes) {
      const at = entry?.nodes.get(node)?.at;
      if (at === undefined || at < horizon) continue;
      reporting++;
      oldest = Math.min(oldest, at);
    }
    return {
      connection,
      reporting,
      ...(reporting > 0 ? { changesInMs: Math.max(0, oldest - horizon) } : {}),
    };
  }

  figures(meshId: string): MeshFigures | undefined {
    const entry = this.#meshes.get(meshId);
    if (!entry || entry.nodes.size === 0) return undefined;
    const horizon = this.#now() - NODE_TTL_MS;
    const sum = { hits: 0, misses: 0, bytesFromPeers: 0, bytesFromOrigin: 0, distrustedPeers: 0 };
    const by = new Map<string, number>();
    for (const [from, node] of entry.nodes) {
      if (node.at < horizon) continue;
      // Each reporter counts once per node it names, and not for itself.
      for (const peer of new Set(node.distrusted ?? []))
        if (peer !== from) by.set(peer, (by.get(peer) ?? 0) + 1);
      sum.hits += node.hits;
      sum.misses += node.misses;
      sum.bytesFromPeers += node.bytesFromPeers;
      sum.bytesFromOrigin += node.bytesFromOrigin;
      sum.distrustedPeers = Math.max(sum.distrustedPeers, node.distrustedPeers ?? 0);
    }
    const lookups = sum.hits + sum.misses;
    return {
      ...(lookups > 0 ? { hitRatio: (sum.hits / lookups).toFixed(2) } : {}),
      bytesFromPeers: sum.bytesFromPeers,
      bytesFromOrigin: sum.bytesFromOrigin,
      distrustedPeers: sum.distrustedPeers,
      distrustedNodes: [...by]
        .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1))
        .slice(0, 16)
        .map(([node, n]) => ({ node, by: n })),
    };
  }

  #changed(entry: MeshEntry): void {
    if (entry.timer) return;
    const wait = Math.max(0, entry.lastRefresh + REFRESH_MS - this.#now());
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      entry.lastRefresh = this.#now();
      this.#onChange(entry.key);
    }, wait);
    entry.timer.unref();
  }

  #connection(list: string, servers: string[], auth: NatsAuth | undefined): Promise<NatsConnection> {
    let nc = this.#connections.get(list);
    if (!nc) {
      // Once connected, reconnect forever. A first connection that fails is remembered for RETRY_MS
      // (meshes sharing the servers do not each try), then tried again on a later watch().
      const made = connect({
        servers,
        name: 'edgemesh-operator',
        reconnect: true,
        maxReconnectAttempts: -1,
        ignoreAuthErrorAbort: true,
        ...(auth ? { authenticator: credsAuthenticator(auth.creds) } : {}),
        ...(auth?.caPem ? { tls: { ca: auth.caPem } } : {}),
      });
      made.catch(() =>
        setTimeout(() => {
          if (this.#connections.get(list) === made) this.#connections.delete(list);
        }, RETRY_MS).unref(),
      );
      this.#connections.set(list, made);
      nc = made;
    }
    return nc;
  }

  async close(): Promise<void> {
    for (const meshId of [...this.#meshes.keys()]) this.forget(meshId);
    for (const nc of this.#connections.values()) await nc.then((c) => c.close()).catch(() => undefined);
    this.#connections.clear();
  }
}
