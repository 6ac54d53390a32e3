import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Manifest } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { OriginOutcome } from '../fetch/origin.ts';
import type { PeerFetcher } from '../fetch/peer-fetcher.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { type AccessControl, clientName, type Principal, type Verb } from './access.ts';
import { answerFailure, HttpError, sendError } from './errors.ts';
import { type ExchangeDeps, receiveHandler, sendHandler } from './exchange.ts';
import { sendJson } from './json.ts';
import { OBJECTS_ROUTE, objectsHandler, requestKey } from './objects.ts';
import { responseOutcome } from './outcome.ts';
import { findRoute, requestPath, type Route } from './routes.ts';

export interface AppDeps {
  store: ObjectStore;
  replicate?: (manifest: Manifest) => Promise<number>;
  purge?: (key: string, by?: string) => Promise<boolean>;
  exchange?: ExchangeDeps;
  origin?: (key: string) => Promise<OriginOutcome | undefined>;
  writeCopies?: number;
  fetcher: PeerFetcher | undefined;
  counters: Counters;
  metrics: AgentMetrics;
  logger: Logger;
  status: () => unknown;
  ready: () => boolean;
  /** Who clients are and what they may do; absent: everyone may do everything (tests of the API alone). */
  access?: AccessControl;
  /** Serve /metrics without a token. */
  publicMetrics?: boolean;
}

/** The verb a request on an object is. */
const objectVerb = (method: string | undefined): Verb | undefined =>
  method === 'GET' || method === 'HEAD'
    ? 'read'
    : method === 'PUT'
      ? 'write'
      : method === 'DELETE'
        ? 'purge'
        : undefined;

/**
 * The agent's HTTP API for local workloads (docs/agent.md), plus health and metrics, as a node:http
 * request listener over a fixed route table (routes.ts). For each request, in this order:
 * - its metric (deps.metrics.recordRequest) once its response closes (at once when it has closed
 *   already), labelled with the template of the route whose handler it reached, else `unmatched` (a
 *   404, a bad path, a client refused or gone before);
 * - a Transfer-Encoding other than chunked alone: 501 NotImplemented, Connection: close, before the
 *   client is authenticated and before any route reads the body (unsupportedCoding);
 * - public routes (/healthz, /readyz, /metrics unless access.publicMetrics is false) are answered;
 * - the client is authenticated and admitted (401 with WWW-Authenticate, 429 with Retry-After);
 * - a path whose parameters are not valid percent-encoding: 400 BadRequest; no route: 404 NotFound
 *   `no route METHOD PATH`; else the route's handler, which refuses (403) what the client may not do.
 * An error a handler throws or rejects with is answered by toHttpError and sendError (a 5xx logged).
 *
 * Routing is what express 5 gave these routes, which served them before: paths match without
 * regard to case and with or without one trailing slash; a GET route answers HEAD (headers, no
 * body); a path is matched as sent (percent-encoded) and its parameters are decoded; the query is
 * no part of it; an absolute-form target is routed by its path. The objects route then takes its key
 * from the target as sent (objects.ts targetKey), which must be a path spelled /v1/objects/ exactly:
 * another case, an absolute-form target or a trailing slash is 400 InvalidKey. Not kept, deliberately:
 * - express's `If-None-Match: *` answered a GET of /healthz, /readyz or /v1/status with 304 and no
 *   body (its res.json checked freshness); they always answer 200 (or 503) with their JSON now;
 * - express's res.set completed a text Content-Type with a charset (mime-types): an object's
 *   Content-Type goes out exactly as it was stored (a stored `text/plain` stays `text/plain`);
 * - express labelled the metric of a HEAD on the POST-only exchange route with that route (its
 *   router dispatched HEAD to any route, which then matched no handler): it is `unmatched` now, as
 *   any other 404 is.
 * As before, no X-Powered-By, and no ETag on JSON answers (express had both turned off).
 */
