/** A caller has as many calls of one kind waiting as it may: this one is refused. */
export class CallerBusyError extends Error {
  override name = 'CallerBusyError';
}

/**
 * Calls of one kind that each caller may have running at once (`perCaller`), and waiting for a slot
 * beyond those (`queuePerCaller`; past them a call is refused with CallerBusyError). One member
 * asking for any number of copies at once cannot start any number of downloads here, and honest
 * bursts (a writer's many PUTs) wait their turn instead of failing.
 */
export class CallerSlots {
  readonly #callers = new Map<string, { running: number; waiting: (() => void)[] }>();
  readonly #perCaller: number;
  readonly #queuePerCaller: number;

  constructor(perCaller: number, queuePerCaller: number) {
    this.#perCaller = perCaller;
    this.#queuePerCaller = queuePerCaller;
  }

  /**
   * Runs `work` once `caller` has a slot. A call `cancelled` while it waits leaves the queue at once
   * (its place is free for another) and resolves undefined, `work` not run.
   */
  async run<T>(caller: string, work: () => Promise<T>, cancelled?: AbortSignal): Promise<T | undefined> {
    let state = this.#callers.get(caller);
    if (!state) {
      state = { running: 0, waiting: [] };
      this.#callers.set(caller, state);
    }
    if (state.running >= this.#perCaller) {
      if (state.waiting.length >= this.#queuePerCaller)
        throw new CallerBusyError(
          `${caller} has ${state.running} calls running and ${state.waiting.length} waiting: come back later`,
        );
      if (cancelled?.aborted) return undefined;
      const waiting = state.waiting;
      const turn = await new Promise<boolean>((resolve) => {
        const take = () => {
          cancelled?.removeEventListener('abort', leave);
          resolve(true);
        };
        const leave = () => {
          const at = waiting.indexOf(take);
          if (at >= 0) waiting.splice(at, 1);
          resolve(false);
        };
        waiting.push(take);
        cancelled?.addEventListener('abort', leave, { once: true });
      });
      if (!turn) return undefined;
    } else state.running++;
    try {
      return await work();
    } finally {
      const next = state.waiting.shift();
      if (next)
        next(); // the slot passes on
      else if (--state.running === 0) this.#callers.delete(caller);
    }
  }

  /** Calls of `caller` running and waiting (for tests and status). */
  of(caller: string): { running: number; waiting: number } {
    const state = this.#callers.get(caller);
    return { running: state?.running ?? 0, waiting: state?.waiting.length ?? 0 };
  }
}
