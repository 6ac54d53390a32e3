import {
  ADD,
  CONNECT,
  DELETE,
  ERROR,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  UPDATE,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';

/** Restart backoff after an informer error: doubling from the first to the last, with jitter. */
const RESTART_FIRST_MS = 500;
const RESTART_MAX_MS = 30_000;

export type Verb = 'add' | 'update' | 'delete' | 'resync';

export interface InformerOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** The list/watch path, e.g. /apis/apps/v1/daemonsets. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  onChange: (object: T, verb: Verb) => void;
  /** Every this often, every cached object is handed to onChange again (0: never). */
  resyncMs: number;
  logger: Logger;
  /** Called on every restart after an error. */
  onRestart?: () => void;
}

/**
 * client-node's informer (list, then watch from the list's resourceVersion, relist on 410) with what
 * it lacks: it restarts with backoff after any error (client-node stops), it says when it has synced
 * (start() resolving does not), and it re-delivers every cached object periodically (resync).
 */
export class Informer<T extends KubernetesObject> {
  readonly #opts: InformerOptions<T>;
  readonly #informer: ReturnType<typeof makeInformer<T>>;
  #synced = false;
  #stopped = false;
  #failures = 0;
  #restart: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  #onSynced: (() => void)[] = [];
  /**
   * list()'s answer, until the cache changes (every change is delivered as an event): a burst of
   * reconciles read all the Nodes once each, a copy of a thousand every time.
   */
  #listed: readonly T[] | undefined;

  constructor(opts: InformerOptions<T>) {
    this.#opts = opts;
    this.#informer = makeInformer<T>(opts.kc, opts.path, opts.list, opts.labelSelector);
    const deliver = (verb: Verb) => (object: T) => {
      this.#failures = 0;
      this.#listed = undefined;
      opts.onChange(object, verb);
    };
    this.#informer.on(ADD, deliver('add'));
    this.#informer.on(UPDATE, deliver('update'));
    this.#informer.on(DELETE, deliver('delete'));
    this.#informer.on(CONNECT, () => (this.#listed = undefined));
    this.#informer.on(ERROR, (error: unknown) => {
      this.#listed = undefined;
      this.#failed(error);
    });
  }

  get synced(): boolean {
    return this.#synced;
  }

  /** Starts listing and watching; resolves once the first list has succeeded. */
  async start(): Promise<void> {
    this.#stopped = false;
    const synced = new Promise<void>((resolve) => this.#onSynced.push(resolve));
    this.#begin().catch((error: unknown) =>
      this.#opts.logger.error(
        { err: (error as Error).message, path: this.#opts.path },
        'informer failed to start',
      ),
    );
    if (this.#opts.resyncMs > 0) {
      // eslint-disable-next-line no-restricted-syntax -- the round catches its own errors
      this.#resync = setInterval(() => {
        for (const object of this.#informer.list())
          try {
            this.#opts.onChange(object, 'resync');
          } catch (error) {
            this.#opts.logger.error(
              { err: (error as Error).message, path: this.#opts.path },
              'resync failed',
            );
          }
      }, this.#opts.resyncMs);
      this.#resync.unref();
    }
    await synced;
  }

  async #begin(): Promise<void> {
    let failed = false;
    const onError = () => (failed = true);
    this.#informer.on(ERROR, onError);
    try {
      await this.#informer.start();
    } catch (error) {
      failed = true;
      this.#failed(error);
    } finally {
      this.#informer.off(ERROR, onError);
    }
    if (!failed && !this.#stopped && !this.#synced) {
      this.#synced = true;
      for (const resolve of this.#onSynced.splice(0)) resolve();
    }
  }

  #failed(error: unknown): void {
    if (this.#stopped || this.#restart) return;
    const delay =
      Math.min(RESTART_MAX_MS, RESTART_FIRST_MS * 2 ** this.#failures) * (0.8 + 0.4 * Math.random());
    this.#failures++;
    this.#opts.logger.warn(
      {
        path: this.#opts.path,
        err: (error as Error)?.message ?? String(error),
        retryInMs: Math.round(delay),
      },
      'informer failed; restarting',
    );
    this.#restart = setTimeout(() => {
      this.#restart = undefined;
      if (this.#stopped) return;
      this.#opts.onRestart?.();
      this.#informer
        .stop()
        .then(() => this.#begin())
        .catch((error: unknown) =>
          this.#opts.logger.error(
            { err: (error as Error).message, path: this.#opts.path },
            'informer failed to restart',
          ),
        );
    }, delay);
    this.#restart.unref();
  }

  /** The objects in the cache; without a namespace the same array until the cache changes. */
  list(namespace?: string): readonly T[] {
    if (namespace !== undefined) return this.#informer.list(namespace);
    return (this.#listed ??= this.#informer.list());
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#informer.get(name, namespace);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restart);
    clearInterval(this.#resync);
    await this.#informer.stop();
  }
}
