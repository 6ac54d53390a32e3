import express, { type NextFunction, type Request, type Response } from 'express';
import type { Manifest } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { OriginOutcome } from '../fetch/origin.ts';
import type { PeerFetcher } from '../fetch/peer-fetcher.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { AgentMetrics } from '../telemetry/metrics.ts';
import { type ExchangeDeps, receiveHandler, sendHandler } from '../exchange/routes.ts';
import { HttpError, sendError, toHttpError } from './errors.ts';
import { objectsHandler } from './objects.ts';

export interface AppDeps {
  store: ObjectStore;
  replicate?: (manifest: Manifest) => Promise<number>;
  purge?: (key: string) => Promise<boolean>;
  exchange?: ExchangeDeps;
  origin?: (key: string) => Promise<OriginOutcome | undefined>;
  writeCopies?: number;
  fetcher: PeerFetcher | undefined;
  counters: Counters;
  metrics: AgentMetrics;
  logger: Logger;
  status: () => unknown;
  ready: () => boolean;
}

/** The agent's HTTP API for local workloads (design.md), plus health and metrics. */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req, res, next) => {
    const started = performance.now();
    res.once('close', () => {
      const route = req.route?.path ?? 'unmatched';
      Counters.bump(deps.counters.requests, `${req.method} ${res.statusCode}`);
      deps.metrics.recordRequest(
        req.method,
        String(route),
        res.statusCode,
        (performance.now() - started) / 1000,
      );
    });
    next();
  });
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    res.status(deps.ready() ? 200 : 503).json({ status: deps.ready() ? 'ready' : 'starting' });
  });
  app.get('/metrics', (req, res) => deps.metrics.handle(req, res));
  app.get('/v1/status', (_req, res) => {
    res.json(deps.status());
  });
  app.all('/v1/objects/{*key}', objectsHandler(deps));
  if (deps.exchange) {
    app.post('/v1/exchange/:target/:topic', sendHandler(deps.exchange));
    app.get('/v1/exchange/:topic', receiveHandler(deps.exchange));
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
