import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { NatsConnection } from '@nats-io/transport-node';

/** A private nats-server on loopback. */
export interface NatsServer {
  readonly port: number;
  readonly url: string;
  /** Stops it (SIGINT, a clean exit). */
  stop(): Promise<void>;
}

/** Why a real nats-server cannot run here, or undefined when it can. */
export function natsUnavailable(): string | undefined {
  const r = spawnSync('nats-server', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'nats-server is not installed (apt-get install nats-server)';
}

/**
 * Starts nats-server on `place.host` (default 127.0.0.1; inside network namespace `place.netns` if
 * given), on `port` or a free one, with configuration file `place.config` if given (the command
 * line's address and port win over it) and `place.args`, and waits until it takes clients.
 */
export async function startNatsServer(
  port?: number,
  place: { netns?: string; host?: string; config?: string; args?: readonly string[] } = {},
): Promise<NatsServer> {
  // A restart at the same port (clients reconnect to the address they know) may find it still
  // held for a moment, or taken by another process: tried again for up to 5 s before giving up.
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOnce(port, place);
    } catch (error) {
      if (port === undefined || attempt >= 50 || !/address already in use/i.test((error as Error).message))
        throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function startOnce(
  port: number | undefined,
  place: { netns?: string; host?: string; config?: string; args?: readonly string[] },
): Promise<NatsServer> {
  const host = place.host ?? '127.0.0.1';
  const argv = [
    'nats-server',
    ...(place.config ? ['-c', place.config] : []),
    ...['-a', host, '-p', String(port ?? -1)],
    ...(place.args ?? []),
  ];
  const child: ChildProcess = place.netns
    ? spawn('ip', ['netns', 'exec', place.netns, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = createInterface({ input: child.stderr! });
  const log: string[] = [];
  const bound = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`nats-server did not start:\n${log.join('\n')}`)),
      10_000,
    );
    lines.on('line', (line) => {
      log.push(line);
      const match = /Listening for client connections on [^\s]+:(\d+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}:\n${log.join('\n')}`));
    });
  });
  return {
    port: bound,
    url: `nats://${host}:${bound}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      await once(child, 'exit');
    },
  };
}

/**
 * Subscribes to `subject` on `nc` and resolves the server's refusal (a permissions violation), or
 * undefined when it took the subscription: a refusal arrives before the answer to the ping that
 * follows the subscription.
 */
export async function subscriptionRefusal(nc: NatsConnection, subject: string): Promise<Error | undefined> {
  let error: Error | undefined;
  nc.subscribe(subject, {
    callback: (e) => {
      error ??= e ?? undefined;
    },
  });
  await nc.flush();
  await new Promise(setImmediate);
  return error;
}
