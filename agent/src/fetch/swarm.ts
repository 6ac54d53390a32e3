import { chunkCount } from '../cache/chunking.ts';
import type { Manifest } from '../cache/manifest.ts';
import type { Holder, ObjectHead } from '../domain.ts';

export function headOf(manifest: Manifest): ObjectHead {
  const { key, size, chunkSize, contentType } = manifest;
  return { key, size, chunkSize, ...(contentType === undefined ? {} : { contentType }) };
}

export type ProgressEvent =
  | { kind: 'digests'; first: number; digests: readonly string[] }
  | { kind: 'have'; index: number }
  | { kind: 'complete'; manifest: Manifest }
  | { kind: 'failed'; error: Error };

/**
 * An object this node is getting (from peers or from its origin), visible to peers while that
 * happens: the chunk digests known so far, the chunks here and verified, and at the end the
 * manifest. Peers Watch it and fetch its chunks before the object is complete.
 */
export class Progress {
  readonly head: ObjectHead;
  readonly count: number;
  /** Digests of chunks 0..digests.length-1. */
  readonly digests: string[] = [];
  /** have[i] = 1: chunk i is here, verified (in memory or on disk). */
  readonly have: Uint8Array;
  manifest: Manifest | undefined;
  error: Error | undefined;
  /** Set on the node getting the object from its origin: watchers see new chunks through it. */
  seeder: Seeder | undefined;
  readonly #listeners = new Set<(event: ProgressEvent) => void>();
  /** Verified chunks not yet on disk, by digest, each with what to tell when it is lent out. */
  readonly #memory = new Map<string, { data: Buffer; lent: (() => void) | undefined }>();

  constructor(head: ObjectHead) {
    this.head = head;
    this.count = chunkCount(head.size, head.chunkSize);
    this.have = new Uint8Array(this.count);
  }

  get ended(): boolean {
    return this.manifest !== undefined || this.error !== undefined;
  }

  /** Learns the digests from index `first` on (ignoring any already known). */
  addDigests(first: number, digests: readonly string[]): void {
    const fresh = digests.slice(this.digests.length - first);
    if (first > this.digests.length || fresh.length === 0) return;
    const at = this.digests.length;
    this.digests.push(...fresh.slice(0, this.count - at));
    this.#emit({ kind: 'digests', first: at, digests: this.digests.slice(at) });
  }

  /**
   * Chunk `index` is here and verified; `data` is kept in memory until `written(index)`. `lent` is
   * told whenever chunk() hands `data` out (its holder cannot say when it is done with it).
   */
  hold(index: number, data?: Buffer, lent?: () => void): void {
    if (this.have[index]) return;
    this.have[index] = 1;
    const digest = this.digests[index];
    if (data && digest) this.#memory.set(digest, { data, lent });
    this.#emit({ kind: 'have', index });
  }

  /** Chunk `index` reached the disk (or will not): its memory copy is no longer needed. */
  written(index: number): void {
    const digest = this.digests[index];
    if (digest) this.#memory.delete(digest);
  }

  chunk(digest: string): Buffer | undefined {
    const held = this.#memory.get(digest);
    held?.lent?.();
    return held?.data;
  }

  complete(manifest: Manifest): void {
    if (this.ended) return;
    this.manifest = manifest;
    this.#memory.clear();
    this.#emit({ kind: 'complete', manifest });
    this.#listeners.clear();
  }

  fail(error: Error): void {
    if (this.ended) return;
    this.error = error;
    this.#memory.clear();
    this.#emit({ kind: 'failed', error });
    this.#listeners.clear();
  }

