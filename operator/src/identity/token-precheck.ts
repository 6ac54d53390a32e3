import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import { TOKEN_AUDIENCE } from './issuance.ts';

/** The cluster's ServiceAccount token issuer and its signing keys (a JWK set, as JSON text). */
export interface ClusterTokenKeys {
  issuer: string;
  jwks: string;
}

/** How often, at most, a token signed by a key not in the set read makes the keys be read again. */
export const UNKNOWN_KEY_REREAD_MS = 60_000;

/**
 * The issuance endpoint's precheck (issuer-server.ts): a token checked against the cluster's keys
 * (signature, issuer, audience, expiry) before any TokenReview, so garbage costs none. `keys(maxAgeMs)`
 * gives the keys read at most that long ago (read again when older; the same object when nothing new
 * was read). A token signed by a key not in the set (the API server rotated its keys since they were
 * read) makes them be read again, at most once a minute, so a new key is known within a minute and a
 * token with a made-up key id costs at most that one read. Undefined while no keys are known.
 */
export function tokenPrecheck(
  keys: (maxAgeMs?: number) => Promise<ClusterTokenKeys | undefined>,
): (token: string) => Promise<boolean | undefined> {
  const verify = async (token: string, set: ClusterTokenKeys): Promise<boolean | 'unknown-key'> => {
    try {
      await jwtVerify(token, createLocalJWKSet(JSON.parse(set.jwks) as JSONWebKeySet), {
        issuer: set.issuer,
        audience: TOKEN_AUDIENCE,
        requiredClaims: ['exp'],
      });
      return true;
    } catch (error) {
      return (error as { code?: string }).code === 'ERR_JWKS_NO_MATCHING_KEY' ? 'unknown-key' : false;
    }
  };
  return async (token) => {
    const known = await keys();
    if (!known) return undefined;
    const verdict = await verify(token, known);
    if (verdict !== 'unknown-key') return verdict;
    const fresh = await keys(UNKNOWN_KEY_REREAD_MS);
    return fresh !== undefined && fresh !== known && (await verify(token, fresh)) === true;
  };
}

/** How long a failed read of the cluster's keys waits before it is tried again. */
export const KEYS_RETRY_MS = 60_000;

/**
 * The cluster's token keys as `read` gives them, kept: `keys(maxAgeMs)` reads again when the last
 * good answer is older than `maxAgeMs` (the API server rotates its keys), a failed read is tried
 * again after KEYS_RETRY_MS (the last good answer given meanwhile), and callers that ask while a read
 * is under way wait for that read, not answer without it: two meshes reconciled at once both get
 * the keys, so neither renders its agents a configuration without them (which would roll its pods
 * once the keys arrive).
 */
export function cachedClusterTokenKeys(
  read: () => Promise<ClusterTokenKeys>,
  { onError, now = Date.now }: { onError: (error: Error) => void; now?: () => number },
): (maxAgeMs?: number) => Promise<ClusterTokenKeys | undefined> {
  let value: ClusterTokenKeys | undefined;
  let goodAt = -Infinity;
  let triedAt = -Infinity;
  let reading: Promise<ClusterTokenKeys | undefined> | undefined;
  return (maxAgeMs = 600_000) => {
    if (reading) return reading;
    const at = now();
    if (at - goodAt < maxAgeMs || at - triedAt < KEYS_RETRY_MS) return Promise.resolve(value);
    triedAt = at;
    reading = read()
      .then(
        (keys) => {
          value = keys;
          goodAt = now();
        },
        (error: Error) => onError(error),
      )
      .then(() => value)
      .finally(() => (reading = undefined));
    return reading;
  };
}
