import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

/** Debian's wrk (package `wrk`). */
export const WRK = '/usr/bin/wrk';

export interface WrkOptions {
  connections: number;
  threads: number;
  seconds: number;
}

/** What one wrk run measured. */
export interface WrkResult {
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Responses other than 2xx or 3xx. */
  non2xx: number;
  /** Connect, read, write errors and timeouts. */
  socketErrors: number;
}

/** Why wrk cannot run here, or undefined when it can. */
export function wrkUnavailable(): string | undefined {
  return existsSync(WRK) ? undefined : `${WRK} not found (Debian package wrk)`;
}

/** Runs wrk against `url` with keep-alive connections and reads its summary (--latency for p99). */
export async function runWrk(url: string, options: WrkOptions): Promise<WrkResult> {
  const { stdout } = await promisify(execFile)(WRK, [
    '--latency',
    '-c',
    String(options.connections),
    '-t',
    String(options.threads),
    '-d',
    `${options.seconds}s`,
    url,
  ]);
  return parseWrk(stdout);
}

const UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };

function latencyMs(output: string, percent: number): number {
  const m = new RegExp(`^\\s*${percent}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(output);
  if (!m) throw new Error(`wrk printed no ${percent}% latency:\n${output}`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

/** Reads wrk's text summary (its format since 4.0). */
export function parseWrk(output: string): WrkResult {
  const requests = /^\s*(\d+) requests in /m.exec(output);
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  if (!requests || !rps) throw new Error(`not a wrk summary:\n${output}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    requests: Number(requests[1]),
    rps: Number(rps[1]),
    p50Ms: latencyMs(output, 50),
    p99Ms: latencyMs(output, 99),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
  };
}
