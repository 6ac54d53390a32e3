import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { TOKEN_AUDIENCE } from './issuance.ts';
import {
  cachedClusterTokenKeys,
  type ClusterTokenKeys,
  KEYS_RETRY_MS,
  tokenPrecheck,
  UNKNOWN_KEY_REREAD_MS,
} from './token-precheck.ts';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';

async function signingKey(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  const token = (claims: { aud?: string; iss?: string } = {}) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid })
      .setIssuer(claims.iss ?? ISSUER)
      .setAudience(claims.aud ?? TOKEN_AUDIENCE)
      .setSubject('system:serviceaccount:edge:edgemesh-agent')
      .setExpirationTime('10m')
      .sign(privateKey);
  return { jwk, token };
}

const keySet = (...jwks: object[]): ClusterTokenKeys => ({
  issuer: ISSUER,
  jwks: JSON.stringify({ keys: jwks }),
});

describe('tokenPrecheck', () => {
  it('knows a key the API server rotated in after the keys were read, reading them again at most once a minute', async () => {
    const old = await signingKey('old');
    const rotated = await signingKey('rotated');
    let served = keySet(old.jwk);
    let cached = served;
    let cachedAt = 0;
    let now = 1_000_000;
    const reads: number[] = [];
    // What the controller's clusterTokens does: the set read, read again once older than asked.
    const keys = (maxAgeMs = 600_000) => {
      if (now - cachedAt >= maxAgeMs) {
        reads.push(maxAgeMs);
        cached = { ...served };
        cachedAt = now;
      }
      return Promise.resolve(cached);
    };
    const precheck = tokenPrecheck(keys);
    assert.equal(await precheck(await old.token()), true);
    assert.deepEqual(reads, [600_000]);
    assert.equal(await precheck(await old.token({ aud: 'someone-else' })), false, 'another audience');
    assert.equal(await precheck(await old.token({ iss: 'https://elsewhere' })), false, 'another issuer');
    assert.equal(await precheck('not.a.token'), false);

    // The API server rotates: a token of the new key is known after one more read, not refused.
    served = keySet(old.jwk, rotated.jwk);
    now += UNKNOWN_KEY_REREAD_MS;
    assert.equal(await precheck(await rotated.token()), true);
    assert.deepEqual(reads, [600_000, UNKNOWN_KEY_REREAD_MS]);

    // Tokens with made-up key ids: refused, and within the minute they cost no read.
    const stranger = await signingKey('made-up');
    for (let i = 0; i < 20; i++) assert.equal(await precheck(await stranger.token()), false);
    assert.equal(reads.length, 2);
    now += UNKNOWN_KEY_REREAD_MS;
    assert.equal(await precheck(await stranger.token()), false);
    assert.equal(reads.length, 3, 'a minute later, one more read');
  });

  it('cannot tell while no keys are known (the TokenReview decides)', async () => {
    const precheck = tokenPrecheck(() => Promise.resolve(undefined));
    assert.equal(await precheck('anything'), undefined);
  });
});

describe('cachedClusterTokenKeys', () => {
  const deferred = () => {
    let resolve!: (keys: ClusterTokenKeys) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<ClusterTokenKeys>((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  };

  it('gives callers that ask during a read the keys that read brings, with one read', async () => {
    // Two meshes reconciled at once: the second must not render its agents without the keys (and
    // roll them once the keys arrive) because the first started the read.
    const answer = deferred();
    let reads = 0;
    const keys = cachedClusterTokenKeys(
      () => {
        reads++;
        return answer.promise;
      },
      { onError: assert.fail },
    );
    const first = keys();
    const second = keys();
    const set = keySet({ kid: 'k' });
    answer.resolve(set);
    assert.equal(await first, set);
    assert.equal(await second, set, 'the second caller waited for the read under way');
    assert.equal(reads, 1);
    assert.equal(await keys(), set, 'kept');
    assert.equal(reads, 1);
  });

  it('reads again when older than asked, retries a failed read after a minute, keeping the last good keys', async () => {
    let now = 1_000_000;
    const errors: string[] = [];
    let next: () => Promise<ClusterTokenKeys> = () => Promise.resolve(keySet({ kid: 'a' }));
    let reads = 0;
    const keys = cachedClusterTokenKeys(
      () => {
        reads++;
        return next();
      },
      { onError: (error) => errors.push(error.message), now: () => now },
    );
    const a = await keys();
    assert.equal(reads, 1);
    now += KEYS_RETRY_MS;
    assert.equal(await keys(), a, 'fresh enough');
    assert.equal(reads, 1);
    next = () => Promise.reject(new Error('blip'));
    assert.equal(await keys(5_000), a, 'a failed read keeps the last good keys');
    assert.deepEqual(errors, ['blip']);
    now += KEYS_RETRY_MS - 1;
    assert.equal(await keys(5_000), a);
    assert.equal(reads, 2, 'not tried again within the minute');
    now += 1;
    const b = keySet({ kid: 'b' });
    next = () => Promise.resolve(b);
    assert.equal(await keys(5_000), b);
    assert.equal(reads, 3);
  });

  it('answers undefined while no read has succeeded', async () => {
    const keys = cachedClusterTokenKeys(() => Promise.reject(new Error('down')), { onError: () => {} });
    assert.equal(await keys(), undefined);
  });
});
