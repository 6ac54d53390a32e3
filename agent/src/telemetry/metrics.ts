import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Attributes, ObservableResult } from '@opentelemetry/api';
import { type Resource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  InstrumentType,
  type MetricReader,
  MeterProvider,
} from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME, METRIC_HTTP_SERVER_REQUEST_DURATION } from '@opentelemetry/semantic-conventions';
import {
  type BuildInfo,
  type MetricReaderFactory,
  observeBuildInfo,
  observeRuntime,
  PrometheusEndpoint,
  prometheusName,
} from '@edgemesh/telemetry';
import type { StoreStats } from '../cache/object-store.ts';
import { type Counters, SOURCES } from './counters.ts';
import { RequestDurations } from './request-durations.ts';
import { AGENT_LABELS, AGENT_SERVICE, AGENT_VERSION } from './resource.ts';

export interface MetricSources {
  counters: Counters;
  store: () => StoreStats;
  peersKnown: () => number;
  /** Members by state (alive, suspect, dead); absent without a control plane. */
  members?: () => Record<string, number>;
  /** The control plane's connection state (connected, disconnected, off...). */
  controlState?: () => string;
  /** Copies the running repair pass has still to make. */
  repairBacklog?: () => number;
  /** Membership's local health score (0 healthy, up to 8: its probes wait that much longer). */
  localHealth?: () => number;
  /** Peers whose reputation is below the threshold (not chosen to fetch from). */
  distrustedPeers?: () => number;
  /**
   * This process (telemetry/resource: its node, mesh, zone and region, and the OTEL_* environment):
   * on target_info, and its mesh, zone and region as labels on every series.
   */
  resource?: Resource;
  /** Which build this is (edgemesh_build_info); default: this package's version, revision unknown. */
  build?: BuildInfo;
  /** Process and runtime metrics (event loop, GC, heap, CPU, memory); default on. */
  runtime?: boolean;
  /**
   * More readers besides the Prometheus endpoint: an OTLP push (@edgemesh/telemetry's
   * otlpMetricReaderFactory), each made with the producers of what the agent aggregates itself.
   */
  readers?: MetricReaderFactory[];
}

/** Requests that are not the API's work: probes and scrapes (kept out of request latency). */
const NOT_REQUESTS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * OpenTelemetry metrics for the agent, exported in Prometheus text at /metrics (named as Prometheus
 * names things: telemetry/prometheus.ts) and over OTLP when configured. Its own instruments are
 * observable and read the plain counters, and the request-duration histogram is aggregated by the
 * agent (request-durations.ts), so the hot path pays next to nothing for telemetry. Every label
 * set is bounded: by hop class, source, reason or state, never by peer.
 */
export class AgentMetrics {
  readonly #endpoint: PrometheusEndpoint;
  readonly #provider: MeterProvider;
  readonly #runtime: { stop(): void } | undefined;
  readonly #durations: RequestDurations;
  readonly #batchDurations;
  readonly #originDurations;
  /** The names of the agent's own metrics, as Prometheus shows them (histograms: the base name). */
  readonly names: string[] = [];