  /** Calls `listener` for every later event; returns the unsubscribe. */
  subscribe(listener: (event: ProgressEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(event: ProgressEvent): void {
    for (const listener of this.#listeners) listener(event);
  }
}

/** How long a chunk the origin fetcher shows to one watcher waits before every watcher sees it. */
export const REVEAL_ALL_MS = 5000;

/**
 * Super-seeding, for a node getting an object from its origin: each new chunk is first shown to one
 * watcher (the one shown the fewest so far), so the origin's bytes leave this node about once and
 * the swarm passes them on; REVEAL_ALL_MS later (or at the end, with the manifest) every watcher
 * sees it, so nobody waits on a slow or dead member.
 */
export class Seeder {
  readonly #watchers = new Map<number, { shown: number; reveal: (index: number) => void }>();
  /** Chunks every watcher has been shown. */
  readonly #public: number[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #revealAllMs: number;
  #nextId = 0;

  constructor(progress: Progress, revealAllMs = REVEAL_ALL_MS) {
    this.#revealAllMs = revealAllMs;
    progress.subscribe((event) => {
      if (event.kind === 'have') this.#offer(event.index);
      else this.close();
    });
  }

  /** Adds a watcher; returns the chunks it may see now and its removal. */
  add(reveal: (index: number) => void): { initial: number[]; remove: () => void } {
    const id = this.#nextId++;
    const shown = Math.min(...[...this.#watchers.values()].map((w) => w.shown), Infinity);
    this.#watchers.set(id, { shown: Number.isFinite(shown) ? shown : 0, reveal });
    return { initial: [...this.#public], remove: () => this.#watchers.delete(id) };
  }

  #offer(index: number): void {
    let chosen: { shown: number; reveal: (index: number) => void } | undefined;
    for (const w of this.#watchers.values()) if (!chosen || w.shown < chosen.shown) chosen = w;
    if (!chosen) return this.#revealAll(index, undefined);
    chosen.shown++;
    chosen.reveal(index);
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.#revealAll(index, chosen);
    }, this.#revealAllMs);
    timer.unref();
    this.#timers.add(timer);
  }

  #revealAll(index: number, except: object | undefined): void {
    this.#public.push(index);
    for (const w of this.#watchers.values()) if (w !== except) w.reveal(index);
  }

  close(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }
}

/** How long a member that joined a swarm is still named to others. */
const PEER_TTL_MS = 120_000;
/** The most swarm members named in one Watch event. */
export const MAX_NAMED_PEERS = 16;
/** Keys whose swarm members a node remembers, at most. */
export const MAX_SWARM_KEYS = 10_000;

/**
 * This node's view of the swarms it takes part in: the objects it is getting (so peers can watch
 * them and fetch their chunks early) and, per key, the members that recently watched this node for
 * it (so it can name them to each other and fetch from them in turn).
 */
export class Swarm {
  readonly #progress = new Map<string, Progress>();
  readonly #peers = new Map<string, Map<string, { holder: Holder; atMs: number }>>();
  readonly #joined = new Map<string, Set<(holder: Holder) => void>>();
  readonly #now: () => number;
  #expiredAt = -Infinity;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Publishes the progress of `head.key` until it ends (then the store answers for it). */
  begin(head: ObjectHead): Progress {
    const progress = new Progress(head);
    this.#progress.set(head.key, progress);
    const done = () => {
      if (this.#progress.get(head.key) === progress) this.#progress.delete(head.key);
    };
    progress.subscribe((event) => {
      if (event.kind === 'complete' || event.kind === 'failed') done();
    });
    return progress;
  }

  get(key: string): Progress | undefined {
    return this.#progress.get(key);
  }

  /** A verified chunk of any object in progress that is still only in memory. */
  chunk(digest: string): Buffer | undefined {
    for (const progress of this.#progress.values()) {
      const data = progress.chunk(digest);
      if (data) return data;
    }
    return undefined;
  }

  /**
   * `holder` takes part in the swarm of `key` (it watched this node for it). At most MAX_SWARM_KEYS
   * keys are remembered: past them the expired go (a scan at most once a second), then the one
   * joined least recently, but for keys a download here follows (onJoin).
   */
  join(key: string, holder: Holder): void {
    let peers = this.#peers.get(key);
    if (peers) {
      this.#peers.delete(key); // to the end: joined most recently
      this.#peers.set(key, peers);
    } else {
      if (this.#peers.size >= MAX_SWARM_KEYS) {
        const now = this.#now();
        if (now - this.#expiredAt >= 1000) {
          this.#expiredAt = now;
          this.#expire();
        }
        for (const stale of this.#peers.keys()) {
          if (this.#peers.size < MAX_SWARM_KEYS) break;
          if (!this.#joined.has(stale)) this.#peers.delete(stale);
        }
      }
      peers = new Map();
      this.#peers.set(key, peers);
    }
    const known = peers.has(holder.nodeId);
    peers.set(holder.nodeId, { holder, atMs: this.#now() });
    if (!known) for (const listener of this.#joined.get(key) ?? []) listener(holder);
  }

  /** Recent members of the swarm of `key`, newest first, without `except`. */
  peersOf(key: string, except?: string): Holder[] {
    const horizon = this.#now() - PEER_TTL_MS;
    return [...(this.#peers.get(key)?.values() ?? [])]
      .filter((p) => p.atMs >= horizon && p.holder.nodeId !== except)
      .sort((a, b) => b.atMs - a.atMs)
      .slice(0, MAX_NAMED_PEERS)
      .map((p) => p.holder);
  }

  /** Calls `listener` when a new member joins the swarm of `key`; returns the unsubscribe. */
  onJoin(key: string, listener: (holder: Holder) => void): () => void {
    let listeners = this.#joined.get(key);
    if (!listeners) {
      listeners = new Set();
      this.#joined.set(key, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.#joined.delete(key);
    };
  }

  #expire(): void {
    const horizon = this.#now() - PEER_TTL_MS;
    for (const [key, peers] of this.#peers) {
      for (const [id, p] of peers) if (p.atMs < horizon) peers.delete(id);
      if (peers.size === 0) this.#peers.delete(key);
    }
  }
}
