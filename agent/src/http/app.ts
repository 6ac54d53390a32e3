import express, { type NextFunction, type Request, type Response } from 'express';
import type { Manifest } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { OriginOutcome } from '../fetch/origin.ts';
import type { PeerFetcher } from '../fetch/peer-fetcher.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { HttpError, sendError, toHttpError } from './errors.ts';
import { type ExchangeDeps, receiveHandler, sendHandler } from './exchange.ts';
import { OBJECTS_ROUTE, objectsHandler, requestKey } from './objects.ts';
import type { AccessControl, Principal, Verb } from './access.ts';

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
const objectVerb = (method: string): Verb | undefined =>
  method === 'GET' || method === 'HEAD'
    ? 'read'
    : method === 'PUT'
      ? 'write'
      : method === 'DELETE'
        ? 'purge'
        : undefined;

/** The agent's HTTP API for local workloads (docs/agent.md), plus health and metrics. */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req, res, next) => {
    const started = performance.now();
    const path = req.path; // before a router strips a prefix
    res.once('close', () => {
      deps.metrics.recordRequest({
        method: req.method,
        path,
        route: String(req.route?.path ?? 'unmatched'),
        status: res.statusCode,
        seconds: (performance.now() - started) / 1000,
      });
    });
    next();
  });
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    res.status(deps.ready() ? 200 : 503).json({ status: deps.ready() ? 'ready' : 'starting' });
  });
  const access = deps.access;
  if (deps.publicMetrics !== false) app.get('/metrics', (req, res) => deps.metrics.handle(req, res));
  // Every other call says who it is (docs/security.md); a bad token is a 401, not anonymous.
  if (access) {
    app.use((req, res, next) => {
      access.authenticateRequest(req).then(
        (principal) => {
          if (!principal) {
            Counters.bump(deps.counters.clientsRefused, 'unauthenticated');
            res.set('WWW-Authenticate', 'Bearer realm="edgemesh"');
            return sendError(res, new HttpError(401, 'Unauthenticated', 'a valid Bearer token is required'));
          }
          const release = access.admit(principal);
          if (!release) {
            Counters.bump(deps.counters.clientsRefused, 'over-limit');
            res.set('Retry-After', '1');
            return sendError(
              res,
              new HttpError(429, 'TooManyRequests', `${principal.name}: too many requests`),
            );
          }
          // The client may have hung up while its token was checked: its 'close' has passed then.
          if (res.closed) return release();
          res.once('close', release);
          res.locals.principal = principal;
          next();
        },
        (error: unknown) => next(error),
      );
    });
  }
  /** Refuses (403) unless the request's client may `verb` on `name`. */
  const may = (res: Response, verb: Verb, name: string): boolean => {
    const principal = res.locals.principal as Principal | undefined;
    if (!access) return true;
    if (principal && access.allows(principal, verb, name)) return true;
    Counters.bump(deps.counters.clientsRefused, 'unauthorized');
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
  /** Refuses (403) an anonymous client the node's status and private metrics unless it may do anything. */
  const mayObserve = (res: Response, what: string): boolean => {
    const principal = res.locals.principal as Principal | undefined;
    if (!access || !principal || access.allowsObserving(principal)) return true;
    Counters.bump(deps.counters.clientsRefused, 'unauthorized');
    sendError(res, new HttpError(403, 'Forbidden', `anonymous clients may not see the ${what} here`));
    return false;
  };
  if (deps.publicMetrics === false)
    app.get('/metrics', (req, res) => {
      if (mayObserve(res, 'metrics')) deps.metrics.handle(req, res);
    });
  app.get('/v1/status', (_req, res) => {
    if (mayObserve(res, 'status')) res.json(deps.status());
  });
  const objects = objectsHandler(deps);
  app.all(OBJECTS_ROUTE, (req, res) => {
    const verb = objectVerb(req.method);
    let key: string | undefined;
    try {
      key = requestKey(req); // the very key the handler acts on
    } catch {
      // a malformed key: the handler answers 400 and acts on nothing
    }
    if (verb && key !== undefined && !may(res, verb, key)) return;
    return objects(req, res);
  });
  if (deps.exchange) {
    const send = sendHandler(deps.exchange);
    const receive = receiveHandler(deps.exchange);
    app.post('/v1/exchange/:target/:topic', (req, res) => {
      if (may(res, 'send', String(req.params.topic))) return send(req, res);
    });
    app.get('/v1/exchange/:topic', (req, res) => {
      if (may(res, 'receive', String(req.params.topic))) receive(req, res);
    });
  }
  app.use((req, res) => {
    sendError(res, new HttpError(404, 'NotFound', `no route ${req.method} ${req.path}`));
  });
  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const httpError = toHttpError(error);
    if (httpError.status >= 500) deps.logger.error({ err: error, url: req.originalUrl }, 'request failed');
    sendError(res, httpError);
  });
  return app;
}