export function createApp(deps: AppDeps): RequestListener {
  const routes = routeTable(deps);
  const { access, counters, metrics, logger } = deps;

  return (req, res) => {
    const started = performance.now();
    const path = requestPath(req.url ?? '/');
    const routing = findRoute(routes, req.method ?? '', path);
    let route = 'unmatched'; // the route's template once its handler is reached
    const record = () =>
      metrics.recordRequest({
        method: req.method ?? '',
        path,
        route,
        ...responseOutcome(res),
        seconds: (performance.now() - started) / 1000,
      });
    // Closed already: a client that hung up while the fast path checked its token, which passed it on.
    if (res.closed) record();
    else res.once('close', record);
    const answer = async (): Promise<void> => {
      const coding = unsupportedCoding(req);
      if (coding !== undefined)
        throw new HttpError(
          501,
          'NotImplemented',
          `Transfer-Encoding ${coding} is not supported: only chunked`,
          {
            Connection: 'close', // its body is not read
          },
        );
      let principal: Principal | undefined;
      if (access && !(routing.kind === 'route' && routing.route.public)) {
        principal = await admit(access, counters, req, res);
        if (!principal) return;
      }
      if (routing.kind === 'none') throw new HttpError(404, 'NotFound', `no route ${req.method} ${path}`);
      if (routing.kind === 'bad-path')
        throw new HttpError(400, 'BadRequest', 'the request path is not valid percent-encoding');
      route = routing.route.template;
      await routing.route.handle(req, res, { params: routing.params, principal });
    };
    answer().catch((error: unknown) => answerFailure(logger, req, res, error));
  };
}

/**
 * The request's Transfer-Encoding when it is anything but `chunked` alone (any case, any whitespace
 * around it), else undefined. node:http decodes chunked only: it refuses, as a bad request, a
 * Transfer-Encoding whose last coding is not chunked (`gzip`, `chunked, gzip`) and a repeated chunked,
 * but passes on `gzip, chunked` with only the chunked coding removed, so that the body read would
 * still be gzip-coded: stored as such, a wrong object. RFC 9112 §6.1: a coding the server does not
 * understand is a 501.
 */
export function unsupportedCoding(req: IncomingMessage): string | undefined {
  const value = req.headers['transfer-encoding'];
  if (value === undefined) return undefined;
  const codings = value
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding !== ''); // empty list elements are no codings (RFC 9110 §5.6.1)
  return codings.length === 1 && codings[0] === 'chunked' ? undefined : value;
}

/**
 * Authenticates and admits the client of a call to a route that is not public (docs/security.md):
 * undefined, and answered, when it is refused (a bad token is a 401, not anonymous) or gone.
 */
