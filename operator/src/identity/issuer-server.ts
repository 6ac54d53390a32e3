import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CsrError, MeshCa, type MeshRef } from '@edgemesh/identity';
import type { Logger } from 'pino';
import { authorizeNode, type IssuanceApi, IssuanceRefused, IssuanceUnavailable } from './issuance.ts';

/** The path agents POST their certificate requests to. */
export const ISSUE_PATH = '/v1/certificates';
/** A request body is a CSR (under 1 KiB) and two names: anything much larger is not one. */
const MAX_BODY_BYTES = 16 * 1024;
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** How long one request may wait on the API server before it is answered 503. */
const API_DEADLINE_MS = 15_000;

/** A rejection handler that turns a failure to read into IssuanceUnavailable. */
const unavailableWith = (what: string) => (error: unknown) => {
  if (error instanceof IssuanceUnavailable) throw error;
  throw new IssuanceUnavailable(`${what}: ${(error as Error).message}`, { cause: error });
};

/** `work`, or IssuanceUnavailable once API_DEADLINE_MS has passed. */
function withinDeadline<T>(work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new IssuanceUnavailable(`the API server did not answer in ${API_DEADLINE_MS} ms`)),
      API_DEADLINE_MS,
    );
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

export interface IssuerServerOptions {
  host: string;
  port: number;
  /** The serving certificate and key (PEM). */
  tls: { certPem: string; keyPem: string };
  api: IssuanceApi;
  /**
   * The mesh's CA, or undefined when the mesh has none (yet); given the mesh's uid (from `mesh`),
   * none that is not the mesh's (an earlier mesh's of the same name).
   */
  meshCa(mesh: MeshRef & { uid?: string | undefined }): Promise<MeshCa | undefined>;
  /** The mesh as it stands: its uid, and the nodes it has revoked (spec.security.revokedNodes), which get no certificate. */
  mesh?(mesh: MeshRef): Promise<{ uid?: string | undefined; revokedNodes: readonly string[] }>;
  logger: Logger;
  /** Hears each outcome ('issued', a refusal's reason, 'unavailable', 'bad-request'), for metrics. */
  onOutcome?: (outcome: string) => void;
  /** Requests per second one caller (an address) may make, in bursts of twice as many (default 5). */
  perCallerPerSecond?: number;
  /**
   * A local check of the token before the API server is asked (its signature against the cluster's
   * keys, issuer, audience, expiry): false refuses it at once (403 TokenInvalid), no TokenReview;
   * undefined when it cannot tell (the keys are not known yet).
   */
  precheck?: (token: string) => Promise<boolean | undefined>;
}

/** A token bucket per caller: `rate` a second, bursts of twice that; forgets callers that went quiet. */
export class CallerLimiter {
  readonly #rate: number;
  readonly #buckets = new Map<string, { tokens: number; atMs: number }>();
  constructor(rate: number) {
    this.#rate = rate;
  }
  take(caller: string, now = Date.now()): boolean {
    const burst = 2 * this.#rate;
    let bucket = this.#buckets.get(caller);
    if (!bucket) {
      if (this.#buckets.size >= 10_000) this.#buckets.clear();
      bucket = { tokens: burst, atMs: now };
      this.#buckets.set(caller, bucket);
    }
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.atMs) / 1000) * this.#rate);
    bucket.atMs = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/**
 * The issuance endpoint: `POST /v1/certificates` with `Authorization: Bearer <projected token>` and
 * `{ "namespace", "mesh", "csr", "node"? }`; answers `{ "certificate" }` (PEM), or 400 (a bad
 * request), 401 (no token), 403 (refused: the reason word only), 404/405 (another path or method),
 * 413, 503 (the API server did not answer in time, or the mesh's CA cannot sign: try again). The
 * request is checked before the token, and the token before anything about the mesh is read, so an
 * anonymous caller learns nothing of which meshes exist. HTTPS only; headers, body, idle time and
 * each wait on the API server are bounded.
 */
export async function startIssuerServer(
  opts: IssuerServerOptions,
): Promise<{ port: number; close(): Promise<void> }> {
  const limiter = new CallerLimiter(opts.perCallerPerSecond ?? 5);
  const server: Server = createServer(
    {
      cert: opts.tls.certPem,
      key: opts.tls.keyPem,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
      minVersion: 'TLSv1.2',
    },
    (req, res) => {
      handle({ ...opts, limiter }, req, res).catch((error: unknown) => {
        opts.logger.error({ err: error }, 'issuance failed');
        if (!res.headersSent) reply(res, 500, { error: 'internal error' });
      });
    },
  );
  server.listen(opts.port, opts.host);
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > MAX_BODY_BYTES) return undefined;
    parts.push(part);
  }
  return Buffer.concat(parts);
}

