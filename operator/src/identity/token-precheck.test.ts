import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { TOKEN_AUDIENCE } from './issuance.ts';
import { type ClusterTokenKeys, tokenPrecheck, UNKNOWN_KEY_REREAD_MS } from './token-precheck.ts';

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
