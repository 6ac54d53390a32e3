import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createLogger } from '../telemetry/logger.ts';
import { AccessControl, parseTokens } from './access.ts';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';

describe('local client access', () => {
  let dir: string;
  let access: AccessControl;
  let key: CryptoKey;
  const jwt = (sub: string, opts: { aud?: string; iss?: string; expiresIn?: string; by?: CryptoKey } = {}) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setSubject(sub)
      .setIssuer(opts.iss ?? ISSUER)
      .setAudience(opts.aud ?? 'edgemesh.p2p.dev')
      .setIssuedAt()
      .setExpirationTime(opts.expiresIn ?? '10m')
      .sign(opts.by ?? key);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-access-'));
    const pair = await generateKeyPair('ES256');
    key = pair.privateKey;
    await writeFile(
      join(dir, 'jwks.json'),
      JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }] }),
    );
    await writeFile(
      join(dir, 'tokens.yaml'),
      'tokens:\n  - { name: ci, token: ci-token-0123456789 }\n  - { name: reader, token: reader-token-0123456789 }\n',
    );
    access = new AccessControl(
      {
        tokensFile: join(dir, 'tokens.yaml'),
        serviceAccounts: { issuer: ISSUER, jwksFile: join(dir, 'jwks.json'), audience: 'edgemesh.p2p.dev' },
        anonymous: 'none',
        maxConcurrentPerClient: 2,
        maxConcurrentAnonymous: 1024,
        requestsPerSecondPerClient: 10,
        rules: [
          { subjects: ['token:ci'], verbs: ['read', 'write', 'purge', 'send', 'receive'], prefixes: [''] },
          { subjects: ['token:reader'], verbs: ['read'], prefixes: ['public/'] },
          { subjects: ['system:serviceaccounts:shop'], verbs: ['read', 'write'], prefixes: ['shop/'] },
          { subjects: ['system:serviceaccount:shop:orders'], verbs: ['receive'], prefixes: ['orders'] },
        ],
      },
      createLogger({ level: 'silent', nodeId: 't' }),
    );
    await access.start();
  });
  after(async () => {
    access.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('knows static tokens and ServiceAccount tokens, and nothing else', async () => {
    assert.equal((await access.authenticate('Bearer ci-token-0123456789'))?.name, 'token:ci');
    for (const spelling of ['bearer ci-token-0123456789', 'BEARER  ci-token-0123456789'])
      assert.equal((await access.authenticate(spelling))?.name, 'token:ci', spelling);
    const sa = await access.authenticate(`Bearer ${await jwt('system:serviceaccount:shop:orders')}`);
    assert.deepEqual(sa, {
      name: 'system:serviceaccount:shop:orders',
      groups: ['authenticated', 'system:serviceaccounts', 'system:serviceaccounts:shop'],
    });
    assert.equal((await access.authenticate(undefined))?.name, 'anonymous');
    const other = (await generateKeyPair('ES256')).privateKey;
    for (const bad of [
      'Bearer nope-nope-nope-nope',
      'Basic Y2k6Y2k=',
      'Bearer ',
      '', // present but empty: not anonymous
      `Bearer ${await jwt('system:serviceaccount:shop:orders', { aud: 'https://kubernetes.default.svc' })}`,
      `Bearer ${await jwt('system:serviceaccount:shop:orders', { iss: 'https://elsewhere' })}`,
      `Bearer ${await jwt('system:serviceaccount:shop:orders', { by: other })}`,
      `Bearer ${await jwt('system:serviceaccount:shop:orders', { expiresIn: '-1m' })}`,
      `Bearer ${await jwt('alice')}`,
      // A token that never expires.
      `Bearer ${await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setSubject('system:serviceaccount:shop:orders').setIssuer(ISSUER).setAudience('edgemesh.p2p.dev').setIssuedAt().sign(key)}`,
    ])
      assert.equal(await access.authenticate(bad), undefined, bad.slice(0, 40));
  });

  it('allows what the rules give, on their prefixes, and anonymous clients nothing by default', async () => {
    const ci = (await access.authenticate('Bearer ci-token-0123456789'))!;
    const reader = (await access.authenticate('Bearer reader-token-0123456789'))!;
    const orders = (await access.authenticate(`Bearer ${await jwt('system:serviceaccount:shop:orders')}`))!;
    const web = (await access.authenticate(`Bearer ${await jwt('system:serviceaccount:shop:web')}`))!;
    const anonymous = (await access.authenticate(undefined))!;
    assert.equal(access.allows(ci, 'purge', 'anything'), true);
    assert.equal(access.allows(reader, 'read', 'public/a'), true);
    assert.equal(access.allows(reader, 'read', 'private/a'), false);
    assert.equal(access.allows(reader, 'write', 'public/a'), false);
    assert.equal(access.allows(web, 'write', 'shop/cart'), true, 'through its namespace group');
    assert.equal(access.allows(web, 'receive', 'orders'), false);
    assert.equal(access.allows(orders, 'receive', 'orders'), true);
    assert.equal(access.allows(anonymous, 'read', 'public/a'), false);
    assert.equal(access.allowsObserving(anonymous), false);
  });

  it('gives anonymous clients only what `anonymous` says: none nothing, read only reads, all everything', () => {
    const anonymous = { name: 'anonymous', groups: ['anonymous'] };
    const verbs = ['read', 'write', 'purge', 'send', 'receive'] as const;
    const expected = {
      none: { read: false, write: false, purge: false, send: false, receive: false },
      read: { read: true, write: false, purge: false, send: false, receive: false },
      all: { read: true, write: true, purge: true, send: true, receive: true },
    };
    for (const mode of ['none', 'read', 'all'] as const) {
      const control = new AccessControl(
        {
          anonymous: mode,
          rules: [],
          maxConcurrentPerClient: 1,
          maxConcurrentAnonymous: 1024,
          requestsPerSecondPerClient: 0,
        },
        createLogger({ level: 'silent', nodeId: 't' }),
      );
      for (const verb of verbs)
        assert.equal(control.allows(anonymous, verb, 'shop/cart'), expected[mode][verb], `${mode}: ${verb}`);
      assert.equal(control.allowsObserving(anonymous), mode !== 'none', `${mode}: observing`);
    }
  });

  it('refuses a ServiceAccount token once it has expired, also one it verified and remembers', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const nowS = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setSubject('system:serviceaccount:shop:orders')
      .setIssuer(ISSUER)
      .setAudience('edgemesh.p2p.dev')
      .setIssuedAt(nowS)
      .setExpirationTime(nowS + 10)
      .sign(key);
    // Verified (and remembered) while valid.
    assert.equal((await access.authenticate(`Bearer ${token}`))?.name, 'system:serviceaccount:shop:orders');
    t.mock.timers.tick(5_000);
    assert.equal((await access.authenticate(`Bearer ${token}`))?.name, 'system:serviceaccount:shop:orders');
    // Past its exp, well within the cache's minute: refused, remembered or not.
    t.mock.timers.tick(6_000);
    assert.equal(await access.authenticate(`Bearer ${token}`), undefined, 'remembered, but expired');
  });

  it('admits a client within its concurrency and rate, and again once it slows down', async () => {
    const ci = (await access.authenticate('Bearer ci-token-0123456789'))!;
    const reader = (await access.authenticate('Bearer reader-token-0123456789'))!;
    const t = 1_000_000;
    const first = access.admit(ci, '10.0.0.1', t)!;
    const second = access.admit(ci, '10.0.0.1', t)!;
    assert.equal(access.admit(ci, '10.0.0.1', t), undefined, 'a third at once: over the concurrency');
    assert.ok(access.admit(reader, '10.0.0.1', t), 'another client is not held back');
    first();
    second();
    for (let i = 2; i < 10; i++) access.admit(ci, '10.0.0.1', t)?.();
    assert.equal(
      access.admit(ci, '10.0.0.1', t),
      undefined,
      'the eleventh in the same instant: over the rate',
    );
    assert.ok(access.admit(ci, '10.0.0.1', t + 200), 'a fifth of a second later: two more tokens');
  });

  it('counts a token wherever it comes from, and anonymous requests by address', async () => {
    const control = new AccessControl(
      {
        tokensFile: join(dir, 'tokens.yaml'),
        anonymous: 'read',
        rules: [],
        maxConcurrentPerClient: 2,
        maxConcurrentAnonymous: 1024,
        requestsPerSecondPerClient: 0,
      },
      createLogger({ level: 'silent', nodeId: 't' }),
    );
    await control.start(60_000);
    try {
      const ci = (await control.authenticate('Bearer ci-token-0123456789'))!;
      const anonymous = (await control.authenticate(undefined))!;
      assert.ok(control.admit(ci, '10.0.0.1'));
      assert.ok(control.admit(ci, '10.0.0.2'));
      assert.equal(control.admit(ci, '10.0.0.3'), undefined, 'one client from a third address: over');
      assert.ok(control.admit(anonymous, '10.0.0.1'));
      assert.ok(control.admit(anonymous, '10.0.0.1'));
      assert.equal(control.admit(anonymous, '10.0.0.1'), undefined, 'one address over its limit');
      assert.ok(control.admit(anonymous, '10.0.0.2'), 'another anonymous address is not held back');
    } finally {
      control.close();
    }
  });

  it('holds all anonymous clients together to a ceiling, and IPv6 ones by their /64', async () => {
    const control = new AccessControl(
      {
        anonymous: 'read',
        rules: [],
        maxConcurrentPerClient: 2,
        maxConcurrentAnonymous: 5,
        requestsPerSecondPerClient: 0,
      },
      createLogger({ level: 'silent', nodeId: 't' }),
    );
    const anonymous = (await control.authenticate(undefined))!;
    // One /64, whatever the rest of the address; an IPv4 address mapped into IPv6 is that address.
    assert.ok(control.admit(anonymous, '2001:db8:0:1::a'));
    assert.ok(control.admit(anonymous, '2001:db8:0:1:ffff:1:2:3'));
    assert.equal(control.admit(anonymous, '2001:0db8::1:0:0:0:9'), undefined, 'the same /64: over');
    const mapped = control.admit(anonymous, '::ffff:10.1.2.3')!;
    assert.ok(mapped);
    assert.ok(control.admit(anonymous, '10.1.2.3'));
    assert.equal(control.admit(anonymous, '10.1.2.3'), undefined, 'mapped and plain: one client');
    // Five in progress: a new address waits too, and is admitted once one ends.
    assert.ok(control.admit(anonymous, '10.9.9.9'));
    assert.equal(control.admit(anonymous, '10.9.9.8'), undefined, 'all anonymous together: over');
    assert.ok(control.anonymousFull());
    mapped();
    assert.equal(control.anonymousFull(), false);
    assert.ok(control.admit(anonymous, '10.9.9.8'));
  });

  it("never lets a flood of anonymous addresses push out a token's rate", async () => {
    const control = new AccessControl(
      {
        tokensFile: join(dir, 'tokens.yaml'),
        anonymous: 'read',
        rules: [],
        maxConcurrentPerClient: 2,
        maxConcurrentAnonymous: 100_000,
        requestsPerSecondPerClient: 10,
      },
      createLogger({ level: 'silent', nodeId: 't' }),
    );
    await control.start(60_000);
    try {
      const ci = (await control.authenticate('Bearer ci-token-0123456789'))!;
      const anonymous = (await control.authenticate(undefined))!;
      const t = 1_000_000;
      for (let i = 0; i < 10; i++) control.admit(ci, '10.0.0.1', t)!();
      assert.equal(control.admit(ci, '10.0.0.1', t), undefined, 'its burst spent');
      // 20,000 one-off anonymous addresses, each done at once: more than the map keeps.
      for (let i = 0; i < 20_000; i++)
        control.admit(anonymous, `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, t)?.();
      assert.equal(control.admit(ci, '10.0.0.1', t), undefined, 'the same instant: its burst still spent');
      // 10,000 addresses in progress at once fill the map: a new one waits, nothing is forgotten.
      const held: (() => void)[] = [];
      for (let i = 0; held.length < 10_000 && i < 30_000; i++) {
        const release = control.admit(anonymous, `11.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, t + 1000);
        if (release) held.push(release);
      }
      assert.equal(held.length, 10_000, 'the idle ones forgotten, oldest first');
      assert.equal(
        control.admit(anonymous, '12.0.0.1', t + 1000),
        undefined,
        'all in progress: a new address waits',
      );
      for (const release of held.splice(0, 128)) release();
      assert.ok(control.admit(anonymous, '12.0.0.1', t + 1000), 'the oldest done: a new address is taken');
      for (const release of held) release();
    } finally {
      control.close();
    }
  });

  it('does not lock a client out when the wall clock is set back', async () => {
    const ci = (await access.authenticate('Bearer ci-token-0123456789'))!;
    const t = 5_000_000;
    for (let i = 0; i < 10; i++) access.admit(ci, '10.0.0.1', t)?.();
    assert.equal(access.admit(ci, '10.0.0.1', t), undefined, 'its burst spent');
    // An hour back: counted as a debt, 36,000 tokens were owed (an hour's lockout).
    const back = t - 3_600_000;
    assert.equal(access.admit(ci, '10.0.0.1', back), undefined);
    assert.ok(access.admit(ci, '10.0.0.1', back + 200), 'a fifth of a second later: tokens again');
  });

  it('refuses a tokens file that would hold a weak or nameless token', async () => {
    await assert.rejects(parseTokens('tokens: [{ name: a, token: short }]'), /at least 16/);
    await assert.rejects(parseTokens('tokens: [{ token: aaaaaaaaaaaaaaaaaaaa }]'), /name/);
    await assert.rejects(parseTokens('nope: 1'), /tokens file/);
    await assert.rejects(parseTokens('{"tokens": [{"name": "a", "token": "short"}]}'), /at least 16/);
  });
});
