import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { findRoute, requestPath, type Route, type Routing } from './routes.ts';

const handle = () => {};
const route = (method: Route['method'], template: string, pattern: RegExp): Route => ({
  method,
  template,
  pattern,
  public: false,
  handle,
});
/** Routes shaped as app.ts's. */
const ROUTES = [
  route('GET', '/healthz', /^\/healthz\/?$/i),
  route('ANY', '/v1/objects/{*key}', /^\/v1\/objects\/(?<key>.*)$/i),
  route('POST', '/v1/exchange/:target/:topic', /^\/v1\/exchange\/(?<target>[^/]+)\/(?<topic>[^/]+)\/?$/i),
  route('GET', '/v1/exchange/:topic', /^\/v1\/exchange\/(?<topic>[^/]+)\/?$/i),
];
/** Where a request goes, as the template and parameters (or the kind, when no route). */
const where = (method: string, path: string) => {
  const routing: Routing = findRoute(ROUTES, method, path);
  return routing.kind === 'route' ? [routing.route.template, routing.params] : routing.kind;
};

describe('requestPath', () => {
  it('is the target up to its query or fragment, not decoded', () => {
    assert.equal(requestPath('/v1/objects/a%20b?x=1'), '/v1/objects/a%20b');
    assert.equal(requestPath('/healthz#top'), '/healthz');
    assert.equal(requestPath('/'), '/');
    assert.equal(requestPath('*'), '*');
  });

  it('is the path after the authority of an absolute-form target', () => {
    assert.equal(requestPath('http://x:80/v1/objects/k?q'), '/v1/objects/k');
    assert.equal(requestPath('https://x'), '/');
  });
});

describe('findRoute', () => {
  it('matches without regard to case, with or without one trailing slash, as express did', () => {
    for (const path of ['/healthz', '/healthz/', '/HEALTHZ', '/Healthz/'])
      assert.deepEqual(where('GET', path), ['/healthz', {}], path);
    assert.equal(where('GET', '/healthz//'), 'none');
    assert.equal(where('GET', '/healthzz'), 'none');
    assert.deepEqual(where('GET', '/V1/EXCHANGE/t/'), ['/v1/exchange/:topic', { topic: 't' }]);
    assert.equal(where('GET', '/v1/exchange/t//'), 'none');
  });

  it('answers HEAD with GET routes, and only the methods a route takes', () => {
    assert.deepEqual(where('HEAD', '/healthz'), ['/healthz', {}]);
    assert.equal(where('POST', '/healthz'), 'none');
    assert.equal(where('HEAD', '/v1/exchange/n1/t'), 'none');
    assert.deepEqual(where('PATCH', '/v1/objects/k'), ['/v1/objects/{*key}', { key: 'k' }]);
  });

  it('decodes parameters, the rest of the path included for a wildcard', () => {
    assert.deepEqual(where('POST', '/v1/exchange/zone%3Az1/a%2Eb'), [
      '/v1/exchange/:target/:topic',
      { target: 'zone:z1', topic: 'a.b' },
    ]);
    assert.deepEqual(where('GET', '/v1/exchange/a%2Fb'), ['/v1/exchange/:topic', { topic: 'a/b' }]);
    assert.deepEqual(where('GET', '/v1/objects/'), ['/v1/objects/{*key}', { key: '' }]);
    assert.deepEqual(where('GET', '/v1/objects/a/%62/'), ['/v1/objects/{*key}', { key: 'a/b/' }]);
    assert.equal(where('GET', '/v1/objects'), 'none');
  });

  it('is a bad path when the first route the path matches, whatever its method, has a parameter that is not valid percent-encoding', () => {
    for (const [method, path] of [
      ['GET', '/v1/objects/%'],
      ['DELETE', '/v1/objects/a%zz'],
      ['POST', '/v1/exchange/%/t'],
      ['PUT', '/v1/exchange/%/t'], // the POST route's path: express refused it so
      ['GET', '/v1/exchange/%E0%A4%A'],
    ])
      assert.equal(where(method!, path!), 'bad-path', `${method} ${path}`);
    assert.equal(where('GET', '/%'), 'none', 'no route has it: a 404');
  });
});
