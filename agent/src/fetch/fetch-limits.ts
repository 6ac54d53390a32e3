/**
 * Downloads from peers under way at once on a node, at most. A download outlives the readers that
 * started it (what it fetched is kept, and later readers join it), so without a bound clients that
 * ask for many objects and hang up could start any number of them. Each holds up to MAX_IN_FLIGHT
 * chunk calls and its write-behind bytes.
 */
export const MAX_DOWNLOADS = 64;
/** Origin fetches under way at once on a node, at most (each one stores an object of up to store.maxObjectBytes). */
export const MAX_ORIGIN_FETCHES = 32;

/**
 * This node already runs as many downloads (or origin fetches) as it takes: a read of another
 * object that it lacks is refused for now (HTTP 503 `Busy`, with Retry-After), not queued.
 */
export class TooManyFetchesError extends Error {
  override name = 'TooManyFetchesError';
}