async function handle(
  opts: IssuerServerOptions & { limiter: CallerLimiter },
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const outcome = (word: string) => opts.onOutcome?.(word);
  if (req.url !== ISSUE_PATH) return reply(res, 404, { error: 'not found' });
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return reply(res, 405, { error: 'POST only' });
  }
  // Each caller (by address) may ask a few times a second: every request costs a TokenReview.
  if (!opts.limiter.take(req.socket.remoteAddress ?? '?')) {
    outcome('rate-limited');
    res.setHeader('Retry-After', '1');
    return reply(res, 429, { error: 'too many requests: try again in a second' });
  }
  const auth = req.headers.authorization ?? '';
  // The scheme in any case, then one or more spaces (RFC 9110), as the agents' API takes it.
  const token = /^Bearer +([A-Za-z0-9._~+/=-]{1,8192})$/i.exec(auth)?.[1];
  if (!token) {
    outcome('no-token');
    return reply(res, 401, { error: 'a Bearer token (the projected ServiceAccount token) is required' });
  }
  const body = await readBody(req);
  if (!body) {
    outcome('bad-request');
    return reply(res, 413, { error: `at most ${MAX_BODY_BYTES} bytes` });
  }
  let request: { namespace?: unknown; mesh?: unknown; csr?: unknown; node?: unknown };
  try {
    request = JSON.parse(body.toString('utf8')) as typeof request;
  } catch {
    outcome('bad-request');
    return reply(res, 400, { error: 'the body is not JSON' });
  }
  const { namespace, mesh, csr, node } = request ?? {};
  if (
    typeof namespace !== 'string' ||
    typeof mesh !== 'string' ||
    !NAME.test(namespace) ||
    !NAME.test(mesh) ||
    (node !== undefined && (typeof node !== 'string' || node.length === 0 || node.length > 253))
  ) {
    outcome('bad-request');
    return reply(res, 400, { error: 'namespace and mesh (Kubernetes names), csr, and optionally node' });
  }
  const ref = { namespace, name: mesh };
  try {
    // Cheapest first, and nothing about the mesh before the caller is known to be its agent: the
    // request's own signature, then the token and the pod (TokenReview), then the CA.
    await MeshCa.readRequest(csr);
    if ((await opts.precheck?.(token)) === false)
      throw new IssuanceRefused(
        'TokenInvalid',
        'the token is not a valid ServiceAccount token for this audience',
      );
    const { node: decided } = await withinDeadline(
      authorizeNode(opts.api, ref, token, typeof node === 'string' ? node : undefined),
    );
    const standing =
      opts.mesh && (await withinDeadline(opts.mesh(ref)).catch(unavailableWith('reading the mesh')));
    if (standing?.revokedNodes.includes(decided))
      throw new IssuanceRefused('Revoked', `${decided} is revoked in this mesh`);
    const ca = await withinDeadline(opts.meshCa({ ...ref, uid: standing?.uid })).catch((error: unknown) => {
      if (error instanceof IssuanceUnavailable) throw error;
      throw new IssuanceUnavailable(`reading the mesh CA: ${(error as Error).message}`, { cause: error });
    });
    if (!ca) throw new IssuanceUnavailable(`mesh ${namespace}/${mesh} has no CA yet`);
    const certificatePem = await ca
      .issue({ csrPem: csr, mesh: ref, node: decided })
      .catch((error: unknown) => {
        throw new IssuanceUnavailable(`the mesh CA cannot sign: ${(error as Error).message}`, {
          cause: error,
        });
      });
    outcome('issued');
    opts.logger.info({ mesh: `${namespace}/${mesh}`, node: decided }, 'node certificate issued');
    return reply(res, 200, { certificate: certificatePem, node: decided });
  } catch (error) {
    if (error instanceof CsrError) {
      outcome('bad-request');
      return reply(res, 400, { error: error.message });
    }
    if (error instanceof IssuanceRefused) {
      outcome(error.reason);
      opts.logger.warn(
        { mesh: `${namespace}/${mesh}`, reason: error.reason, err: error.message },
        'node certificate refused',
      );
      return reply(res, 403, { error: 'refused', reason: error.reason });
    }
    if (error instanceof IssuanceUnavailable) {
      outcome('unavailable');
      opts.logger.warn({ err: error.message }, 'issuance unavailable');
      return reply(res, 503, { error: 'the API server could not be asked; try again' });
    }
    throw error;
  }
}
