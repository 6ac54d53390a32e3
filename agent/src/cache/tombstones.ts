import { type NodeSignature, parseSignature } from './manifest.ts';
import { mkdir, open as openFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../time/clock.ts';
import { atomicWrite } from './chunk-files.ts';
import { InsufficientStorageError } from './errors.ts';

/** How long a purge is remembered by default. */
export const DEFAULT_TOMBSTONE_TTL_MS = 7 * 24 * 3600 * 1000;

/** Tombstones kept at most (each about 0.7 KB of an agent's heap with its signature, its certificate shared). */
export const MAX_TOMBSTONES = 50_000;
/**
 * Journal lines that are not purges are JSON objects, which an agent of an older release reads as a
 * line torn by a crash (skipped, its files rewritten at its next write), not as a purge:
 * - `{"generation": g}`, the first line: the journal continues snapshot `g` (the snapshot's own
 *   `""` entry says its generation); a journal of another generation is the one a crash left between
 *   a snapshot's write and the journal's truncation, and everything in it is in the snapshot already;
 * - `{"out": [key, at]}`: the purge before it pushed this tombstone out (the cap), so that a replay
 *   keeps what was kept.
 */
type Marker = { generation?: unknown; out?: unknown };
/** The journal is folded into the snapshot once it holds this many records and more than the snapshot. */
export const COMPACT_AFTER = 1000;

type Entry = { at: number; signature?: NodeSignature };

/**
 * Whose purge a tombstone is, the unit the cap is shared by: the node that signed it (its
 * certificate, checked before the purge was taken in: a renewed certificate counts apart); '' for a
 * purge without a signature. Not the client the signature names (`by`): a node may name any.
 */
function signerOf(entry: Entry): string {
  return entry.signature?.certificate ?? '';
}

/**
 * Purged keys and when they were purged, kept on disk so a purge outlives restarts: a snapshot
 * (`tombstones.json`, written atomically) and a journal (`tombstones.log`, one JSON line per purge,
 * appended and synced). A purge costs one appended line, not a rewrite of every tombstone; records
 * that arrive while a write is in flight go together in the next one. The journal is folded into
 * the snapshot once it holds COMPACT_AFTER records and more than the snapshot does: the files stay
 * within about twice what they hold, and each tombstone is rewritten a bounded number of times on
 * average. A version of a key created at or before its purge is dead: it
 * is not stored, served or replicated again. Tombstones expire after `ttlMs`.
 *
 * At most MAX_TOMBSTONES are kept. Past them, expired ones go first, then the oldest of the node
 * that signed the most: a node that floods purges (one of its clients allowed to purge, or the node
 * itself) pushes out its own, not those other nodes took (which would let keys purged there come
 * back from a stale copy). A purge's line in the journal is followed by one for each tombstone it
 * pushed out, so that a restart keeps exactly the live tombstones there were (which a replay that
 * chose again could not: what it chooses depends on tombstones that have expired since).
 */
export class Tombstones {
  readonly #file: string;
  readonly #journal: string;
  readonly #tmpDir: string;
  readonly #clock: Clock;
  readonly #ttlMs: number;
  /** Tombstones kept at most: MAX_TOMBSTONES, fewer in a test (a parameter of open()). */
  readonly #maxEntries: number;
  /** Every tombstone, oldest recorded first. */
  #entries = new Map<string, Entry>();
  /**
   * Each signer's tombstones (signerOf), oldest recorded first, and the one copy of its certificate
   * (about 800 bytes) they all share: a purge heard on the control plane carries a copy of its own
   * (50,000 of them held about 30 MB of copies). Per store, for the signers it holds tombstones of, so a
   * mesh of any number of nodes shares them all (a table of a fixed size would start over).
   */
  readonly #bySigner = new Map<string, { certificate: string; keys: Set<string> }>();
  /** The signers by how many tombstones each holds, and the most any holds. */
  readonly #signersBySize = new Map<number, Set<string>>();
  #largest = 0;
  /**
   * Every tombstone's [at, key], the least `at` first (a binary heap), so that a sweep for expired
   * ones looks only at those: not a scan of every tombstone per purge while a burst of purges of a
   * week ago expires. Pairs of keys since removed or recorded again stay until they come up (they no
   * longer match), and the heap is made again once they outnumber the tombstones.
   */
  #byAge: [at: number, key: string][] = [];
  /** Records in the journal since the last snapshot, and tombstones in that snapshot. */
  #journalRecords = 0;
  #snapshotEntries = 0;
  /** The snapshot's generation (0: a snapshot of an older release, or none), and its journal's. */
  #generation = 0;
  /** A write failed, or the journal ends in a torn line: the next write is a whole snapshot. */
  #rewrite = false;
  #pending: { lines: string; count: number; resolve: () => void; reject: (error: unknown) => void }[] = [];
  #flushing: Promise<void> | undefined;

  private constructor(dir: string, clock: Clock, ttlMs: number, maxEntries: number) {
    this.#file = join(dir, 'tombstones.json');
    this.#journal = join(dir, 'tombstones.log');
    this.#tmpDir = join(dir, 'tmp');
    this.#clock = clock;
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  static async open(
    dir: string,
    clock: Clock,
    ttlMs = DEFAULT_TOMBSTONE_TTL_MS,
    maxEntries = MAX_TOMBSTONES,
  ): Promise<Tombstones> {
    const t = new Tombstones(dir, clock, ttlMs, maxEntries);
    await mkdir(t.#tmpDir, { recursive: true });
    const now = clock.now();
    const add = (key: unknown, at: unknown, signature: unknown) => {
      if (typeof key !== 'string' || !Number.isSafeInteger(at)) return false;
      if ((at as number) + ttlMs <= now) return true; // expired: a good record, not kept
      // A later record of the same purge moves it to the newest, as it did when it was recorded (its
      // key had been pushed out meanwhile, or it would not have been recorded again).
      if ((t.#entries.get(key)?.at ?? -1) > (at as number)) return true;
      const proof = parseSignature(signature);
      t.#set(key, { at: at as number, ...(proof ? { signature: proof } : {}) });
      return true;
    };
    /** A tombstone the cap pushed out, running: out again here, so the replay keeps what was kept. */
    const pushOut = (out: unknown) => {
      if (!Array.isArray(out)) return false;
      const [key, at] = out as unknown[];
      if (typeof key !== 'string' || !Number.isSafeInteger(at)) return false;
      if (t.#entries.get(key)?.at === at) t.#remove(key);
      return true;
    };
    try {
      const raw: unknown = JSON.parse(await readFile(t.#file, 'utf8'));
      if (typeof raw === 'object' && raw !== null) {
        const { '': marker, ...entries } = raw as Record<string, unknown>;
        // The snapshot's generation; a time, or { at, signature } for a purge with its signer's proof.
        const g = (marker as Marker | null | undefined)?.generation;
        if (Number.isSafeInteger(g)) t.#generation = g as number;
        for (const [key, entry] of inRecordedOrder(entries)) {
          if (Number.isSafeInteger(entry)) add(key, entry, undefined);
          else if (typeof entry === 'object' && entry !== null) {
            const { at, signature } = entry as { at?: unknown; signature?: unknown };
            add(key, at, signature);
          }
        }
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        t.#entries.clear(); // unreadable: start empty
        t.#byAge = [];
        t.#bySigner.clear();
        t.#signersBySize.clear();
        t.#largest = 0;
      }
    }
    t.#snapshotEntries = t.#entries.size;
    try {
      const journal = await readFile(t.#journal, 'utf8');
      const lines = journal.split('\n');
      let generation = 0;
      try {
        const first = JSON.parse(lines[0]!) as unknown;
        if (!Array.isArray(first) && Number.isSafeInteger((first as Marker).generation)) {
          generation = (first as Marker).generation as number;
          lines.shift();
        }
      } catch {
        // no header (a journal of an older release, or a torn one): read as it is
      }
      // Not this snapshot's journal (a crash came between the snapshot and the journal's truncation):
      // all of it is in the snapshot; replayed, its pushed-out lines would remove purges recorded since.
      const stale = t.#generation !== 0 && generation !== t.#generation;
      if (stale) t.#rewrite = true;
      for (const line of stale ? [] : lines) {
        if (line === '') continue;
        let ok = false;
        try {
          const record = JSON.parse(line) as unknown;
          if (Array.isArray(record)) {
            const [key, at, signature] = record as unknown[];
            ok = add(key, at, signature);
          } else if (typeof record === 'object' && record !== null && 'out' in record)
            ok = pushOut((record as Marker).out);
        } catch {
          // a line torn by a crash: skipped, and the files rewritten at the next write
        }
        if (ok) t.#journalRecords++;
        else t.#rewrite = true;
      }
      if (journal !== '' && !journal.endsWith('\n')) t.#rewrite = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') t.#rewrite = true;
    }
    t.#trim();
    return t;
  }
  /** Records `entry` as `key`'s, the newest. */
  #set(key: string, entry: Entry): void {
    this.#remove(key);
    this.#entries.set(key, entry);
    heapPush(this.#byAge, [entry.at, key]);
    if (this.#byAge.length > 2 * this.#entries.size + 1024)
      this.#byAge = heapify([...this.#entries].map(([k, e]) => [e.at, k]));
    const signer = signerOf(entry);
    let held = this.#bySigner.get(signer);
    if (!held) this.#bySigner.set(signer, (held = { certificate: signer, keys: new Set() }));
    else if (entry.signature) entry.signature = { ...entry.signature, certificate: held.certificate };
    held.keys.add(key);
    this.#resized(held.certificate, held.keys.size - 1, held.keys.size);
  }
  #remove(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    const signer = signerOf(entry);
    const { keys } = this.#bySigner.get(signer)!;
    keys.delete(key);
    if (keys.size === 0) this.#bySigner.delete(signer);
    this.#resized(signer, keys.size + 1, keys.size);
  }
  /**
   * Moves `signer` from the signers holding `from` tombstones to those holding `to`. A size moves by
   * one at a time, so the largest is found again in a step, not by a scan of every signer per purge.
   */
  #resized(signer: string, from: number, to: number): void {
    const was = this.#signersBySize.get(from);
    was?.delete(signer);
    if (was?.size === 0) this.#signersBySize.delete(from);
    if (to > 0) {
      const now = this.#signersBySize.get(to);
      if (now) now.add(signer);
      else this.#signersBySize.set(to, new Set([signer]));
    }
    if (to > this.#largest) this.#largest = to;
    while (this.#largest > 0 && !this.#signersBySize.has(this.#largest)) this.#largest--;
  }
  /** Drops every expired tombstone (the oldest first, none that has not expired looked at). */
  #sweep(now: number): void {
    const heap = this.#byAge;
    while (heap.length > 0 && heap[0]![0] + this.#ttlMs <= now) {
      const [at, key] = heapPop(heap);
      if (this.#entries.get(key)?.at === at) this.#remove(key);
    }
  }
  /**
   * Down to the cap (MAX_TOMBSTONES unless opened with another): expired ones first, then the oldest
   * of the signer that holds the most.
   */
  #trim(): [key: string, at: number][] {
    const pushedOut: [string, number][] = [];
    if (this.#entries.size <= this.#maxEntries) return pushedOut;
    this.#sweep(this.#clock.now());
    while (this.#entries.size > this.#maxEntries) {
      const [signer] = this.#signersBySize.get(this.#largest)!;
      const [oldest] = this.#bySigner.get(signer!)!.keys;
      pushedOut.push([oldest!, this.#entries.get(oldest!)!.at]);
      this.#remove(oldest!);
    }
    return pushedOut;
  }
  /** Tombstones held (expired ones included until the next snapshot drops them). */
  get size(): number {
    return this.#entries.size;
  }

  /** When `key` was purged, if it was (and the record has not expired). */
  purgedAt(key: string): number | undefined {
    const entry = this.#entries.get(key);
    if (entry !== undefined && !this.keeps(entry.at)) {
      this.#remove(key);
      return undefined;
    }
    return entry?.at;
  }

  /** The signature of `key`'s purge, when it came with one (a "purged" answer shows it). */
  signatureOf(key: string): NodeSignature | undefined {
    return this.purgedAt(key) === undefined ? undefined : this.#entries.get(key)?.signature;
  }

  /** Whether a version of `key` created at `createdAtMs` is purged. */
  isPurged(key: string, createdAtMs: number): boolean {
    const at = this.purgedAt(key);
    return at !== undefined && createdAtMs <= at;
  }

  /** Whether a purge made at `at` would be kept now (it has not outlived the tombstones' time). */
  keeps(at: number): boolean {
    return at + this.#ttlMs > this.#clock.now();
  }

  /**
   * Records a purge, with its signature when it has one (keeping the later of two), and saves it
   * (resolves once it is on disk). At most MAX_TOMBSTONES are kept (the class's doc says which go).
   * A purge older than the tombstones' time (one replayed long after) is not recorded: it would be
   * dropped as expired, and until then it would cost a write and a place under the cap.
   */
  record(key: string, at: number, signature?: NodeSignature): Promise<void> {
    // No object has the empty key (and it is the snapshot's own entry).
    if (key === '' || !this.keeps(at) || (this.#entries.get(key)?.at ?? -1) >= at) return Promise.resolve();
    this.#set(key, { at, ...(signature ? { signature } : {}) });
    // The purge, then what it pushed out: the journal's replay does what was done.
    const records: unknown[] = [signature ? [key, at, signature] : [key, at]];
    for (const out of this.#trim()) records.push({ out });
    const lines = records.map((r) => `${JSON.stringify(r)}\n`).join('');
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ lines, count: records.length, resolve, reject });
      if (!this.#flushing) this.#flushing = this.#flush();
    });
  }

  /**
   * Writes what is pending, in batches, one after another. A failed write fails its own callers
   * only; the next one is a whole snapshot, so the files heal once the disk does.
   */
  async #flush(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0);
      try {
        const records = this.#journalRecords + batch.reduce((n, p) => n + p.count, 0);
        if (this.#rewrite || records > Math.max(COMPACT_AFTER, this.#snapshotEntries)) await this.#snapshot();
        else {
          await appendDurably(this.#journal, batch.map((p) => p.lines).join(''));
          this.#journalRecords = records;
        }
        for (const p of batch) p.resolve();
      } catch (error) {
        this.#rewrite = true;
        for (const p of batch) p.reject(error);
      }
    }
    this.#flushing = undefined;
  }

  /**
   * Every live tombstone into the snapshot of the next generation, then a journal of that generation
   * with nothing in it (a crash between them leaves the last journal, which open() then leaves out).
   */
  async #snapshot(): Promise<void> {
    this.#sweep(this.#clock.now());
    const generation = this.#generation + 1;
    // A key of digits only also carries its place (`n`): JavaScript puts such keys of an object first.
    const data = Buffer.from(
      JSON.stringify({
        '': { generation },
        ...Object.fromEntries(
          [...this.#entries].map(([key, e], n) => [
            key,
            DIGITS.test(key) ? { ...e, n } : e.signature ? e : e.at,
          ]),
        ),
      }),
    );
    await atomicWrite(this.#tmpDir, this.#file, data, true);
    this.#generation = generation;
    await atomicWrite(this.#tmpDir, this.#journal, Buffer.from(`${JSON.stringify({ generation })}\n`), true);
    this.#journalRecords = 0;
    this.#snapshotEntries = this.#entries.size;
    this.#rewrite = false;
  }
}

type Aged = [at: number, key: string];
/** Adds `item` to the min-heap `heap` (by `at`). */
function heapPush(heap: Aged[], item: Aged): void {
  let i = heap.push(item) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent]![0] <= item[0]) break;
    heap[i] = heap[parent]!;
    i = parent;
  }
  heap[i] = item;
}
/** Takes the least `at` from the non-empty min-heap `heap`. */
function heapPop(heap: Aged[]): Aged {
  const top = heap[0]!;
  const last = heap.pop()!;
  if (heap.length > 0) siftDown(heap, 0, last);
  return top;
}
function siftDown(heap: Aged[], i: number, item: Aged): void {
  for (;;) {
    let child = 2 * i + 1;
    if (child >= heap.length) break;
    if (child + 1 < heap.length && heap[child + 1]![0] < heap[child]![0]) child++;
    if (heap[child]![0] >= item[0]) break;
    heap[i] = heap[child]!;
    i = child;
  }
  heap[i] = item;
}
/** `items` as a min-heap (in place, in linear time). */
function heapify(items: Aged[]): Aged[] {
  for (let i = (items.length >> 1) - 1; i >= 0; i--) siftDown(items, i, items[i]!);
  return items;
}

/** Keys JavaScript may list before the others of an object (array indices), and more. */
const DIGITS = /^[0-9]+$/;

/**
 * A snapshot's entries in the order they were recorded (the cap's "oldest"): as read, but each key of
 * digits only at the place it says (`n`, written with it), since a parsed object lists such keys
 * first. One without a usable place (a snapshot of an older release) stays where it was read.
 */
function inRecordedOrder(entries: Record<string, unknown>): [string, unknown][] {
  const read = Object.entries(entries);
  const placed = Array.from<[string, unknown] | undefined>({ length: read.length });
  const rest: [string, unknown][] = [];
  for (const pair of read) {
    const n = (pair[1] as { n?: unknown } | null)?.n;
    if (
      DIGITS.test(pair[0]) &&
      Number.isSafeInteger(n) &&
      (n as number) >= 0 &&
      (n as number) < read.length &&
      placed[n as number] === undefined
    )
      placed[n as number] = pair;
    else rest.push(pair);
  }
  // As many holes as pairs left unplaced: they fill the holes in the order read.
  let next = 0;
  return placed.map((pair) => pair ?? rest[next++]!);
}

/** Appends `text` to `file` and syncs it; ENOSPC becomes InsufficientStorageError. */
async function appendDurably(file: string, text: string): Promise<void> {
  try {
    const handle = await openFile(file, 'a');
    try {
      await handle.write(text);
      await handle.datasync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC')
      throw new InsufficientStorageError('the disk is full', { cause: error });
    throw error;
  }
}
