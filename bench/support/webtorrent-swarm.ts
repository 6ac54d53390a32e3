/**
 * The `swarm` scenario run with WebTorrent 1.9 instead of EdgeMesh: one seeding client stands for the
 * origin (its upload capped at u_s), N leeching clients each capped at u, every client in its own
 * process (bench/support/webtorrent-client.ts), finding each other through a local HTTP tracker
 * (bittorrent-tracker) on loopback; no DHT, no local discovery, no uTP.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FromClient, PieceStrategy, ToClient } from './webtorrent-client.ts';

const CLIENT = fileURLToPath(new URL('./webtorrent-client.ts', import.meta.url));

/** What is used of bittorrent-tracker 9's Server (it ships no types). */
interface TrackerServer {
  readonly http: { address(): AddressInfo };
  listen(port: number, hostname: string, onlistening: () => void): void;
  close(cb: () => void): void;
  on(event: 'error' | 'warning', listener: (error: Error) => void): void;
}
type TrackerOptions = { http: boolean; udp: boolean; ws: boolean; stats: boolean };
const require = createRequire(import.meta.url);
const { Server } = require('bittorrent-tracker') as { Server: new (opts: TrackerOptions) => TrackerServer };

export interface WebTorrentSwarmOptions {
  nodes: number;
  uploadBytesPerSecond: number;
  /** The seeder's upload cap (the origin's). */
  originBytesPerSecond: number;
  /** The object, as a file the seeder seeds. */
  file: string;
  /** Parent of the leechers' download folders. */
  dir: string;
  expectedSha256: string;
  /** Called with each client process as it starts (e.g. to kill it if the benchmark is interrupted). */
  onStart?: (child: ChildProcess) => void;
  /** Bytes per piece; default WebTorrent's choice for the size (create-torrent's). */
  pieceLength?: number;
  /** The leechers' piece picker. */
  strategy: PieceStrategy;
  /** Fails the run when the last leecher is not done by then. */
  timeoutMs: number;
}

export interface WebTorrentSwarmResult {
  /** Seconds from telling every leecher to add the torrent to the last one having every piece verified. */
  seconds: number;
  /** Bytes each leecher sent to the others. */
  uploads: number[];
  /**
   * Bytes the seeder sent (what the origin sent): every byte that passed its upload cap, protocol
   * messages included (a few KiB; the origin's count has no headers).
   */
  originBytes: number;
  /** Piece bytes the seeder's connections queued (some may not have been sent when all were done). */
  originPieceBytes: number;
  /** Seconds from the start to the seeder's last byte through the cap. */
  originSeconds: number;
  pieceLength: number;
}

/** One client process and its messages, waited for by kind. */
class ClientProcess {
  readonly #waiting = new Map<FromClient['op'], ((m: FromClient) => void)[]>();
  readonly #arrived = new Map<FromClient['op'], FromClient[]>();
  #failure: Error | undefined;
  #stopping = false;
  readonly #onFailure: ((error: Error) => void)[] = [];

  readonly child: ChildProcess;

  constructor(child: ChildProcess) {
    this.child = child;
    child.on('message', (m: FromClient) => {
      if (m.op === 'error') return this.#fail(new Error(`webtorrent client: ${m.message}`));
      const waiter = this.#waiting.get(m.op)?.shift();
      if (waiter) waiter(m);
      else this.#arrived.set(m.op, [...(this.#arrived.get(m.op) ?? []), m]);
    });
    child.once('exit', (code, signal) => {
      if (!this.#stopping) this.#fail(new Error(`webtorrent client exited: ${code ?? signal}`));
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const reject of this.#onFailure.splice(0)) reject(error);
  }

  send(message: ToClient): void {
    this.child.send(message);
  }

  /** The next message of kind `op`; rejects if the client fails or exits first. */
  next<Op extends FromClient['op']>(op: Op): Promise<Extract<FromClient, { op: Op }>> {
    const early = this.#arrived.get(op)?.shift();
    if (early) return Promise.resolve(early as Extract<FromClient, { op: Op }>);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#waiting.set(op, [
        ...(this.#waiting.get(op) ?? []),
        (m) => resolve(m as Extract<FromClient, { op: Op }>),
      ]);
      this.#onFailure.push(reject);
    });
  }

  kill(): void {
    this.#stopping = true;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

async function startClient(uploadBytesPerSecond: number): Promise<ClientProcess> {
  const child = spawn(process.execPath, [CLIENT, String(uploadBytesPerSecond)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const client = new ClientProcess(child);
  await client.next('ready');
  return client;
}

async function startTracker(): Promise<{ announce: string; close(): Promise<void> }> {
  const tracker = new Server({ http: true, udp: false, ws: false, stats: false });
  tracker.on('error', (error) => process.stderr.write(`tracker: ${error.message}\n`));
  tracker.on('warning', () => undefined); // e.g. a client announcing after its torrent is gone
  await new Promise<void>((resolve) => tracker.listen(0, '127.0.0.1', resolve));
  return {
    announce: `http://127.0.0.1:${tracker.http.address().port}/announce`,
    close: () => new Promise((resolve) => tracker.close(resolve)),
  };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * Starts the tracker and N + 1 client processes, has the seeder hash and announce the object, then
 * (the clock starts) tells every leecher at once to add the torrent. Every process and the tracker
 * are gone before it returns or throws.
 */
export async function webTorrentSwarm(o: WebTorrentSwarmOptions): Promise<WebTorrentSwarmResult> {
  const tracker = await startTracker();
  const clients: ClientProcess[] = [];
  try {
    const start = async (cap: number) => {
      const client = await startClient(cap);
      clients.push(client);
      o.onStart?.(client.child);
      return client;
    };
    const seeder = await start(o.originBytesPerSecond);
    const leechers = await Promise.all(Array.from({ length: o.nodes }, () => start(o.uploadBytesPerSecond)));
    seeder.send({ op: 'seed', file: o.file, announce: tracker.announce, pieceLength: o.pieceLength });
    const { torrent, pieceLength } = await seeder.next('seeding');
    const started = performance.now();
    seeder.send({ op: 'go' });
    leechers.forEach((l, i) =>
      l.send({ op: 'add', torrent, dir: join(o.dir, `w${i}`), strategy: o.strategy }),
    );
    const doneAt = await within(
      Promise.all(leechers.map((l) => l.next('done').then(() => performance.now()))),
      o.timeoutMs,
      'the WebTorrent swarm',
    );
    const seconds = (Math.max(...doneAt) - started) / 1000;
    const digests = await Promise.all(leechers.map((l) => l.next('verified')));
    const wrong = digests.filter((d) => d.sha256 !== o.expectedSha256).length;
    if (wrong > 0) throw new Error(`${wrong} WebTorrent leecher(s) had wrong bytes`);
    const stats = await Promise.all(
      [seeder, ...leechers].map((c) => {
        c.send({ op: 'stats' });
        return c.next('stats');
      }),
    );
    return {
      seconds,
      uploads: stats.slice(1).map((s) => s.sentBytes),
      originBytes: stats[0]!.sentBytes,
      originPieceBytes: stats[0]!.pieceBytes,
      originSeconds: stats[0]!.lastSentSeconds,
      pieceLength,
    };
  } finally {
    const running = clients.filter((c) => c.child.exitCode === null && c.child.signalCode === null);
    const exited = running.map((c) => once(c.child, 'exit'));
    for (const client of clients) client.kill();
    await Promise.all(exited);
    await tracker.close();
  }
}
