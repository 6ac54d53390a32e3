import { type Server, ServerCredentials, status } from '@grpc/grpc-js';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ReusedBuffers } from '../cache/reused-buffers.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import type { Logger } from '../telemetry/logger.ts';
import {
  type BulkRequest,
  BULK_ALPN,
  errorFrame,
  FRAME,
  frameHeader,
  parseRequest,
  RequestReader,
} from './bulk-wire.ts';
import type { ChunkSink } from './peer-server.ts';
import { drained } from './drained.ts';
import { createMutualTlsServer } from './mutual-tls-server.ts';

/** A connection between requests or stalled mid-answer (no byte either way) this long is closed. */
const IDLE_MS = 60_000;
/**
 * Bulk connections one node may have open here at once (a download asks a holder at most twice at
 * a time; a node fetching many objects from one holder at once waits its turn, as for a busy one);
 * gRPC connections, counted apart, likewise (a member keeps one or two).
 */
export const MAX_CONNECTIONS_PER_PEER = 32;

/**
 * Limits on the peer port's connections before they are a node's (docs/security.md, "Abuse limits").
 * Anyone who reaches the port may open a connection, certificate or not; until its handshake ends it
 * is no one's, so it is counted by remote address.
 */
export interface PeerPortLimits {
  /** A TLS handshake not over by then is closed (Node's default is 120 s, and it only reports it). */
  handshakeTimeoutMs: number;
  /** Connections still in their handshake at once; more are closed as they come. */
  maxHandshakes: number;
  /** The same, from one remote address. */
  maxHandshakesPerAddress: number;
  /** Connections open at once, gRPC and bulk, in their handshake or not; more are closed as they come. */
  maxConnections: number;
}

/**
 * A handshake takes a round trip or two and a few ms of CPU: 10 s is ample on any link. A member opens
 * a connection or two at a time (its control connection, a bulk connection per chunk request in
 * flight, a few while it downloads), so 64 handshakes from one address leave room for several members
 * behind one NAT, and 256 over all for a whole mesh restarting at once. One turned away is told so by
 * a reset before its handshake ends, which the client takes as busy (bulk-client.ts): asked again
 * later, not counted against the peer. A member keeps one gRPC connection here
 * (two while an aged one finishes its calls, one more for FetchChunks with mTLS off) and up to 4 idle
 * bulk connections, more while it downloads from this node: 8192 is several per member for a mesh of
 * 1,000 nodes, and far below the descriptors the process may open.
 */
export const PEER_PORT_LIMITS: PeerPortLimits = {
  handshakeTimeoutMs: 10_000,
  maxHandshakes: 256,
  maxHandshakesPerAddress: 64,
  maxConnections: 8192,
};

export interface PeerListener {
  port: number;
  close(): void;
}

export interface BulkServerOptions {
  /** The gRPC server that takes the connections that speak `h2`. */
  grpc: Server;
  host: string;
  port: number;
  node: NodeCredentials;
  logger: Logger;
  /**
   * The node a bulk connection's client certificate names; throws when it is not a node of this
   * mesh (the connection is closed).
   */
  authenticate: (socket: TLSSocket) => string;
  /** Answers one request from `caller` on `sink`; throws a gRPC-style error ({ code, details }). */
  answer: (caller: string, request: BulkRequest, sink: ChunkSink) => Promise<void>;
  /**
   * A connection this old takes no new request (its client opens a new one, with a new handshake:
   * the certificates and trust bundle of now), as gRPC connections are aged.
   */
  maxConnectionAgeMs: number;
  /** Default: PEER_PORT_LIMITS. */
  limits?: Partial<PeerPortLimits>;
  /** Called for each connection whose handshake ended with a verified certificate. */
  handshook?: () => void;
}

/**
 * Listens on the peer port with mutual TLS and hands each connection to the protocol its client
 * chose by ALPN: gRPC (`h2`, through grpc-js's connection injector) or the bulk stream. One port,
 * one certificate check, one firewall rule. The TLS context follows the node's certificate renewals
 * and trust bundle changes (connections already open keep theirs until they age out).
 */
