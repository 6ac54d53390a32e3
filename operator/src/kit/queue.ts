/**
 * A rate-limited work queue keyed by string (namespace/name), with controller-runtime's semantics:
 * - a key is queued at most once however often it is added, and a key being processed that is added
 *   again is processed once more after (never twice at the same time);
 * - a failure requeues the key after a per-key exponential backoff (baseDelayMs x 2^failures, capped
 *   at maxDelayMs), and every requeue also waits for a global token bucket (qps, burst), so a storm
 *   of failures cannot hammer the API server;
 * - success forgets the key's failures; `requeueAfter` schedules a timed revisit;
 * - a TerminalError is not retried (the key is forgotten until something adds it again).
 */
export class TerminalError extends Error {
  override name = 'TerminalError';
}

export interface QueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Global retry budget: tokens per second and bucket size. */
  qps?: number;
  burst?: number;
  now?: () => number;
}

export type Outcome = void | { requeueAfterMs: number };

export interface QueueMetrics {
  adds?: () => void;
  retries?: () => void;
  /** Seconds a key waited in the queue, and how long its processing took. */
  queued?: (seconds: number) => void;
  processed?: (seconds: number, result: 'success' | 'error' | 'requeue_after' | 'terminal') => void;
}

export class WorkQueue {
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #qps: number;
  readonly #burst: number;
  readonly #now: () => number;
  /** Keys ready to process, in order, with when each was queued. */
  readonly #ready = new Map<string, number>();
  readonly #processing = new Set<string>();
  /** Keys added again while being processed. */
  readonly #dirty = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  #tokens: number;
  #tokensAt: number;
  #waiters: (() => void)[] = [];
  #shuttingDown = false;
  metrics: QueueMetrics = {};

  constructor(opts: QueueOptions = {}) {
    this.#baseDelayMs = opts.baseDelayMs ?? 5;
    this.#maxDelayMs = opts.maxDelayMs ?? 1000 * 60 * 15;
    this.#qps = opts.qps ?? 10;
    this.#burst = opts.burst ?? 100;
    this.#now = opts.now ?? (() => performance.now());
    this.#tokens = this.#burst;
    this.#tokensAt = this.#now();
  }

  get depth(): number {
    return this.#ready.size;
  }

  /** Keys waiting for a retry or a timed revisit. */
  get waiting(): number {
    return this.#timers.size;
  }

  get busy(): number {
    return this.#processing.size;
  }

  add(key: string): void {
    if (this.#shuttingDown) return;
    this.metrics.adds?.();
    if (this.#processing.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#ready.has(key)) return;
    this.#ready.set(key, this.#now());
    this.#wakeOne();
  }

  /** Adds `key` after `delayMs` (unless something adds it sooner). */
  addAfter(key: string, delayMs: number): void {
    if (this.#shuttingDown) return;
    if (delayMs <= 0) return this.add(key);
    clearTimeout(this.#timers.get(key));
    const timer = setTimeout(() => {
      this.#timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.#timers.set(key, timer);
  }

  /** The per-key backoff for `key`'s next retry, combined with the global token bucket. */
  #retryDelay(key: string): number {
    const failures = this.#failures.get(key) ?? 0;
    this.#failures.set(key, failures + 1);
    const perKey = Math.min(this.#maxDelayMs, this.#baseDelayMs * 2 ** failures);
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#tokensAt) / 1000) * this.#qps);
    this.#tokensAt = now;
    this.#tokens -= 1;
    const global = this.#tokens >= 0 ? 0 : (-this.#tokens / this.#qps) * 1000;
    return Math.max(perKey, global);
  }

  failures(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** Waits for the next key; undefined once the queue is shut down and drained of ready keys. */
  async next(): Promise<string | undefined> {
    for (;;) {
      const first = this.#ready.entries().next();
      if (!first.done) {
        const [key, queuedAt] = first.value;
        this.#ready.delete(key);
        this.#processing.add(key);
        this.metrics.queued?.((this.#now() - queuedAt) / 1000);
        return key;
      }
      if (this.#shuttingDown) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Marks `key` processed with `outcome` (an Error: failed). */
  done(key: string, outcome: Outcome | Error, seconds = 0): void {
    this.#processing.delete(key);
    if (outcome instanceof TerminalError) {
      this.#failures.delete(key);
      this.metrics.processed?.(seconds, 'terminal');
    } else if (outcome instanceof Error) {
      this.metrics.retries?.();
      this.metrics.processed?.(seconds, 'error');
      if (!this.#dirty.has(key)) this.addAfter(key, this.#retryDelay(key));
    } else {
      this.#failures.delete(key);
      if (outcome?.requeueAfterMs !== undefined) {
        this.metrics.processed?.(seconds, 'requeue_after');
        this.addAfter(key, outcome.requeueAfterMs);
      } else {
        this.metrics.processed?.(seconds, 'success');
      }
    }
    if (this.#dirty.delete(key)) this.add(key);
  }

  /**
   * Runs `process` on keys with `workers` at a time until shutdown; resolves once the workers have
   * finished what they hold.
   */
  async run(workers: number, process: (key: string) => Promise<Outcome>): Promise<void> {
    const worker = async () => {
      for (let key = await this.next(); key !== undefined; key = await this.next()) {
        const started = this.#now();
        let outcome: Outcome | Error;
        try {
          outcome = await process(key);
        } catch (error) {
          outcome = error instanceof Error ? error : new Error(String(error));
        }
        this.done(key, outcome, (this.#now() - started) / 1000);
      }
    };
    await Promise.all(Array.from({ length: workers }, worker));
  }

  /** Stops taking keys; `run` returns once current work ends. Ready keys are dropped. */
  shutDown(): void {
    this.#shuttingDown = true;
    this.#ready.clear();
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }

  #wakeOne(): void {
    this.#waiters.shift()?.();
  }
}
