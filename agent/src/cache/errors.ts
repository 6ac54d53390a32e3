/** Errors of the cache layer. Callers test with `instanceof`; HTTP maps them to statuses in one place. */
export class StoreError extends Error {
  override name = 'StoreError';
}

/** The object is not in the store (or has expired). */
export class ObjectNotFoundError extends StoreError {
  override name = 'ObjectNotFoundError';
  readonly key: string;
  constructor(key: string) {
    super(`object not found: ${key}`);
    this.key = key;
  }
}

/** The object is larger than the configured per-object limit, or than the whole store. */
export class ObjectTooLargeError extends StoreError {
  override name = 'ObjectTooLargeError';
  readonly limit: number;
  constructor(limit: number, message = `object exceeds the limit of ${limit} bytes`) {
    super(message);
    this.limit = limit;
  }
}

/** Not enough room: nothing more can be evicted, or the disk is full. Retryable later. */
export class InsufficientStorageError extends StoreError {
  override name = 'InsufficientStorageError';
}

/** A chunk's bytes do not hash to its address. `source` names where the bytes came from. */
export class IntegrityError extends StoreError {
  override name = 'IntegrityError';
  readonly digest: string;
  readonly source: string;
  constructor(digest: string, source: string, options?: ErrorOptions) {
    super(`chunk ${digest} from ${source} failed verification`, options);
    this.digest = digest;
    this.source = source;
  }
}

/** The body ended before the announced length, or the upload was aborted. */
export class IncompleteBodyError extends StoreError {
  override name = 'IncompleteBodyError';
}

/** The object was purged after this version was created: it may not come back. */
export class ObjectPurgedError extends StoreError {
  override name = 'ObjectPurgedError';
  readonly key: string;
  readonly purgedAtMs: number;
  constructor(key: string, purgedAtMs: number) {
    super(`${key} was purged at ${new Date(purgedAtMs).toISOString()}`);
    this.key = key;
    this.purgedAtMs = purgedAtMs;
  }
}

/** A version older than the one this node holds: a newer version is never replaced by an older one. */
export class StaleVersionError extends StoreError {
  override name = 'StaleVersionError';
}
