#!/usr/bin/env node
/**
 * One WebTorrent 1.x client in its own process, driven over IPC by bench/support/webtorrent-swarm.ts
 * (the peer `swarm-vs-peer` compares EdgeMesh with). Argument: its upload cap, bytes/s.
 *
 * Messages in: `seed` (a file, announced to a tracker), `go` (the clock starts), `add` (a .torrent,
 * base64, into a folder; the clock has started), `stats`. Out: `ready`, `seeding` (the .torrent), `done` (every piece SHA-1-verified and stored),
 * `verified` (the SHA-256 of the whole file read back from disk), `stats`, `error`. The process exits
 * when its parent goes (the IPC channel closes).
 *
 * The cap is WebTorrent's own `uploadLimit`: a token bucket (npm speed-limiter) shared by all the
 * client's connections, holding up to one second of tokens, through which every byte the client
 * sends passes on its way to the socket (pieces and protocol messages alike). The bucket fills while
 * the client waits for the benchmark to start; it is emptied at `go` and `add`, so no client starts
 * with a second's worth of saved-up upload.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** What this script uses of WebTorrent 1.9's API (it ships no types). */
interface Wire {
  on(event: 'upload', listener: (bytes: number) => void): void;
}
interface Torrent {
  readonly torrentFile: Buffer;
  readonly pieceLength: number;
  readonly name: string;
  readonly path: string;
  /** Every byte sent to peers (pieces and protocol messages), counted as it leaves the upload cap. */
  readonly uploaded: number;
  on(event: 'wire', listener: (wire: Wire) => void): void;
  on(event: 'upload', listener: (bytes: number) => void): void;
  on(event: 'done', listener: () => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
}
interface Client {
  readonly throttleGroups: { up: { bucket: { content: number; lastDrip: number } } };
  seed(
    input: string,
    opts: { announce: string[]; pieceLength?: number },
    onseed: (torrent: Torrent) => void,
  ): Torrent;
  add(
    torrentFile: Buffer,
    opts: { path: string; strategy: PieceStrategy },
    ontorrent?: (torrent: Torrent) => void,
  ): Torrent;
  on(event: 'error', listener: (error: Error) => void): void;
}
type ClientOptions = {
  dht: false;
  lsd: false;
  utp: false;
  natUpnp: false;
  natPmp: false;
  webSeeds: false;
  uploadLimit: number;
};

/** WebTorrent's piece picker: in order (its default, made for streaming), or rarest first. */
export type PieceStrategy = 'sequential' | 'rarest';
export type ToClient =
  | { op: 'seed'; file: string; announce: string; pieceLength?: number }
  | { op: 'go' }
  | { op: 'add'; torrent: string; dir: string; strategy: PieceStrategy }
  | { op: 'stats' };
export type FromClient =
  | { op: 'ready' }
  | { op: 'seeding'; torrent: string; pieceLength: number }
  | { op: 'done' }
  | { op: 'verified'; sha256: string }
  | { op: 'stats'; pieceBytes: number; sentBytes: number; lastSentSeconds: number }
  | { op: 'error'; message: string };

const require = createRequire(import.meta.url);
const WebTorrent = require('webtorrent') as new (opts: ClientOptions) => Client;

const send = (message: FromClient) => process.send!(message);
const fail = (error: Error) => {
  send({ op: 'error', message: error.stack ?? error.message });
  process.exitCode = 1;
};

const uploadLimit = Number(process.argv[2]);
// No DHT, no local discovery, TCP only: peers find each other through the local tracker alone.
// (1.9.7 has no NAT traversal; natUpnp and natPmp are set for the later versions that do.)
const client = new WebTorrent({
  dht: false,
  lsd: false,
  utp: false,
  natUpnp: false,
  natPmp: false,
  webSeeds: false,
  uploadLimit,
});
client.on('error', fail);
let torrent: Torrent | undefined;
/**
 * Piece bytes handed to the connections (payload only), counted when the wire queues a piece, which
 * is before the upload cap: some may still be queued at the end.
 */
let pieceBytes = 0;
/** When the clock started here (`go` or `add`), and when the last byte passed the upload cap. */
let startedAt = 0;
let lastSentAt = 0;

function start(): void {
  startedAt = performance.now();
  const bucket = client.throttleGroups.up.bucket;
  bucket.content = 0;
  bucket.lastDrip = Date.now();
}

function track(t: Torrent): Torrent {
  t.on('error', fail);
  t.on('wire', (wire) => wire.on('upload', (bytes) => (pieceBytes += bytes)));
  t.on('upload', () => (lastSentAt = performance.now()));
  return t;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

process.on('message', (message: ToClient) => {
  if (message.op === 'seed') {
    torrent = track(
      client.seed(message.file, { announce: [message.announce], pieceLength: message.pieceLength }, (t) => {
        send({ op: 'seeding', torrent: t.torrentFile.toString('base64'), pieceLength: t.pieceLength });
      }),
    );
  } else if (message.op === 'go') {
    start();
  } else if (message.op === 'add') {
    start();
    const t = track(
      client.add(Buffer.from(message.torrent, 'base64'), { path: message.dir, strategy: message.strategy }),
    );
    torrent = t;
    t.on('done', () => {
      send({ op: 'done' });
      sha256(join(t.path, t.name)).then((digest) => send({ op: 'verified', sha256: digest }), fail);
    });
  } else {
    const lastSentSeconds = Math.max(0, lastSentAt - startedAt) / 1000;
    send({ op: 'stats', pieceBytes, sentBytes: torrent?.uploaded ?? 0, lastSentSeconds });
  }
});
process.on('disconnect', () => process.exit());
send({ op: 'ready' });
