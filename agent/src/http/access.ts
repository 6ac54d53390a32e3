import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import { parseDocument } from '../config/document.ts';
import type { Logger } from '../telemetry/logger.ts';
import { every } from '../time/every.ts';
import { TokenBucket } from '../time/token-bucket.ts';

/** What a client may do: on object keys (read, write, purge), on exchange topics (send, receive). */
export const VERBS = ['read', 'write', 'purge', 'send', 'receive'] as const;
export type Verb = (typeof VERBS)[number];

/** An authenticated client (or `anonymous`), and the groups rules may name. */
export interface Principal {
  /** `token:<name>`, `system:serviceaccount:<namespace>:<name>`, or `anonymous`. */
  name: string;
  /** `authenticated`, `system:serviceaccounts`, `system:serviceaccounts:<namespace>`; or `anonymous`. */
  groups: string[];
}

export interface AccessRule {
  /** Principal names or groups the rule is for. */
  subjects: string[];
  verbs: Verb[];
  /** Key (read, write, purge) or topic (send, receive) prefixes; `''` is everything. */
  prefixes: string[];
}

export interface AccessConfig {
  /** A YAML or JSON file `{ tokens: [{ name, token }] }`: static client tokens, read again as it changes. */
  tokensFile?: string | undefined;
  /** Kubernetes ServiceAccount tokens, verified against the cluster's signing keys (no API call). */
  serviceAccounts?:
    | {
        /** The cluster's service-account issuer (the tokens' `iss`). */
        issuer: string;
        /** The cluster's JWKS (`/openid/v1/jwks`), as the operator writes it; read again as it changes. */
        jwksFile: string;
        /** The audience the tokens must be for. */
        audience: string;
      }
    | undefined;
  /** What anonymous clients (no token) may do, on every key and topic: nothing, read, or all. */
  anonymous: 'none' | 'read' | 'all';
  rules: AccessRule[];
  /** Requests one client may have in progress at once (more: 429). */
  maxConcurrentPerClient: number;
  /** Requests all anonymous clients together may have in progress at once (more: 429). */
  maxConcurrentAnonymous: number;
  /** Requests per second one client may start, with bursts of as many (0: no limit; more: 429). */
  requestsPerSecondPerClient: number;
}

interface ClientLoad {
  inFlight: number;
  rate: TokenBucket | undefined;
}

const ANONYMOUS: Principal = { name: 'anonymous', groups: ['anonymous'] };
/** How long a verified ServiceAccount token is taken without verifying it again (it may expire sooner). */
const TOKEN_CACHE_MS = 60_000;
const MAX_CACHED = 10_000;
/** Clients looked at, oldest first, for one to forget when a full map must take a new one. */
const EVICTION_TRIES = 64;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Who a local client is, and what it may do. A request carries `Authorization: Bearer <token>`: a
 * static token from the tokens file (`token:<name>`), or a projected ServiceAccount token for the
 * mesh's audience, checked against the cluster's keys (signature, issuer, audience, expiry), as
 * `system:serviceaccount:<namespace>:<name>`. No header: anonymous, allowed only what
 * `anonymous` says. A token that is present but not valid is refused (never anonymous).
 */
export class AccessControl {
  /** Each request's authentication, while the request lives (authenticateRequest). */
  readonly #byRequest = new WeakMap<IncomingMessage, Promise<Principal | undefined>>();
  readonly #config: AccessConfig;
  readonly #logger: Logger;
  #tokens = new Map<string, string>(); // sha256(token) -> name
  #jwks: ReturnType<typeof createLocalJWKSet> | undefined;
  readonly #verified = new Map<string, { principal: Principal; untilMs: number }>();
  /** Each principal's requests under way and its rate (no bucket: no rate limit); */
  readonly #load = new Map<string, ClientLoad>();
  /** each anonymous address's, apart (so that many addresses never push a token's bucket out); */
  readonly #anonymous = new Map<string, ClientLoad>();
  /** and all anonymous requests under way. */
  #anonymousInFlight = 0;
  #timer: NodeJS.Timeout | undefined;
  #seen = { tokens: '', jwks: '' };

  constructor(config: AccessConfig, logger: Logger) {
    this.#config = config;
    this.#logger = logger;
  }

