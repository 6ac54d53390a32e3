import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Principal } from './access.ts';

/** What a route's handler is given besides the request and the response. */
export interface RouteContext {
  /** The route's parameters, percent-decoded. */
  readonly params: Readonly<Record<string, string>>;
  /** The client as access control authenticated it; undefined without access control, and on a public route. */
  readonly principal: Principal | undefined;
}

export type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  context: RouteContext,
) => void | Promise<void>;

/** One entry of the API's route table (app.ts). */
export interface Route {
  /** The method it answers; GET answers HEAD too. `ANY`: every method (the handler refuses the others). */
  method: 'GET' | 'POST' | 'ANY';
  /** The route as request metrics label it (`http.route`). */
  template: string;
  /** Matches a request path (requestPath); its named groups are the parameters, percent-encoded. */
  pattern: RegExp;
  /** Answered to anyone, before access control. */
  public: boolean;
  handle: Handler;
}

/**
 * Where a request goes: a route, with its parameters percent-decoded; `bad-path` when the first route
 * whose pattern the path matches (whatever its method) has a parameter that is not valid
 * percent-encoding (express refused such a path so, with 400); `none` when no route answers it.
 */
export type Routing =
  { kind: 'route'; route: Route; params: Record<string, string> } | { kind: 'bad-path' } | { kind: 'none' };

/**
 * The path of a request target, as the routes match it: what comes before its query (or fragment),
 * not percent-decoded; for an absolute-form target (`http://host/path`), what follows the authority.
 */
export function requestPath(target: string): string {
  const path = target.split(/[?#]/, 1)[0]!;
  if (path.startsWith('/')) return path;
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/]*/.exec(path)?.[0];
  return authority === undefined ? path : path.slice(authority.length) || '/';
}

/** Where a request for `method` on `path` goes among `routes`, tried in order (see Routing). */
export function findRoute(routes: readonly Route[], method: string, path: string): Routing {
  for (const route of routes) {
    const match = route.pattern.exec(path);
    if (!match) continue;
    const params = decoded(match.groups ?? {});
    if (!params) return { kind: 'bad-path' };
    if (route.method === 'ANY' || route.method === method || (route.method === 'GET' && method === 'HEAD'))
      return { kind: 'route', route, params };
  }
  return { kind: 'none' };
}

/** `params` percent-decoded; undefined when one is not valid percent-encoding. */
function decoded(params: Readonly<Record<string, string>>): Record<string, string> | undefined {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(params)) {
    try {
      result[name] = decodeURIComponent(value);
    } catch {
      return undefined;
    }
  }
  return result;
}