export function listenPeer(opts: BulkServerOptions): Promise<PeerListener> {
  const { node, logger } = opts;
  const limits = { ...PEER_PORT_LIMITS, ...opts.limits };
  const injector = opts.grpc.createConnectionInjector(ServerCredentials.createInsecure());
  const context = () => ({ cert: node.certPem, key: node.keyPem, ca: node.bundlePem });
  /** Connections in their handshake (connectionKey), with their remote address. */
  const handshaking = new Map<string, string>();
  /** How many of them each remote address has. */
  const handshakingFrom = new Map<string, number>();
  const handshakeOver = (key: string) => {
    const address = handshaking.get(key);
    if (address === undefined) return;
    handshaking.delete(key);
    const left = (handshakingFrom.get(address) ?? 1) - 1;
    if (left > 0) handshakingFrom.set(address, left);
    else handshakingFrom.delete(address);
  };
  /** Bulk connections open now: closed with the listener (gRPC's forceShutdown closes its own). */
  const open = new Set<TLSSocket>();
  /** Open bulk connections, and gRPC ones, by the node their certificate names. */
  const perCaller = new CallerCount();
  const grpcPerCaller = new CallerCount();
  let stopped = false;
  // node:tls's own server leaks every client certificate (mutual-tls-server.ts says how).
  const { server, setContext } = createMutualTlsServer({
    context: context(),
    // The server's order decides: a client offering both (bulk-client.ts, to fall back on older peers) gets bulk.
    ALPNProtocols: [BULK_ALPN, 'h2'],
    handshakeTimeoutMs: limits.handshakeTimeoutMs,
    // The TCP connection, before its handshake.
    admit(raw) {
      const address = raw.remoteAddress;
      if (address === undefined) return false; // gone already
      const fromThere = handshakingFrom.get(address) ?? 0;
      if (handshaking.size >= limits.maxHandshakes || fromThere >= limits.maxHandshakesPerAddress) {
        logger.debug(
          { address, handshakes: handshaking.size, fromThere },
          'peer connection refused: too many handshakes',
        );
        return false;
      }
      const key = connectionKey(raw);
      handshaking.set(key, address);
      handshakingFrom.set(address, fromThere + 1);
      raw.once('close', () => handshakeOver(key));
      return true;
    },
    // Its count in `handshaking` goes with the TCP connection's close (admit's listener).
    failed(error) {
      logger.debug({ err: error.message }, 'peer TLS handshake failed');
    },
    secure: (socket) => onSecure(socket),
  });
  server.maxConnections = limits.maxConnections;
  const refresh = () => {
    try {
      setContext(context());
    } catch (error) {
      logger.error({ err: error }, 'the peer port could not take the new certificate');
    }
  };
  node.addIdentityCertificateListener(refresh);
  node.addCaCertificateListener(refresh);
  const onSecure = (socket: TLSSocket) => {
    handshakeOver(connectionKey(socket));
    opts.handshook?.();
    socket.on('error', (error) => logger.debug({ err: error.message }, 'peer connection failed'));
    if (stopped) return socket.destroy(); // its handshake ended after the listener closed
    if (socket.alpnProtocol !== 'h2' && socket.alpnProtocol !== BULK_ALPN) return socket.destroy();
    let caller: string;
    try {
      caller = opts.authenticate(socket); // refused at once; each request or call is checked again
    } catch (error) {
      logger.debug({ err: (error as Error).message, alpn: socket.alpnProtocol }, 'peer connection refused');
      // A gRPC client (a revoked node, another mesh's) is not let hold a connection of the port's.
      if (socket.alpnProtocol === 'h2') return socket.destroy();
      return refuse(socket, errorFrame({ code: status.UNAUTHENTICATED, message: (error as Error).message }));
    }
    if (socket.alpnProtocol === 'h2') {
      // A member normally has one or two: one member may not fill the port's connections.
      const calls = grpcPerCaller.open(caller);
      if (calls >= MAX_CONNECTIONS_PER_PEER) {
        logger.debug({ caller, open: calls }, 'gRPC connection refused: too many of this node');
        return socket.destroy();
      }
      grpcPerCaller.hold(caller, socket);
      return injector.injectConnection(socket);
    }
    // Each connection may pin a chunk in flight: one node gets at most so many at once.
    const mine = perCaller.open(caller);
    if (mine >= MAX_CONNECTIONS_PER_PEER) {
      return refuse(
        socket,
        errorFrame({
          code: status.RESOURCE_EXHAUSTED,
          message: `${caller} has ${mine} bulk connections open here: ask another holder or retry`,
        }),
      );
    }
    perCaller.hold(caller, socket);
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    serveConnection(opts, socket).catch((error: unknown) => {
      logger.debug({ err: error }, 'bulk connection ended with an error');
      socket.destroy();
    });
  };
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({
        port: typeof address === 'object' && address ? address.port : opts.port,
        close() {
          node.removeIdentityCertificateListener(refresh);
          node.removeCaCertificateListener(refresh);
          stopped = true;
          server.close();
          for (const socket of open) socket.destroy();
          injector.destroy();
        },
      });
    });
  });
}