  /** Reads the token and key files now, and again every `intervalMs`. */
  async start(intervalMs = 5000): Promise<void> {
    await this.#reload();
    this.#timer = every(
      intervalMs,
      () => this.#reload(),
      (error) => this.#logger.warn({ err: error.message }, 'access files not read'),
    );
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /**
   * The client `req` comes from (its Authorization header), authenticated once per request: the
   * fast path of local hits and the API's routes (app.ts), which take the requests it passes on,
   * share the result, so a refused token is not checked twice.
   */
  authenticateRequest(req: IncomingMessage): Promise<Principal | undefined> {
    let principal = this.#byRequest.get(req);
    if (!principal) {
      principal = this.authenticate(req.headers.authorization);
      this.#byRequest.set(req, principal);
    }
    return principal;
  }

  /** The client an Authorization header names; undefined when it names none validly (a 401). */
  async authenticate(authorization: string | undefined): Promise<Principal | undefined> {
    // Only a request without the header is anonymous: one present but empty is a token not valid.
    if (authorization === undefined) return ANONYMOUS;
    // The scheme in any case, then one or more spaces (RFC 9110, 11.4 and 11.6.2).
    const token = /^Bearer +([A-Za-z0-9._~+/=-]{1,8192})$/i.exec(authorization)?.[1];
    if (!token) return undefined;
    const name = this.#tokens.get(sha256(token));
    if (name !== undefined) return { name: `token:${name}`, groups: ['authenticated'] };
    const sa = this.#config.serviceAccounts;
    if (!sa || !this.#jwks || token.split('.').length !== 3) return undefined;
    const cached = this.#verified.get(token);
    const now = Date.now();
    if (cached && cached.untilMs > now) return cached.principal;
    try {
      const { payload } = await jwtVerify(token, this.#jwks, {
        issuer: sa.issuer,
        audience: sa.audience,
        algorithms: ['RS256', 'ES256'],
        // Projected tokens always expire and say when they were issued; none lives beyond a day here.
        requiredClaims: ['exp', 'iat'],
        maxTokenAge: '24h',
      });
      const m = /^system:serviceaccount:([a-z0-9-.]{1,253}):([a-z0-9-.]{1,253})$/.exec(payload.sub ?? '');
      if (!m) return undefined;
      const principal = {
        name: payload.sub!,
        groups: ['authenticated', 'system:serviceaccounts', `system:serviceaccounts:${m[1]}`],
      };
      if (this.#verified.size >= MAX_CACHED) this.#verified.clear();
      this.#verified.set(token, {
        principal,
        untilMs: Math.min(now + TOKEN_CACHE_MS, (payload.exp ?? 0) * 1000),
      });
      return principal;
    } catch {
      return undefined;
    }
  }

  /**
   * Admits one request of `principal`, from `address`, within its client's limits (concurrency, rate);
   * the function to call when it ends, or undefined when it must wait (a 429). A client is a token or a
   * ServiceAccount wherever it comes from; anonymous requests are a client per address (an IPv6
   * client per /64), so one anonymous program cannot take the slots of every other, and all of them
   * together have at most `maxConcurrentAnonymous` (a program that picks its source addresses, as
   * any local one can among 127/8, is not held to one client's share).
   */
  admit(principal: Principal, address: string | undefined, now = Date.now()): (() => void) | undefined {
    const anonymous = principal.name === ANONYMOUS.name;
    if (anonymous && this.anonymousFull()) return undefined;
    const load = this.#loadOf(anonymous ? this.#anonymous : this.#load, clientName(principal, address), now);
    if (!load || load.inFlight >= this.#config.maxConcurrentPerClient) return undefined;
    if (load.rate && !load.rate.take(now)) return undefined;
    load.inFlight++;
    if (anonymous) this.#anonymousInFlight++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      load.inFlight--;
      if (anonymous) this.#anonymousInFlight--;
    };
  }

  /**
   * The load of `client` in `clients`, made when new. The map keeps at most MAX_CACHED clients: when
   * full, the oldest with nothing in progress goes, looked for among the first EVICTION_TRIES (those
   * with requests in progress are put back at the end); when none of them can go, a new client must
   * wait (undefined).
   */
  #loadOf(clients: Map<string, ClientLoad>, client: string, now: number): ClientLoad | undefined {
    let load = clients.get(client);
    if (load) return load;
    for (let tries = 0; clients.size >= MAX_CACHED && tries < EVICTION_TRIES; tries++) {
      const [oldest, its] = clients.entries().next().value!;
      clients.delete(oldest);
      if (its.inFlight > 0) clients.set(oldest, its);
    }
    if (clients.size >= MAX_CACHED) return undefined;
    const rate = this.#config.requestsPerSecondPerClient;
    load = { inFlight: 0, rate: rate > 0 ? new TokenBucket(rate, now) : undefined };
    clients.set(client, load);
    return load;
  }

  /** Whether all anonymous clients together have as many requests in progress as they may. */
  anonymousFull(): boolean {
    return this.#anonymousInFlight >= this.#config.maxConcurrentAnonymous;
  }

  /** Whether `principal` may `verb` on `name` (a key or a topic). */
  allows(principal: Principal, verb: Verb, name: string): boolean {
    if (principal.name === 'anonymous') {
      const anonymous = this.#config.anonymous;
      if (anonymous === 'all' || (anonymous === 'read' && verb === 'read')) return true;
    }
    const who = new Set([principal.name, ...principal.groups]);
    return this.#config.rules.some(
      (rule) =>
        rule.verbs.includes(verb) &&
        rule.subjects.some((s) => who.has(s)) &&
        rule.prefixes.some((prefix) => name.startsWith(prefix)),
    );
  }

  /**
   * Whether `principal` may see the node's status (and its metrics, unless they are public): any
   * authenticated client, anonymous ones when allowed anything.
   */
  allowsObserving(principal: Principal): boolean {
    return principal.name !== 'anonymous' || this.#config.anonymous !== 'none';
  }

  async #reload(): Promise<void> {
    const { tokensFile, serviceAccounts } = this.#config;
    if (tokensFile) {
      try {
        const text = await readFile(tokensFile, 'utf8');
        if (text !== this.#seen.tokens) {
          this.#seen.tokens = text;
          this.#tokens = await parseTokens(text);
          this.#logger.info({ tokens: this.#tokens.size }, 'client tokens loaded');
        }
      } catch (error) {
        this.#logger.warn({ err: (error as Error).message }, 'client tokens not read; the last ones stay');
      }
    }
    if (serviceAccounts) {
      try {
        const text = await readFile(serviceAccounts.jwksFile, 'utf8');
        if (text !== this.#seen.jwks) {
          this.#seen.jwks = text;
          this.#jwks = createLocalJWKSet(JSON.parse(text) as JSONWebKeySet);
          this.#verified.clear();
          this.#logger.info('cluster token keys loaded');
        }
      } catch (error) {
        this.#logger.warn(
          { err: (error as Error).message },
          'cluster token keys not read; the last ones stay',
        );
      }
    }
  }
}

