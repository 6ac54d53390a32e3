import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { sharedTestCa } from './test-ca.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

/** A real agent process, started with flags, its ports read from its "agent ready" log line (so keep log.level at info or below). */
export interface AgentProcess {
  readonly child: ChildProcess;
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly url: string;
  readonly logs: string[];
  status(): Promise<AgentStatus>;
  /** Sends `signal` and waits for the exit; returns the exit code or signal name. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface AgentStatus {
  id: string;
  peers: { known: number; alive: number };
  cache: {
    bytes: number;
    chunkBytes: number;
    indexBytes: number;
    overheadBytes: number;
    entries: number;
    chunks: number;
    indexLoaded: boolean;
  };
  counters: {
    hits: number;
    misses: number;
    bytesServed: Record<string, number>;
    corruptChunks: number;
    badChunksByPeer: Record<string, number>;
    bytesFromPeer: Record<string, number>;
    bytesFromPeers: number;
    bytesToPeers: number;
    /** Memory given back while quiet (agent/src/quiet-compaction.ts). */
    quietCompactions: { count: number; pauseMs: number; freedBytes: number };
  };
  scrub: { state: string; checked?: number; corrupt?: number };
  process: { rssBytes: number };
}

/**
 * Where and what to run: inside network namespace `netns`, bound to `host` (default loopback); the
 * entry point `main` (default the TypeScript sources; e.g. the bundle scripts/build.ts makes) with
 * Node flags `nodeFlags`. Unless `args` set `--access.*`, the agent lets anonymous clients do
 * everything (tests of other things call the API without tokens).
 */
export interface PlaceOptions {
  netns?: string;
  host?: string;
  main?: string;
  nodeFlags?: string[];
  /** A client token the harness sends (status()) when the agent requires one. */
  token?: string;
  /** Environment added to this process's (e.g. LD_PRELOAD of a fake clock). */
  env?: Record<string, string>;
  /** Kills the agent (SIGKILL) when aborted, while it starts too, when the start then fails. */
  signal?: AbortSignal;
}

export async function startAgentProcess(
  args: string[],
  timeoutMs = 20_000,
  place: PlaceOptions = {},
): Promise<AgentProcess> {
  const host = place.host ?? '127.0.0.1';
  // Every agent runs with mTLS: the test process's CA unless the caller set security itself.
  const security = args.some((a) => a.startsWith('--security.')) ? [] : (await sharedTestCa()).flags;
  // Tests of other things use the HTTP API without tokens (a lab's setting); access tests set their own.
  const access = args.some((a) => a.startsWith('--access.')) ? [] : ['--access.anonymous', 'all'];
  const argv = [
    ...(place.nodeFlags ?? []),
    place.main ?? MAIN,
    '--http.host',
    host,
    '--http.port',
    '0',
    '--grpc.host',
    host,
    '--grpc.port',
    '0',
    ...security,
    ...access,
    ...args,
  ];
  const env = place.env ? { ...process.env, ...place.env } : process.env;
  const options = {
    stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'],
    env,
    signal: place.signal,
    killSignal: 'SIGKILL' as const,
  };
  const child = place.netns
    ? spawn('ip', ['netns', 'exec', place.netns, process.execPath, ...argv], options)
    : spawn(process.execPath, argv, options);
  const logs: string[] = [];
  child.stderr.on('data', (d) => logs.push(String(d)));
  const lines = createInterface({ input: child.stdout });
  const ready = new Promise<{ httpPort: number; grpcPort: number }>((resolve, reject) => {
    // Not ready in time: the agent is killed, or it would run on and keep the test process alive.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`agent not ready in ${timeoutMs} ms:\n${logs.join('\n')}`));
    }, timeoutMs);
    lines.on('line', (line) => {
      logs.push(line);
      if (line.includes('"agent ready"')) {
        clearTimeout(timer);
        resolve(JSON.parse(line));
      }
    });
    // A failed spawn, or an abort, before the agent is ready: the start fails.
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before ready:\n${logs.join('\n')}`));
    });
  });
  const { httpPort, grpcPort } = await ready;
  // Once it runs, an abort kills it (a caller's clean-up: nothing to report); any other error, a
  // kill that failed say, is thrown as it was before there was a listener.
  child.removeAllListeners('error');
  child.on('error', (error) => {
    if (error.name !== 'AbortError') throw error;
  });
  const url = `http://${host}:${httpPort}`;
  return {
    child,
    httpPort,
    grpcPort,
    url,
    logs,
    status: async () =>
      (await (
        await fetch(
          `${url}/v1/status`,
          place.token ? { headers: { Authorization: `Bearer ${place.token}` } } : {},
        )
      ).json()) as AgentStatus,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode!;
      child.kill(signal);
      const [code, sig] = (await once(child, 'exit')) as [number | null, string | null];
      return code ?? sig!;
    },
  };
}

/** A GET read to the end or to the point the server cut it off. */
export function getStream(
  url: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      const parts: Buffer[] = [];
      let complete = false;
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        complete = res.complete;
      });
      res.on('close', () =>
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          body: Buffer.concat(parts),
          complete: complete && res.complete,
        }),
      );
    })
      .on('error', reject)
      .end();
  });
}

/** Polls `check` until it returns a value, or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined>,
  timeoutMs = 10_000,
  what = 'condition',
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Waits until `agent` has `count` live peers (members and static peers), or fails after `timeoutMs`. */
export function peersAlive(agent: AgentProcess, count: number, timeoutMs = 20_000): Promise<true> {
  return eventually(
    async () => ((await agent.status()).peers.alive === count ? true : undefined),
    timeoutMs,
    `${count} live peers`,
  );
}