  constructor(sources: MetricSources) {
    const resource = sources.resource ?? resourceFromAttributes({ [ATTR_SERVICE_NAME]: AGENT_SERVICE });
    this.#durations = new RequestDurations({
      name: METRIC_HTTP_SERVER_REQUEST_DURATION,
      description: 'Duration of HTTP server requests (the API; not probes or scrapes)',
      bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      scope: AGENT_SERVICE,
      resource,
    });
    this.#endpoint = new PrometheusEndpoint({
      labels: AGENT_LABELS,
      producers: [this.#durations.producer(() => AggregationTemporality.CUMULATIVE)],
    });
    // Each reader's producer exports with the temporality that reader asks of histograms.
    const readers = (sources.readers ?? []).map((make) => {
      const reader: MetricReader = make([
        this.#durations.producer(() => reader.selectAggregationTemporality(InstrumentType.HISTOGRAM)),
      ]);
      return reader;
    });
    this.#provider = new MeterProvider({ readers: [this.#endpoint.reader, ...readers], resource });
    const meter = this.#provider.getMeter(AGENT_SERVICE);
    const named = (name: string, kind: 'counter' | 'gauge' | 'histogram', unit?: string) =>
      this.names.push(prometheusName(name, kind, unit));
    const { counters } = sources;
    const observe = (
      name: string,
      description: string,
      read: (r: ObservableResult<Attributes>) => void,
      unit?: string,
    ) => {
      named(name, 'counter', unit);
      meter.createObservableCounter(name, { description, ...(unit ? { unit } : {}) }).addCallback(read);
    };
    const gauge = (
      name: string,
      description: string,
      read: (r: ObservableResult<Attributes>) => void,
      unit?: string,
    ) => {
      named(name, 'gauge', unit);
      meter.createObservableGauge(name, { description, ...(unit ? { unit } : {}) }).addCallback(read);
    };
    const perKey = (map: Map<string, number>, label: string) => (r: ObservableResult<Attributes>) => {
      for (const [key, value] of map) r.observe(value, { [label]: key });
    };
    const perRecord =
      (record: Record<string, number>, label: string) => (r: ObservableResult<Attributes>) => {
        for (const [key, value] of Object.entries(record)) r.observe(value, { [label]: key });
      };

    observe('edgemesh.cache.lookups', 'Object lookups by result', (r) => {
      r.observe(counters.hits, { result: 'hit' });
      r.observe(counters.misses, { result: 'miss' });
    });
    observe(
      'edgemesh.served',
      'Object bytes sent to local clients, by source (local, peer, origin)',
      (r) => {
        for (const source of SOURCES) r.observe(counters.bytesServed[source], { source });
      },
      'By',
    );
    observe('edgemesh.stored', 'Object bytes accepted by PUT', (r) => r.observe(counters.bytesStored), 'By');
    observe(
      'edgemesh.peer.received',
      'Verified chunk bytes received from peers, by hop class (node, zone, region, remote)',
      perRecord(counters.bytesByHop, 'hop'),
      'By',
    );
    observe(
      'edgemesh.peer.sent',
      'Chunk bytes served to peers',
      (r) => r.observe(counters.bytesToPeers),
      'By',
    );
    observe(
      'edgemesh.peer.handshakes',
      'TLS handshakes of connections from peers that ended with a verified certificate (gRPC and bulk)',
      (r) => r.observe(counters.peerHandshakes),
    );
    observe(
      'edgemesh.peer.chunks.rejected',
      'Chunks from peers that failed verification, by hop class (which peer: /v1/status and the logs)',
      perRecord(counters.rejectedByHop, 'hop'),
    );
    observe(
      'edgemesh.peer.holders_gone',
      'Holders named to a read (by its owners, mostly) that answered they hold the object no more',
      (r) => r.observe(counters.holdersGone),
    );
    observe('edgemesh.cache.corrupt_chunks', 'Chunks found damaged on local disk', (r) =>
      r.observe(counters.corruptChunks),
    );
    observe(
      'edgemesh.cache.removals',
      'Objects removed from the cache, by reason',
      perKey(counters.removals, 'reason'),
    );
    gauge(
      'edgemesh.cache.size',
      'Bytes the cache limit counts: chunks, manifests, the database files beyond them and the folders',
      (r) => r.observe(sources.store().bytes),
      'By',
    );
    gauge('edgemesh.cache.limit', 'The cache byte limit', (r) => r.observe(sources.store().maxBytes), 'By');
    gauge(
      'edgemesh.cache.entries',
      'Objects in the cache',
      (r) => r.observe(sources.store().entries),
      '{object}',
    );
    gauge(
      'edgemesh.cache.index.loaded',
      'Whether the index has loaded after the start (0 while it loads: the other cache figures cover what is loaded)',
      (r) => r.observe(sources.store().indexLoaded ? 1 : 0),
    );
    gauge(
      'edgemesh.cache.hot.size',
      'Memory the in-memory hot tier holds (its chunks and the unused room of its slabs)',
      (r) => r.observe(sources.store().hotBytes),
      'By',
    );
    gauge('edgemesh.peers.known', 'Peers this agent knows of', (r) => r.observe(sources.peersKnown()));
    gauge('edgemesh.members', 'Mesh members this agent knows, by state (alive, suspect, dead)', (r) => {
      for (const [state, n] of Object.entries(sources.members?.() ?? {})) r.observe(n, { state });
    });
    gauge('edgemesh.repair.backlog', 'Copies the running repair pass has still to make (0: none runs)', (r) =>
      r.observe(sources.repairBacklog?.() ?? 0),
    );
    gauge(
      'edgemesh.membership.local_health',
      "This node's local health score: 0 when its probes are answered; up to 8 when its own link seems to fail (its probes and suspicions then wait 1 + score times longer)",
      (r) => r.observe(sources.localHealth?.() ?? 0),
    );
    gauge(
      'edgemesh.peers.distrusted',
      'Peers not chosen to fetch from: their reputation fell below the threshold',
      (r) => r.observe(sources.distrustedPeers?.() ?? 0),
    );
    observe(
      'edgemesh.peers.refused',
      'Peer calls and peers refused, by reason (protocol: no protocol version in common; unauthenticated, claim, manifest, purge: see docs/security.md)',
      perKey(counters.peersRefused, 'reason'),
    );
    observe(
      'edgemesh.control.dropped',
      'Control-plane events dropped, by reason (unsupported-version, unknown-type, invalid, unsigned, ...)',
      perKey(counters.controlDropped, 'reason'),
    );
    gauge('edgemesh.control.connected', '1 while the control plane (NATS) is connected', (r) =>
      r.observe(sources.controlState?.() === 'connected' ? 1 : 0),
    );
    observe('edgemesh.origin.fetches', 'Fetches this agent made from origins', (r) =>
      r.observe(counters.originFetches),
    );
    observe(
      'edgemesh.origin.received',
      'Object bytes fetched from origins',
      (r) => r.observe(counters.bytesFromOrigin),
      'By',
    );
    named('edgemesh.build.info', 'gauge');
    observeBuildInfo(meter, sources.build ?? { version: AGENT_VERSION, revision: 'unknown' });
    /** A histogram of durations in seconds, with its bucket bounds. */
    const seconds = (name: string, description: string, bounds: number[]) => {
      named(name, 'histogram', 's');
      return meter.createHistogram(name, {
        description,
        unit: 's',
        advice: { explicitBucketBoundaries: bounds },
      });
    };
    this.#batchDurations = seconds(
      'edgemesh.peer.fetch.duration',
      'Time to get one batch of chunks from a peer, by hop class',
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.#originDurations = seconds(
      'edgemesh.origin.fetch.duration',
      'Time to get an object from its origin, to the last byte stored, by outcome',
      [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    );
    named(METRIC_HTTP_SERVER_REQUEST_DURATION, 'histogram', 's');
    this.#runtime = sources.runtime === false ? undefined : observeRuntime(this.#provider);
  }

  /**
   * Records one request's duration, unless it is a probe or a scrape (`route`). As OpenTelemetry's
   * HTTP conventions say: its status code only when a status line was sent (`status`), and
   * `error.type` when the response was not completely sent (`errorType`: `aborted`).
   */
  recordRequest(request: {
    method: string;
    path: string;
    route: string;
    status?: number;
    errorType?: string;
    seconds: number;
  }): void {
    // By route, not path: `/HEALTHZ/` is the /healthz route too (routes match any case, one trailing slash).
    if (NOT_REQUESTS.has(request.route)) return;
    this.#durations.record(request.method, request.route, request.status, request.errorType, request.seconds);
  }

  recordPeerFetch(hop: string, seconds: number): void {
    this.#batchDurations.record(seconds, { hop });
  }

  recordOriginFetch(outcome: string, seconds: number): void {
    this.#originDurations.record(seconds, { outcome });
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#endpoint.handle(req, res);
  }

  /** The scrape /metrics answers, as text. */
  scrape(): Promise<string> {
    return this.#endpoint.text();
  }

  async shutdown(): Promise<void> {
    this.#runtime?.stop();
    await this.#provider.shutdown();
  }
}