/**
 * The client whose limits a request counts against: its principal, or `anonymous@<address>`, an
 * IPv4 address as such (also when mapped into IPv6: `::ffff:a.b.c.d`), an IPv6 one by its /64 (a
 * host usually has a whole /64 to pick from).
 */
export function clientName(principal: Principal, address: string | undefined): string {
  if (principal.name !== ANONYMOUS.name) return principal.name;
  return `${ANONYMOUS.name}@${address === undefined ? '?' : addressClient(address)}`;
}

/** `address` as the client it counts as: IPv4 as such, IPv6 by its /64. */
export function addressClient(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIPv4(address) || !isIPv6(address.split('%')[0]!)) return address;
  const [head, tail] = address.split('%')[0]!.toLowerCase().split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // An embedded IPv4 tail (a.b.c.d) is two groups; only the first four groups matter here.
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** The tokens of a tokens file, by the SHA-256 of each token; throws on a file that is not one. */
export async function parseTokens(text: string): Promise<Map<string, string>> {
  const raw = (await parseDocument(text)) as { tokens?: unknown };
  if (!raw || !Array.isArray(raw.tokens)) throw new Error('a tokens file is { tokens: [{ name, token }] }');
  const tokens = new Map<string, string>();
  for (const entry of raw.tokens as unknown[]) {
    const { name, token } = (entry ?? {}) as { name?: unknown; token?: unknown };
    if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name))
      throw new Error('each token has a name of 1-64 of [A-Za-z0-9._-]');
    if (typeof token !== 'string' || token.length < 16 || !/^[A-Za-z0-9._~+/=-]+$/.test(token))
      throw new Error(`token ${name}: at least 16 characters of [A-Za-z0-9._~+/=-]`);
    tokens.set(sha256(token), name);
  }
  return tokens;
}
