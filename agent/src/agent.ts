import { once } from 'node:events';
import type { ProtocolRange } from '@edgemesh/contracts';
import {
  createServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { ObjectStore } from './cache/object-store.ts';
import type { AgentConfig } from './config/schema.ts';
import { PeerFetcher } from './fetch/peer-fetcher.ts';
import { Swarm } from './fetch/swarm.ts';
import { watchPolicy } from './fetch/watch.ts';
import { UploadLimiter } from './transport/upload-limiter.ts';
import { MIN_CHUNK_SIZE } from './cache/chunking.ts';
import { createApp } from './http/app.ts';
import { checkExpectationListener, clientErrorListener } from './http/client-errors.ts';
import { continueWhenRead } from './http/continue.ts';
import { hasBody, inTurn } from './http/in-turn.ts';
import { bytesMoved, MAX_RATE_WINDOW_MS, MinDataRate } from './http/min-rate.ts';
import { withLocalHits } from './http/local-hits.ts';
import { AccessControl } from './http/access.ts';
import { isKey } from './keys.ts';
import { Overlay } from './overlay/overlay.ts';
import { Replicator } from './overlay/replicator.ts';
import { getViaOrigin, OriginFetcher } from './fetch/origin.ts';
import { ObjectNotFoundError, ObjectPurgedError } from './cache/errors.ts';
import { Tombstones } from './cache/tombstones.ts';
import { Purger } from './overlay/purger.ts';
import { memoryReducerOff } from './node-flags.ts';
import { compactWhenQuiet } from './quiet-compaction.ts';
import { Inbox } from './exchange/inbox.ts';
import { Counters } from './telemetry/counters.ts';
import { createLogger, type Logger } from './telemetry/logger.ts';
import { type BuildInfo, otlpMetricReaderFactory } from '@edgemesh/telemetry';
import { AgentMetrics } from './telemetry/metrics.ts';
import { AGENT_VERSION, agentResource } from './telemetry/resource.ts';
import { startTracing } from './telemetry/tracing.ts';
import { type Clock, systemClock } from './time/clock.ts';
import { startLife } from './overlay/life.ts';
import { createPeerServer, listenPeerServer, type PeerServerOptions } from './transport/peer-server.ts';
import { FileCaIssuer, fileTrust } from './security/file-ca.ts';
import { OperatorIssuer } from './security/operator-issuer.ts';
import { NodeCredentials } from './security/node-credentials.ts';
import { unauthenticated } from './security/grpc-credentials.ts';
import { Revocations } from './security/revocations.ts';
import { RevocationList } from './security/revocation-list.ts';
import { NodeSigner } from './security/node-signer.ts';
import type { Manifest, NodeSignature } from './cache/manifest.ts';
import { every } from './time/every.ts';

export interface AgentDeps {
  logger?: Logger;
  clock?: Clock;
  /** Which build this is (edgemesh_build_info); default: this package's version, revision unknown. */
  build?: BuildInfo;
  /**
   * The protocol versions to speak instead of this build's (PROTOCOL). For tests of version skew
   * only (main.ts takes it from a test-only environment variable); never set in production.
   */
  protocol?: ProtocolRange | undefined;
}

type ScrubState =
  | { state: 'off' }
  | { state: 'running' }
  | { state: 'done'; checked: number; corrupt: number }
  | { state: 'failed'; error: string };

/** A running agent: its bound ports and a way to stop it. */
export interface Agent {
  readonly httpPort: number;
  readonly grpcPort: number;
  readonly store: ObjectStore;
  readonly counters: Counters;
  status(): ReturnType<typeof buildStatus>;
  /** Stops serving and waits for in-flight file operations. */
  close(): Promise<void>;
}

function buildStatus(
  config: AgentConfig,
  store: ObjectStore,
  overlay: Overlay,
  counters: Counters,
  scrub: ScrubState,
  tombstones: Tombstones,
) {
  const { static: statics, members, ...mesh } = overlay.status();
  const memory = process.memoryUsage();
  const liveMembers = members.filter((m) => m.state !== 'dead');
  return {
    id: config.nodeId,
    zone: config.zone,
    region: config.region,
    role: 'peer' as const,
    peers: {
      known: statics.length + liveMembers.length,
      alive: statics.filter((p) => p.alive).length + members.filter((m) => m.state === 'alive').length,
      list: statics,
    },
    mesh: { ...mesh, members },
    cache: store.stats(),
    counters: counters.snapshot(),
    scrub,
    tombstones: tombstones.size,
    process: {
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      heapTotalBytes: memory.heapTotal,
      /** Memory V8 tracks outside its heap; most of it is Buffers (arrayBuffersBytes): chunks, frames. */
      externalBytes: memory.external,
      arrayBuffersBytes: memory.arrayBuffers,
      uptimeSeconds: Math.round(process.uptime()),
    },
  };
}

/** Opens the store, starts the gRPC data plane and the HTTP API, and returns when both are bound. */
export async function startAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<Agent> {
  const logger = deps.logger ?? createLogger({ level: config.log.level, nodeId: config.nodeId });
  const clock = deps.clock ?? systemClock;
  const counters = new Counters();
  const build = deps.build ?? { version: AGENT_VERSION, revision: 'unknown' };
  const resource = await agentResource(config, build);
  const tracing = await startTracing(config.telemetry.otlpEndpoint, resource);
  const revocations = new Revocations();
  const credentials = await startNodeCredentials(config, { logger, clock, revocations });
  const overlay = new Overlay({
    config,
    logger,
    clock,
    counters,
    credentials,
    revocations,
    protocol: deps.protocol,
  });
  // Revocations from the operator (signed by the mesh CA): from its file, and within seconds over NATS.
  const revocationList =
    credentials &&
    new RevocationList({
      credentials,
      revocations,
      mesh: config.mesh,
      logger,
      now: () => clock.now(),
      file: config.security.revocationsFile,
      stateFile: join(config.store.dir, 'revocations.json'),
    });
  await revocationList?.start();
  revocations.onRevoked((nodes) => overlay.evict(nodes));
  // Whom other nodes distrust, from their signed reports (only when events are signed: unsigned
  // hearsay would let anyone on NATS exile a node).
  if (credentials)
    overlay.control.onEvent((event) => {
      if (event.type === 'node.stats')
        overlay.reputation.heard(event.from, event.body.distrusted ?? [], event.sentAtMs);
    });
  overlay.control.onEvent((event) => {
    if (event.type !== 'mesh.revocations' || !revocationList) return;
    const outcome = revocationList.apply(event.body, 'control plane');
    if (outcome === 'bad-signature' || outcome === 'future')
      Counters.bump(counters.controlDropped, `revocations-${outcome}`);
  });
  // With mTLS, every version this node makes is signed, and every manifest a peer sends must be.
  const signer = credentials && new NodeSigner(credentials, { revocations, now: () => clock.now() });
  const verify =
    signer &&
    ((manifest: Manifest) => {
      try {
        signer.verify(manifest);
      } catch (error) {
        Counters.bump(counters.peersRefused, 'manifest');
        throw error;
      }
    });
  const tombstones = await Tombstones.open(config.store.dir, clock);
  /** What the replicator remembers of an object goes with it (set once the replicator exists). */
  let forgetReplicas: (key: string) => void = () => undefined;
  /** Keys written here whose owners do not all have them yet (set once the replicator exists). */
  let owedToOwners: (key: string) => boolean = () => false;
  const storeOpening = performance.now();
  const store = await ObjectStore.open({
    dir: config.store.dir,
    maxBytes: config.store.maxBytes,
    memoryBytes: config.store.memoryBytes,
    maxObjectBytes: config.store.maxObjectBytes,
    ...(config.store.defaultTtlSeconds > 0 ? { defaultTtlMs: config.store.defaultTtlSeconds * 1000 } : {}),
    fsync: config.store.fsync,
    clock,
    isKey,
    onRemoved: (key, reason) => {
      Counters.bump(counters.removals, reason);
      forgetReplicas(key);
      // Owners stop naming this node as a holder. A purge reaches every owner itself; a newer
      // version's Hold replaces the record; owners drop an expired version's records themselves.
      if (reason === 'evicted' || reason === 'corrupt') overlay.announceRelease(key);
    },
    onStored: (manifest) => overlay.announceHolding(manifest),
    ...(signer ? { sign: (manifest: Omit<Manifest, 'signature'>) => signer.sign(manifest) } : {}),
    purgedAt: (key) => tombstones.purgedAt(key),
    onCorruptChunk: (digest) => {
      counters.corruptChunks++;
      logger.error({ chunk: digest }, 'chunk damaged on disk: dropped with the objects that used it');
    },
    onBackgroundError: (error) => logger.error({ err: error }, 'background store operation failed'),
    // Owned copies, and copies written here that some owner still lacks (they are the source the
    // owners pull from), are evicted last.
    isOwned: (key) => overlay.placementOf(key).self || owedToOwners(key),
    onDiskFull: (evicted) =>
      logger.warn({ evicted }, 'the disk is full below the store limit: evicted to make room'),
  });
  // The agent serves while the index loads (a key not loaded yet is read from the database).
  store.loaded().then(
    () =>
      logger.info(
        { store: store.stats(), ms: Math.round(performance.now() - storeOpening) },
        'store index loaded',
      ),
    (error: unknown) => logger.error({ err: error }, 'store index did not load'), // loaded() never rejects
  );
  const swarm = new Swarm();
  const uploadLimiter = new UploadLimiter(config.transfer.uploadBytesPerSecond, MIN_CHUNK_SIZE);
  const fetcher = new PeerFetcher({
    store,
    purgedAt: (key) => tombstones.purgedAt(key),
    swarm,
    self: () => overlay.selfHolder(),
    hopClassOf: (peer) => overlay.hopClassOf(peer),
    placeOf: (peer) => overlay.placeOf(peer),
    // metrics is made further down; fetches start only once the agent is up.
    onBatch: (hop, seconds) => metrics.recordPeerFetch(hop, seconds),
    peers: () => overlay.peers(),
    untilJoined: () => overlay.untilJoined(),
    reviveNow: () => overlay.reviveNow(),
    owners: (key) => overlay.owners(key),
    resolve: (holder) => overlay.resolve(holder),
    rank: (holders) => overlay.rank(holders),
    counters,
    logger,
    timeoutMs: config.transfer.peerTimeoutMs,
    onOutcome: (peer, outcome) => overlay.reputation.record(peer.id, outcome),
    ...(verify ? { verify } : {}),
    ...(signer
      ? {
          verifyPurge: (key: string, purgedAtMs: number, signature: NodeSignature | undefined) => {
            try {
              signer.verifyPurge(key, purgedAtMs, signature);
            } catch (error) {
              Counters.bump(counters.peersRefused, 'purge');
              throw error;
            }
          },
        }
      : {}),
  });
  const origin = new OriginFetcher({
    rules: config.origins,
    store,
    counters,
    logger,
    timeoutMs: config.replication.timeoutMs,
    swarm,
    onFetch: (outcome, seconds) => metrics.recordOriginFetch(outcome, seconds),
  });
  const purger = new Purger({
    store,
    tombstones,
    control: overlay.control,
    mesh: config.mesh,
    nodeId: config.nodeId,
    clock,
    logger,
    owners: (key) => overlay.owners(key),
    forget: (key) => {
      fetcher.discard(key);
      overlay.index.forget(key);
    },
    timeoutMs: config.transfer.peerTimeoutMs,
    onRefused: (reason) => Counters.bump(counters.controlDropped, reason),
    ...(signer ? { signer } : {}),
  });
  const replicator = new Replicator({
    onPurged: (key, purgedAtMs, signature) =>
      purger.purgeHere(key, purgedAtMs, signature).catch((error: unknown) => {
        if ((error as Error).name === 'UnsignedPurgeError') Counters.bump(counters.peersRefused, 'purge');
        throw error;
      }),
    store,
    placementOf: (key) => overlay.placementOf(key),
    standInsOf: (key) => overlay.standInsOf(key),
    isAlive: (peer) => overlay.isAlive(peer),
    untilJoined: () => overlay.untilJoined(),
    self: () => overlay.selfHolder(),
    logger,
    writeCopies: config.replication.writeCopies,
    timeoutMs: config.replication.timeoutMs,
    // Stand-ins evicted last: at most a quarter of the store (the rest of them kept as cached copies).
    standInBytes: Math.floor(config.store.maxBytes / 4),
  });
  forgetReplicas = (key) => replicator.forgetKey(key);
  owedToOwners = (key) => replicator.owesCopies(key);
  // Purges travel on the control plane: once it is back, cached copies are checked for missed ones.
  overlay.control.onConnect(() => replicator.recheckPurges());
  overlay.onMembershipChange(() => replicator.membershipChanged());
  // A member that restarted may have lost what it held: its copies are made again (asking one that
  // still has them costs a round trip).
  overlay.onMemberRestart((_nodeId, address) => {
    replicator.forget(address);
    replicator.schedule();
  });
  // One forgotten (dead past the retention) may come back at that address with an empty disk, or
  // another node may take the address; either is learned as a newcomer, not as a restart.
  overlay.onMemberForgotten((_nodeId, address) => replicator.forget(address));
  const inbox = new Inbox();
  const peerOptions: PeerServerOptions = {
    store,
    counters,
    node: { id: config.nodeId, zone: config.zone, region: config.region },
    logger,
    flowControlWindow: config.grpc.flowControlWindow,
    ...(deps.protocol ? { protocol: deps.protocol } : {}),
    ...(credentials
      ? {
          authenticate: (call) => credentials.identify(call.getAuthContext().sslPeerCertificate),
          refuse: (error) => {
            Counters.bump(counters.peersRefused, 'unauthenticated');
            return unauthenticated(error);
          },
        }
      : {}),
    ...(verify ? { verifyManifest: verify } : {}),
    coordinate: () => overlay.vivaldi.coordinate,
    incarnation: () => overlay.incarnation,
    incarnationOf: (nodeId) => overlay.incarnationOf(nodeId),
    probe: (target) => overlay.probeFor(target),
    index: {
      lookup: (key) => overlay.index.lookup(key),
      record: (m, h) => overlay.recordHolder(m, h),
      release: (key, nodeId) => overlay.index.release(key, nodeId),
    },
    fetchOrigin: async (key) => {
      if (!origin.urlFor(key)) return undefined;
      try {
        const begun = await origin.begin(key);
        return 'manifest' in begun ? begun : { head: begun.progress.head };
      } catch (error) {
        if (error instanceof ObjectNotFoundError) return undefined;
        throw error;
      }
    },
    watch: watchPolicy({
      lookup: (key) => store.lookup(key),
      swarm,
      trusted: (holder) => overlay.resolve(holder) !== undefined,
    }),
    earlyChunk: (digest) => swarm.chunk(digest),
    upload: { limiter: uploadLimiter, groupOf: (nodeId) => overlay.groupOf(nodeId) },
    replicate: async (key, root, source, caller) => {
      const transport = overlay.resolve(source);
      if (!transport) return 'unknown-source';
      try {
        await fetcher.copy(key, root, [transport]);
        // Asked to keep a copy of a key this node does not own: a stand-in for an owner that could
        // not take it. The copy is owed to the owners (evicted last, handed on by repair), within
        // the stand-ins' share of the store, claimed by every caller that asked for it; the caller
        // that claims the most gives up its oldest claims first.
        if (
          !overlay.placementOf(key).self &&
          !replicator.keepAsStandIn(key, store.lookup(key)?.size ?? 0, caller)
        )
          logger.debug(
            { key },
            'stand-in copy kept as a cached one: stand-ins fill their share of the store',
          );
      } catch (error) {
        if (error instanceof ObjectPurgedError)
          return { purgedAtMs: error.purgedAtMs, signature: tombstones.signatureOf(key) };
        throw error;
      }
      return 'stored';
    },
    purgedAt: (key) => tombstones.purgedAt(key),
    purgeSignature: (key) => tombstones.signatureOf(key),
    purge: (key, purgedAtMs, signature, caller) => purger.purgeHere(key, purgedAtMs, signature, caller),
    deliver: (message) => inbox.deliver({ ...message, receivedAtMs: clock.now() }),
  };
  const peerListener = await listenPeerServer(
    createPeerServer(peerOptions),
    peerOptions,
    config.grpc.host,
    config.grpc.port,
    credentials,
  );
  const grpcPort = peerListener.port;

  let scrub: ScrubState = { state: 'off' };
  const metrics = new AgentMetrics({
    counters,
    store: () => store.stats(),
    peersKnown: () => overlay.peers().length,
    members: () => {
      const byState: Record<string, number> = { alive: 0, suspect: 0, dead: 0 };
      for (const m of overlay.status().members) byState[m.state] = (byState[m.state] ?? 0) + 1;
      return byState;
    },
    controlState: () => overlay.control.state(),
    repairBacklog: () => replicator.backlog,
    localHealth: () => overlay.localHealth,
    distrustedPeers: () => overlay.reputation.distrusted(),
    resource,
    build,
    readers: config.telemetry.otlpEndpoint
      ? [await otlpMetricReaderFactory(config.telemetry.otlpEndpoint)]
      : [],
  });
  const access = new AccessControl(config.access, logger);
  await access.start();
  let ready = false;
  const app = createApp({
    access,
    publicMetrics: config.access.publicMetrics,
    store,
    fetcher,
    replicate: (manifest) => replicator.afterPut(manifest),
    purge: (key, by) => purger.purgeEverywhere(key, by),
    exchange: {
      inbox,
      nodeId: config.nodeId,
      targets: (target) => overlay.targets(target),
      untilJoined: () => overlay.untilJoined(),
      reviveNow: (target) => overlay.reviveNow(target),
      timeoutMs: config.transfer.peerTimeoutMs,
      onCutOff: () => Counters.bump(counters.clientsRefused, 'slow-receiver'),
    },
    origin: (key) =>
      getViaOrigin(key, {
        origin,
        ownerOrder: (k) => overlay.ownerOrder(k),
        logger,
        timeoutMs: config.replication.timeoutMs,
        ...(verify ? { verify } : {}),
      }),
    writeCopies: config.replication.writeCopies,
    counters,
    metrics,
    logger,
    status: () => buildStatus(config, store, overlay, counters, scrub, tombstones),
    ready: () => ready,
  });
  // Headers must come within 10 s (a client that trickles them holds nothing for long); a body or a
  // response may take as long as it keeps moving (a large PUT or GET), and a connection on which
  // nothing moves for http.idleTimeoutMs is closed (an exchange stream, which waits for messages, is
  // exempt: http/exchange.ts).
  const http: HttpServer = createServer({
    requestTimeout: 0,
    headersTimeout: 10_000,
    keepAliveTimeout: Math.min(5_000, config.http.idleTimeoutMs),
  });
  // What node:http's parser refuses (400, 408, 413, 431) and an Expect other than 100-continue (417)
  // are answered with the API's JSON errors, not Node's bare status lines, and counted.
  http.on('clientError', clientErrorListener({ counters, logger }));
  http.on('checkExpectation', checkExpectationListener({ counters }));
  // A request with Expect: 100-continue is a request (every 'request' listener below) that gets its
  // 100 Continue only when its body is read: one refused first never has its body sent.
  http.on(
    'checkContinue',
    continueWhenRead((req, res) => http.emit('request', req, res)),
  );
  /**
   * Connections with a request in progress, and its answer: only those are counted when cut (not an
   * idle keep-alive). A pipelined request's turn comes as the answer before it finishes, before
   * that answer's close.
   */
  const busy = new Map<Socket, ServerResponse>();
  // A connection cut mid-request for its client's sake is reset, not closed: a close leaves what the
  // kernel still buffers for it to be sent on (megabytes of an answer, at the pace of the client that
  // stalled it), a reset drops it, and tells the client. One idle between requests (node:http's
  // keep-alive timeout) is closed: its last answer, all handed to the kernel, may still be on its way
  // to a client that reads it slowly, and a reset would cut its end off.
  http.setTimeout(config.http.idleTimeoutMs, (socket: Socket) => {
    if (busy.has(socket)) {
      Counters.bump(counters.clientsRefused, 'idle');
      return void socket.resetAndDestroy();
    }
    // Ended once its last answer has gone (the kernel's buffers, read by a slow client); reset if it
    // has not gone within the grace, or a client that never reads would keep them for ever.
    socket.end();
    const grace = setTimeout(() => socket.resetAndDestroy(), Math.max(config.http.idleTimeoutMs, 30_000));
    grace.unref();
    socket.once('close', () => clearTimeout(grace));
  });
  // Moving, but too slowly: a body or an answer trickled a byte at a time within the idle timeout.
  let slowClients: NodeJS.Timeout | undefined;
  const rateWindowMs = Math.min(MAX_RATE_WINDOW_MS, config.http.idleTimeoutMs);
  if (config.http.minBytesPerSecond > 0) {
    const minRate = new MinDataRate({
      bytesPerSecond: config.http.minBytesPerSecond,
      windowMs: rateWindowMs,
    });
    slowClients = every(
      rateWindowMs / 4,
      () => {
        for (const socket of minRate.check(busy, performance.now())) {
          Counters.bump(counters.clientsRefused, 'slow');
          socket.resetAndDestroy();
        }
      },
      (error) => logger.error({ err: error.message }, 'slow clients not checked'),
    );
  }
  // The idle clock runs only while it is the client's turn: while its body comes in, and once the
  // answer starts. In between the server works (an origin fetch, waiting for replicas) and the
  // client, waiting for it, is not idle.
  const idleClock = (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    busy.set(socket, res);
    res.once('close', () => busy.get(socket) === res && busy.delete(socket));
    const serverTurn = () => socket.setTimeout(0);
    if (hasBody(req)) req.once('end', serverTurn);
    else serverTurn();
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
    res.writeHead = (...args: unknown[]) => {
      socket.setTimeout(config.http.idleTimeoutMs);
      return writeHead(...args);
    };
    // Answered before its body came in whole (an early error): node:http reads and throws away up to
    // DISCARDED_BODY_BYTES more to keep the connection, and each byte would put off its timeouts, so
    // a body trickled after its answer held the connection (no request, no rate) for as long as the
    // client liked. What is left is held to the minimum rate, window by window.
    if (config.http.minBytesPerSecond > 0 && hasBody(req))
      res.once('finish', () => {
        if (req.complete || socket.destroyed) return;
        let read = socket.bytesRead;
        const check = () => {
          if (req.complete || socket.destroyed) return;
          if (socket.bytesRead - read < (config.http.minBytesPerSecond * rateWindowMs) / 1000) {
            Counters.bump(counters.clientsRefused, 'slow');
            socket.resetAndDestroy();
            return;
          }
          read = socket.bytesRead;
          cut = setTimeout(check, rateWindowMs).unref();
        };
        let cut = setTimeout(check, rateWindowMs).unref();
        // The request's close: once its body is all in, or its connection gone (a listener on the
        // socket would stay for every such request of a keep-alive connection).
        req.once('close', () => clearTimeout(cut));
      });
  };
  /** Requests for objects and exchange topics (not probes, status or metrics): quiet-compaction.ts's work. */
  let dataRequests = 0;
  const api = config.http.fastPath ? withLocalHits({ store, counters, metrics, logger, access }, app) : app;
  // A request pipelined behind another's answer reaches the idle clock and the API only in its turn
  // (http/in-turn.ts); the idle clock sees each request before any answer starts (the fast path may
  // answer at once). A 429 inTurn writes for a request refused while waiting never reaches it (a cut
  // while one is stuck is not counted as `idle`: they are a few hundred bytes).
  http.on(
    'request',
    inTurn(
      (req, res) => {
        if (/^(https?:\/\/[^/]*)?\/v1\/(objects|exchange)\//i.test(req.url ?? '')) dataRequests++;
        idleClock(req, res);
        api(req, res);
      },
      () => Counters.bump(counters.clientsRefused, 'pipelined'),
    ),
  );
  http.listen(config.http.port, config.http.host);
  await once(http, 'listening');
  const httpPort = (http.address() as AddressInfo).port;

  overlay.start(grpcPort, await startLife(config.store.dir, clock.now(), logger));
  /** Bytes the connections with a request in progress have moved: a slow upload or download moves. */
  const movedByRequests = () => {
    let bytes = 0;
    for (const socket of busy.keys()) bytes += bytesMoved(socket);
    return bytes;
  };
  const stopCompacting = compactWhenQuiet({
    periodMs: 20_000,
    quietPeriods: 3,
    maxUtilization: 0.02,
    // No client's data request, no byte of an object or message in or out (a long download moves its
    // bytes as it goes): probes, pings and scrapes only.
    workDone: () =>
      dataRequests +
      movedByRequests() +
      inbox.delivered +
      counters.bytesServed.local +
      counters.bytesServed.peer +
      counters.bytesServed.origin +
      counters.bytesToPeers +
      counters.bytesFromPeers +
      counters.bytesStored,
    minGrowthBytes: 2 * 2 ** 20,
    minIntervalMs: 60_000,
    // The pause grows with the live heap (about 1.5 ms a MiB): none past 64 MiB in use, where it
    // would stop the agent long enough for its peers to suspect it (a large store's index).
    maxHeapBytes: 64 * 2 ** 20,
    // And once now, start-up over (before /readyz turns 200): what it left goes back
    // (docs/benchmarks.md, load after quiet). Not while a large store's index still loads: its heap
    // grows, and the pause with it. Only with V8's memory reducer off (the image's flags,
    // node-flags.ts): with it on, the compaction wakes it, and small hits then pay in every lull.
    atStart: store.stats().indexLoaded && memoryReducerOff(process.execArgv),
    onCompacted: ({ rssBefore, rssAfter, ms }) => {
      counters.quietCompactions.count++;
      counters.quietCompactions.pauseMs += Math.round(ms);
      counters.quietCompactions.freedBytes += Math.max(0, rssBefore - rssAfter);
      logger.debug({ rssBefore, rssAfter, ms: Math.round(ms) }, 'memory given back while quiet');
    },
    onError: (error) => logger.error({ err: error.message }, 'memory not given back'),
  });
  const sweep = every(
    config.store.sweepIntervalSeconds * 1000,
    () => store.sweepExpired(),
    (error) => logger.error({ err: error.message }, 'expired objects not swept'),
  );
  // Running totals for the operator's mesh figures (hit ratio, bytes from peers and origins).
  const startedAtMs = clock.now();
  const stats = every(
    config.controlPlane.statsIntervalMs,
    () => {
      overlay.control.publish({
        v: 1,
        type: 'node.stats',
        mesh: config.mesh,
        from: config.nodeId,
        sentAtMs: clock.now(),
        body: {
          hits: counters.hits,
          misses: counters.misses,
          bytesFromPeers: counters.bytesFromPeers,
          bytesFromOrigin: counters.bytesFromOrigin,
          startedAtMs,
          distrustedPeers: overlay.reputation.distrusted(),
          distrusted: overlay.reputation.ownDistrusted(),
        },
      });
    },
    (error) => logger.warn({ err: error.message }, 'node stats not published'),
  );
  // Re-hashes every chunk on disk, one at a time, in the background (never two at once).
  const runScrub = () => {
    if (scrub.state === 'running') return;
    scrub = { state: 'running' };
    store.scrub().then(
      (result) => {
        scrub = { state: 'done', ...result };
        logger.info(result, 'scrub finished');
      },
      (error: Error) => {
        scrub = { state: 'failed', error: error.message };
        logger.error({ err: error }, 'scrub failed');
      },
    );
  };
  if (config.store.scrubOnStart) runScrub();
  // Chunks sent to peers are not hashed at each send (ObjectStore.chunkToSend): the periodic scrub
  // finds what rotted since. (At most 500 hours: a timer longer than 2^31 ms fires at once.)
  const scrubs =
    config.store.scrubIntervalHours > 0
      ? every(config.store.scrubIntervalHours * 3600_000, runScrub, (error) =>
          logger.error({ err: error.message }, 'scrub not started'),
        )
      : undefined;
  ready = true;
  logger.info(
    {
      httpPort,
      grpcPort,
      mesh: config.mesh,
      mtls: credentials !== undefined,
      peers: config.peers.length,
      controlPlane: config.controlPlane.servers,
      store: store.stats(),
    },
    'agent ready',
  );

  return {
    httpPort,
    grpcPort,
    store,
    counters,
    status: () => buildStatus(config, store, overlay, counters, scrub, tombstones),
    async close() {
      ready = false;
      clearInterval(sweep);
      clearInterval(slowClients);
      stopCompacting();
      clearInterval(stats);
      clearInterval(scrubs);
      replicator.close();
      uploadLimiter.close();
      await overlay.close();
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
      peerListener.close();
      credentials?.close();
      revocationList?.close();
      access.close();
      await metrics.shutdown();
      await tracing.shutdown();
      await store.close();
    },
  };
}

/** This node's key and certificate when mTLS is on (the default); undefined when it is off. */
async function startNodeCredentials(
  config: AgentConfig,
  deps: { logger: Logger; clock: Clock; revocations: Revocations },
): Promise<NodeCredentials | undefined> {
  const { security } = config;
  if (!security.mtls) {
    deps.logger.warn('mTLS is off: peers are not authenticated and data crosses the network in the clear');
    return undefined;
  }
  // The schema requires one of the two with mTLS (and a trust bundle with the issuer).
  const { ca, issuer } = security;
  return NodeCredentials.start({
    node: config.nodeId,
    issuer: issuer
      ? new OperatorIssuer({ ...issuer, mesh: issuer.name, node: config.nodeId })
      : new FileCaIssuer({
          certFile: ca!.certFile,
          keyFile: ca!.keyFile,
          mesh: { namespace: ca!.namespace, name: config.mesh },
          node: config.nodeId,
          ttlMs: security.certificateTtlSeconds * 1000,
        }),
    trust: fileTrust(security.trustBundleFile ?? ca!.certFile),
    ...deps,
  });
}