/** A TCP connection's own name on this listener, the same on its TLS socket. */
const connectionKey = (socket: Socket) =>
  `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}`;

/**
 * How long a refused connection may take to get its error frame out and its client to close (a
 * client that reads nothing, or never closes) before it is destroyed anyway.
 */
export const REFUSED_LINGER_MS = 5_000;

/**
 * Sends a refused connection's error frame and closes it: destroyed as soon as the frame and the
 * end of the stream are written, or after REFUSED_LINGER_MS. An end alone waits for the client's
 * own: a client that never closes (nor reads) would keep the connection, uncounted, for ever.
 */
function refuse(socket: TLSSocket, frame: Buffer): void {
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // What the client sends meanwhile is dropped (left unread, it would turn the close into a reset).
  socket.resume();
  // Closed once the client, having read the frame, closes its side (or at the timer): destroyed as
  // soon as the frame is out, a request the client wrote meanwhile would arrive at a closed socket,
  // and the reset it draws could reach the client before the frame, which it would then never read.
  socket.end(frame);
}

/**
 * Buffers one answer reads chunks from disk into (ChunkSink.spare), at most: each is given back once
 * the chunk sent in it is written (the socket's write callback: TLS has encrypted it by then and
 * keeps no reference).
 */
const SEND_BUFFERS = 2;

/**
 * Answers requests on one bulk connection, one after another, until the client goes. Each request
 * is authenticated anew (the certificate's node, not revoked since: a revocation applies to the next
 * request, as to the next gRPC call).
 */
async function serveConnection(opts: BulkServerOptions, socket: TLSSocket): Promise<void> {
  const openedAt = Date.now();
  socket.setNoDelay(true);
  socket.setTimeout(IDLE_MS, () => socket.destroy());
  const reader = new RequestReader(socket);
  let closed = false;
  socket.once('close', () => {
    closed = true;
  });
  while (!closed && Date.now() - openedAt < opts.maxConnectionAgeMs) {
    let body: Buffer | undefined;
    try {
      body = await reader.next();
    } catch (error) {
      socket.end(errorFrame({ code: status.INVALID_ARGUMENT, message: (error as Error).message }));
      return;
    }
    if (!body) break;
    let caller: string;
    try {
      caller = opts.authenticate(socket);
    } catch (error) {
      opts.logger.debug({ err: (error as Error).message }, 'bulk request refused');
      socket.end(errorFrame({ code: status.UNAUTHENTICATED, message: (error as Error).message }));
      return;
    }
    let request: BulkRequest;
    try {
      request = parseRequest(body);
    } catch (error) {
      socket.end(errorFrame({ code: status.INVALID_ARGUMENT, message: (error as Error).message }));
      return;
    }
    const spares = new ReusedBuffers(SEND_BUFFERS);
    const sink: ChunkSink = {
      get cancelled() {
        return closed;
      },
      heartbeat: (index) => socket.write(frameHeader(FRAME.WAIT, index, 0)),
      send: (index, data) => {
        socket.cork();
        socket.write(frameHeader(FRAME.DATA, index, data.length));
        const more = socket.write(data, () => spares.letGo(data));
        socket.uncork();
        return more ? Promise.resolve() : drained(socket);
      },
      end: () => socket.write(frameHeader(FRAME.END, 0, 0)),
      spare: (size) => spares.take(size),
    };
    try {
      await opts.answer(caller, request, sink);
    } catch (error) {
      const e = error as { code?: unknown; details?: string; message?: string };
      if (typeof e.code !== 'number') opts.logger.debug({ err: error }, 'bulk request failed');
      if (!closed)
        socket.write(
          errorFrame({
            code: typeof e.code === 'number' ? e.code : status.INTERNAL,
            message: typeof e.code === 'number' ? (e.details ?? e.message ?? '') : 'internal error',
          }),
        );
    }
  }
  // Nothing more is read: what the client still sends is dropped, and its end closes the socket.
  reader.close();
  socket.resume();
  socket.end();
}

/** Connections open by caller: one counted from hold() until its socket closes. */
class CallerCount {
  readonly #open = new Map<string, number>();

  open(caller: string): number {
    return this.#open.get(caller) ?? 0;
  }

  hold(caller: string, socket: TLSSocket): void {
    this.#open.set(caller, this.open(caller) + 1);
    socket.once('close', () => {
      const left = this.open(caller) - 1;
      if (left > 0) this.#open.set(caller, left);
      else this.#open.delete(caller);
    });
  }
}
