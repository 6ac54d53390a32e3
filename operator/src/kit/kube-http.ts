import type { KubeConfig } from '@kubernetes/client-node';
import { Agent } from 'undici';

/** A Kubernetes API answer other than 2xx, shaped like client-node's ApiException (code, body). */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  readonly code: number;
  readonly body: unknown;
  constructor(code: number, body: unknown, what: string) {
    const message = (body as { message?: string } | undefined)?.message;
    super(`${what}: ${code}${message ? ` ${message}` : ''}`);
    this.code = code;
    this.body = body;
  }
}

/**
 * The largest answer read: the requests here are for single objects, which etcd keeps under 1.5 MiB
 * (its default request limit), so 16 MiB leaves room for their JSON and managed fields while a
 * proxy or server that sends without end cannot fill the operator's memory.
 */
export const MAX_ANSWER_BYTES = 16 * 2 ** 20;

/**
 * Raw JSON requests to the API server over one pooled, keep-alive connection set, with the
 * kubeconfig's credentials. For the reconcile hot path (server-side apply, status): client-node
 * 2.0 builds a new HTTP agent, hence a new connection (and TLS handshake), for every request, and
 * runs every body through its model serializer, which together cost more than the reconcile itself.
 * Requests go through undici's own request API, not its fetch: fetch's WHATWG objects (Request,
 * Headers, a web stream per body) took a tenth of the operator's CPU in a burst of new meshes
 * (docs/benchmarks.md, operator). Redirects are not followed (an API server answers none; fetch
 * followed them): a 3xx is a KubeApiError like any answer but 2xx.
 * An answer's body is read whole, up to MAX_ANSWER_BYTES (then the request fails, as any failure;
 * `send`, which reads no answer of a success, lets one past it go, the connection closed).
 * Informers stay on client-node (their connections are long-lived).
 */
export class KubeHttp {
  readonly #kc: KubeConfig;
  /** The server's origin, and the path it is served under (a proxy's, or none). */
  readonly #origin: string;
  readonly #base: string;
  #agent: Agent | undefined;
  readonly #timeoutMs: number;
  readonly #maxAnswerBytes: number;

  /**
   * `timeoutMs`: the most a request (and its answer's body) may take; then it fails, and is retried
   * as any failure. `maxAnswerBytes`: the largest body read (MAX_ANSWER_BYTES).
   */
  constructor(kc: KubeConfig, opts: { timeoutMs?: number; maxAnswerBytes?: number } = {}) {
    this.#kc = kc;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#maxAnswerBytes = opts.maxAnswerBytes ?? MAX_ANSWER_BYTES;
    const server = kc.getCurrentCluster()?.server;
    if (!server) throw new Error('the kubeconfig names no cluster server');
    const url = new URL(server);
    this.#origin = url.origin;
    this.#base = url.pathname.replace(/\/$/, '');
  }

  /** The answer's JSON; a KubeApiError for any status but 2xx. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
    accept = 'application/json',
  ): Promise<T> {
    return (await this.#exchange(method, path, body, contentType, accept, true)) as T;
  }

  /**
   * As request, for a caller that does not read the answer (a child applied, a status written, an
   * Event): a 2xx answer's body is let go unread. A burst of new meshes had the operator parse 5.7
   * MB of answers nobody read (50 ms of its 0.9 s).
   */
  async send(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<void> {
    await this.#exchange(method, path, body, contentType, 'application/json', false);
  }

  async #exchange(
    method: string,
    path: string,
    body: unknown,
    contentType: string,
    accept: string,
    read: boolean,
  ): Promise<unknown> {
    // Credentials are read each time (tokens expire and are refreshed); the agent is made once.
    const opts: {
      headers?: Record<string, string>;
      ca?: Buffer;
      cert?: Buffer;
      key?: Buffer;
      rejectUnauthorized?: boolean;
      auth?: string;
    } = {};
    await this.#kc.applyToHTTPSOptions(opts);
    this.#agent ??= new Agent({
      maxResponseSize: this.#maxAnswerBytes,
      connect: {
        ...(opts.ca ? { ca: opts.ca } : {}),
        ...(opts.cert ? { cert: opts.cert } : {}),
        ...(opts.key ? { key: opts.key } : {}),
        ...(opts.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: opts.rejectUnauthorized }),
        keepAlive: true,
        keepAliveInitialDelay: 30_000,
      },
    });
    const headers: Record<string, string> = { accept, ...(opts.headers ?? {}) };
    if (opts.auth) headers.authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    if (body !== undefined) headers['content-type'] = contentType;
    // One deadline for the answer and its body: a hung call fails, and the work queue retries it.
    const signal = AbortSignal.timeout(this.#timeoutMs);
    let text: string;
    let status: number;
    try {
      const res = await this.#agent.request({
        origin: this.#origin,
        path: `${this.#base}${path}`,
        method,
        headers,
        signal,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      status = res.statusCode;
      if (!read && status >= 200 && status <= 299) {
        await res.body.dump({ limit: this.#maxAnswerBytes, signal });
        return undefined;
      }
      text = await res.body.text();
    } catch (error) {
      if (signal.aborted)
        throw new Error(`${method} ${path}: no answer within ${this.#timeoutMs} ms`, { cause: error });
      if ((error as { code?: string }).code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE')
        throw new Error(`${method} ${path}: the answer is larger than ${this.#maxAnswerBytes} bytes`, {
          cause: error,
        });
      throw error;
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (status < 200 || status > 299) throw new KubeApiError(status, parsed, `${method} ${path}`);
    return parsed;
  }

  async close(): Promise<void> {
    await this.#agent?.close();
  }
}

/** The REST path of a namespaced or cluster object of the kinds the operator writes. */
export function objectPath(object: {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}): string {
  const plural = PLURALS[object.kind];
  if (!plural) throw new Error(`no REST path known for kind ${object.kind}`);
  const base = object.apiVersion.includes('/') ? `/apis/${object.apiVersion}` : `/api/${object.apiVersion}`;
  const ns = object.metadata.namespace ? `/namespaces/${object.metadata.namespace}` : '';
  return `${base}${ns}/${plural}/${object.metadata.name}`;
}

const PLURALS: Record<string, string> = {
  ServiceAccount: 'serviceaccounts',
  ConfigMap: 'configmaps',
  Service: 'services',
  Secret: 'secrets',
  NetworkPolicy: 'networkpolicies',
  DaemonSet: 'daemonsets',
  EdgeMesh: 'edgemeshes',
};
