import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Attributes, ObservableResult } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { type MetricReader, MeterProvider } from '@opentelemetry/sdk-metrics';
import type { StoreStats } from '../cache/object-store.ts';
import { type Counters, SOURCES } from './counters.ts';

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
  /** This node, as resource attributes (Prometheus shows them on `target_info`). */
  node?: { id: string; zone: string; region: string };
  /** More readers besides the Prometheus endpoint: an OTLP push (@edgemesh/telemetry). */
  readers?: MetricReader[];
}

/**
 * OpenTelemetry metrics for the agent, exported in Prometheus text at /metrics. Every instrument is
 * observable and reads the plain counters, so the hot path pays nothing for telemetry.
 */
export class AgentMetrics {
  readonly #exporter = new PrometheusExporter({ preventServerStart: true });
  readonly #provider: MeterProvider;
  readonly #durations;
  readonly #batchDurations;
  readonly #originDurations;
  /** The metric names this agent exports, as Prometheus shows them (histograms: the base name). */
  readonly names: string[] = [];

  constructor(sources: MetricSources) {
    this.#provider = new MeterProvider({
      readers: [this.#exporter, ...(sources.readers ?? [])],
      resource: resourceFromAttributes({
        'service.name': 'edgemesh-agent',
        ...(sources.node
          ? {
              'service.instance.id': sources.node.id,
              'edgemesh.zone': sources.node.zone,
              'edgemesh.region': sources.node.region,
            }
          : {}),
      }),
    });
    const meter = this.#provider.getMeter('edgemesh-agent');
    const named = (name: string, kind: 'counter' | 'gauge' | 'histogram') =>
      this.names.push(prometheusName(name, kind));
    const { counters } = sources;
    const observe = (
      name: string,
      description: string,
      read: (r: ObservableResult<Attributes>) => void,
      unit?: string,
    ) => {
      named(name, 'counter');
      meter.createObservableCounter(name, { description, ...(unit ? { unit } : {}) }).addCallback(read);
    };
    const gauge = (
      name: string,
      description: string,
      read: (r: ObservableResult<Attributes>) => void,
      unit?: string,
    ) => {
      named(name, 'gauge');
      meter.createObservableGauge(name, { description, ...(unit ? { unit } : {}) }).addCallback(read);
    };
    const perKey = (map: Map<string, number>, label: string) => (r: ObservableResult<Attributes>) => {
      for (const [key, value] of map) r.observe(value, { [label]: key });
    };

    observe('edgemesh.cache.lookups', 'Object lookups by result', (r) => {
      r.observe(counters.hits, { result: 'hit' });
      r.observe(counters.misses, { result: 'miss' });
    });
    observe(
      'edgemesh.bytes.served',
      'Object bytes sent to local clients, by source',
      (r) => {
        for (const source of SOURCES) r.observe(counters.bytesServed[source], { source });
      },
      'By',
    );
    observe(
      'edgemesh.bytes.stored',
      'Object bytes accepted by PUT',
      (r) => r.observe(counters.bytesStored),
      'By',
    );
    observe(
      'edgemesh.peer.bytes.received',
      'Verified chunk bytes received, by peer',
      perKey(counters.bytesFromPeer, 'peer'),
      'By',
    );
    observe(
      'edgemesh.peer.bytes.sent',
      'Chunk bytes served to peers',
      (r) => r.observe(counters.bytesToPeers),
      'By',
    );
    observe(
      'edgemesh.peer.chunks.rejected',
      'Chunks from a peer that failed verification',
      perKey(counters.badChunksByPeer, 'peer'),
    );
    observe('edgemesh.cache.corrupt.chunks', 'Chunks found damaged on local disk', (r) =>
      r.observe(counters.corruptChunks),
    );
    observe(
      'edgemesh.cache.removals',
      'Objects removed from the cache, by reason',
      perKey(counters.removals, 'reason'),
    );
    observe('edgemesh.http.requests', 'HTTP requests, by method and status', (r) => {
      for (const [key, value] of counters.requests) {
        const [method, status] = key.split(' ');
        r.observe(value, { 'http.request.method': method!, 'http.response.status_code': Number(status) });
      }
    });
    gauge('edgemesh.cache.bytes', 'Bytes of chunks on disk', (r) => r.observe(sources.store().bytes), 'By');
    gauge('edgemesh.cache.limit', 'The cache byte limit', (r) => r.observe(sources.store().maxBytes), 'By');
    gauge('edgemesh.cache.entries', 'Objects in the cache', (r) => r.observe(sources.store().entries));
    gauge(
      'edgemesh.cache.hot.bytes',
      'Bytes in the in-memory hot tier',
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
    gauge('edgemesh.control.connected', '1 while the control plane (NATS) is connected', (r) =>
      r.observe(sources.controlState?.() === 'connected' ? 1 : 0),
    );
    observe(
      'edgemesh.peer.bytes.by_hop',
      'Chunk bytes received from peers, by hop class (node, zone, region, remote)',
      (r) => {
        for (const [hop, bytes] of Object.entries(counters.bytesByHop)) r.observe(bytes, { hop });
      },
      'By',
    );
    observe('edgemesh.origin.fetches', 'Fetches this agent made from origins', (r) =>
      r.observe(counters.originFetches),
    );
    observe(
      'edgemesh.origin.bytes',
      'Object bytes fetched from origins',
      (r) => r.observe(counters.bytesFromOrigin),
      'By',
    );
    /** A histogram of durations in seconds, with its bucket bounds. */
    const seconds = (name: string, description: string, bounds: number[]) => {
      named(name, 'histogram');
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
    this.#durations = seconds(
      'http.server.request.duration',
      'Duration of HTTP server requests',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    );
  }

  recordRequest(method: string, route: string, status: number, seconds: number): void {
    this.#durations.record(seconds, {
      'http.request.method': method,
      'http.route': route,
      'http.response.status_code': status,
    });
  }

  recordPeerFetch(hop: string, seconds: number): void {
    this.#batchDurations.record(seconds, { hop });
  }

  recordOriginFetch(outcome: string, seconds: number): void {
    this.#originDurations.record(seconds, { outcome });
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#exporter.getMetricsRequestHandler(req, res);
  }

  async shutdown(): Promise<void> {
    await this.#provider.shutdown();
  }
}

/** A name as the Prometheus exporter shows it: dots become underscores, counters end in _total. */
export function prometheusName(name: string, kind: 'counter' | 'gauge' | 'histogram'): string {
  const base = name.replace(/[^A-Za-z0-9_:]/g, '_');
  return kind === 'counter' && !base.endsWith('_total') ? `${base}_total` : base;
}