async function admit(
  access: AccessControl,
  counters: Counters,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<Principal | undefined> {
  const principal = await access.authenticateRequest(req);
  if (!principal) {
    Counters.bump(counters.clientsRefused, 'unauthenticated');
    sendError(
      res,
      new HttpError(401, 'Unauthenticated', 'a valid Bearer token is required', {
        'WWW-Authenticate': 'Bearer realm="edgemesh"',
      }),
    );
    return undefined;
  }
  const address = req.socket.remoteAddress;
  const release = access.admit(principal, address);
  if (!release) {
    Counters.bump(counters.clientsRefused, 'over-limit');
    sendError(
      res,
      new HttpError(429, 'TooManyRequests', tooMany(access, principal, address), {
        'Retry-After': '1',
      }),
    );
    return undefined;
  }
  // The client may have hung up while its token was checked: its 'close' has passed then.
  if (res.closed) {
    release();
    return undefined;
  }
  res.once('close', release);
  return principal;
}

/** Why a client was refused admission: its own limits, or (anonymous) those of all anonymous clients. */
function tooMany(access: AccessControl, principal: Principal, address: string | undefined): string {
  return principal.name === 'anonymous' && access.anonymousFull()
    ? 'anonymous clients: too many requests in all (access.maxConcurrentAnonymous)'
    : `${clientName(principal, address)}: too many requests`;
}

/** The API's routes, in the order they are tried. */
function routeTable(deps: AppDeps): Route[] {
  const { access, counters } = deps;
  /** Refuses (403) unless the request's client may `verb` on `name`. */
  const may = (res: ServerResponse, principal: Principal | undefined, verb: Verb, name: string): boolean => {
    if (!access) return true;
    if (principal && access.allows(principal, verb, name)) return true;
    Counters.bump(counters.clientsRefused, 'unauthorized');
    sendError(
      res,
      new HttpError(
        403,
        'Forbidden',
        `${principal?.name ?? 'nobody'} may not ${verb} ${JSON.stringify(name)}`,
      ),
    );
    return false;
  };
  /**
   * Refuses (403) an anonymous client the node's status and private metrics unless it may do
   * anything. No principal: no access control, or a public route.
   */
  const mayObserve = (res: ServerResponse, principal: Principal | undefined, what: string): boolean => {
    if (!access || !principal || access.allowsObserving(principal)) return true;
    Counters.bump(counters.clientsRefused, 'unauthorized');
    sendError(res, new HttpError(403, 'Forbidden', `anonymous clients may not see the ${what} here`));
    return false;
  };
  const objects = objectsHandler(deps);
  const routes: Route[] = [
    {
      method: 'GET',
      template: '/healthz',
      pattern: /^\/healthz\/?$/i,
      public: true,
      handle: (_req, res) => sendJson(res, 200, { status: 'ok' }),
    },
    {
      method: 'GET',
      template: '/readyz',
      pattern: /^\/readyz\/?$/i,
      public: true,
      handle: (_req, res) => {
        const ready = deps.ready();
        sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'starting' });
      },
    },
    {
      method: 'GET',
      template: '/metrics',
      pattern: /^\/metrics\/?$/i,
      public: deps.publicMetrics !== false,
      handle: (req, res, { principal }) => {
        if (mayObserve(res, principal, 'metrics')) deps.metrics.handle(req, res);
      },
    },
    {
      method: 'GET',
      template: '/v1/status',
      pattern: /^\/v1\/status\/?$/i,
      public: false,
      handle: (_req, res, { principal }) => {
        if (mayObserve(res, principal, 'status')) sendJson(res, 200, deps.status());
      },
    },
    {
      method: 'ANY',
      template: OBJECTS_ROUTE,
      pattern: /^\/v1\/objects\/(?<key>.*)$/i,
      public: false,
      handle: (req, res, { principal }) => {
        const verb = objectVerb(req.method);
        let key: string | undefined;
        try {
          key = requestKey(req); // the very key the handler acts on
        } catch {
          // a malformed key: the handler answers 400 and acts on nothing
        }
        if (verb && key !== undefined && !may(res, principal, verb, key)) return;
        return objects(req, res, principal);
      },
    },
  ];
  if (deps.exchange) {
    const send = sendHandler(deps.exchange);
    const receive = receiveHandler(deps.exchange);
    routes.push(
      {
        method: 'POST',
        template: '/v1/exchange/:target/:topic',
        pattern: /^\/v1\/exchange\/(?<target>[^/]+)\/(?<topic>[^/]+)\/?$/i,
        public: false,
        handle: (req, res, { principal, params: { target = '', topic = '' } }) => {
          if (may(res, principal, 'send', topic)) return send(req, res, { target, topic });
        },
      },
      {
        method: 'GET',
        template: '/v1/exchange/:topic',
        pattern: /^\/v1\/exchange\/(?<topic>[^/]+)\/?$/i,
        public: false,
        handle: (req, res, { principal, params: { topic = '' } }) => {
          if (may(res, principal, 'receive', topic)) receive(req, res, { topic });
        },
      },
    );
  }
  return routes;
}
