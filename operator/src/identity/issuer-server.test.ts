import assert from 'node:assert/strict';
import { request } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { createNodeKey, createServingCertificate } from '@edgemesh/identity';
import { pino } from 'pino';
import type { IssuanceApi } from './issuance.ts';
import { CallerLimiter, startIssuerServer } from './issuer-server.ts';

/** Posts `body` (a string, sent as is) with `headers`; the status and the JSON answer. */
function post(
  port: number,
  ca: string,
  body: string,
  headers: Record<string, string> = {},
  path = '/v1/certificates',
  method = 'POST',
): Promise<{ status: number; answer: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', servername: 'localhost', port, path, method, ca, headers },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode!, answer: JSON.parse(Buffer.concat(parts).toString() || '{}') }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('the issuance endpoint', () => {
  let server: { port: number; close(): Promise<void> };
  let cert: string;
  let meshReads = 0;
  let apiDown = false;
  const api: IssuanceApi = {
    reviewToken: () =>
      apiDown ? Promise.reject(new Error('connection refused')) : Promise.resolve({ authenticated: false }),
    getPod: () => Promise.resolve(undefined),
    daemonSetUid: () => Promise.resolve(undefined),
  };

  before(async () => {
    const tls = await createServingCertificate(['localhost']);
    cert = tls.certPem;
    server = await startIssuerServer({
      host: '127.0.0.1',
      port: 0,
      tls,
      api,
      meshCa: () => {
        meshReads++;
        return Promise.resolve(undefined);
      },
      logger: pino({ level: 'silent' }),
      perCallerPerSecond: 100,
    });
  });
  after(() => server.close());

  it('limits each caller to a few requests a second', () => {
    const limiter = new CallerLimiter(5);
    const t = 1_000_000;
    let allowed = 0;
    for (let i = 0; i < 50; i++) if (limiter.take('10.0.0.1', t)) allowed++;
    assert.equal(allowed, 10, 'a burst of twice the rate');
    assert.equal(limiter.take('10.0.0.2', t), true, 'another caller is not held back');
    assert.equal(limiter.take('10.0.0.1', t + 200), true, 'a token back after a fifth of a second');
  });

  it('answers bad requests with a clear status, and reads nothing about a mesh for a caller it does not know', async () => {
    const csr = (await createNodeKey('n')).csrPem;
    const good = JSON.stringify({ namespace: 'shop', mesh: 'cdn', csr });
    const bearer = { Authorization: 'Bearer abc.def' };
    const cases: [string, Promise<{ status: number; answer: Record<string, unknown> }>, number][] = [
      ['no token', post(server.port, cert, good), 401],
      ['not JSON', post(server.port, cert, '{', bearer), 400],
      [
        'bad names',
        post(server.port, cert, JSON.stringify({ namespace: '../x', mesh: 'cdn', csr }), bearer),
        400,
      ],
      [
        'not a CSR',
        post(server.port, cert, JSON.stringify({ namespace: 'shop', mesh: 'cdn', csr: 'x' }), bearer),
        400,
      ],
      ['too large', post(server.port, cert, 'x'.repeat(20_000), bearer), 413],
      ['another path', post(server.port, cert, good, bearer, '/'), 404],
      ['GET', post(server.port, cert, '', bearer, '/v1/certificates', 'GET'), 405],
      ['a token the API server does not authenticate', post(server.port, cert, good, bearer), 403],
      [
        'the same, the scheme in lower case',
        post(server.port, cert, good, { Authorization: 'bearer  abc.def' }),
        403,
      ],
      ['an empty token', post(server.port, cert, good, { Authorization: 'Bearer ' }), 401],
    ];
    for (const [what, answer, status] of cases) assert.equal((await answer).status, status, what);
    assert.equal(meshReads, 0, 'no mesh CA read for an unauthenticated caller');
    apiDown = true;
    const down = await post(server.port, cert, good, bearer);
    assert.equal(down.status, 503, 'the API server unreachable: try again, not refused');
    apiDown = false;
  });

  it('refuses a token the cluster did not sign without asking the API server', async () => {
    let reviews = 0;
    const tls = await createServingCertificate(['localhost']);
    const checked = await startIssuerServer({
      host: '127.0.0.1',
      port: 0,
      tls,
      api: { ...api, reviewToken: () => (reviews++, Promise.resolve({ authenticated: false })) },
      meshCa: () => Promise.resolve(undefined),
      logger: pino({ level: 'silent' }),
      precheck: (token) => Promise.resolve(token === 'signed.by.cluster'),
    });
    try {
      const body = JSON.stringify({ namespace: 'shop', mesh: 'cdn', csr: (await createNodeKey('n')).csrPem });
      const forged = await post(checked.port, tls.certPem, body, { Authorization: 'Bearer forged.token.x' });
      assert.deepEqual([forged.status, forged.answer.reason, reviews], [403, 'TokenInvalid', 0]);
      const genuine = await post(checked.port, tls.certPem, body, {
        Authorization: 'Bearer signed.by.cluster',
      });
      assert.deepEqual([genuine.status, reviews], [403, 1], 'a token that passes goes on to TokenReview');
    } finally {
      await checked.close();
    }
  });
});
