import type { IncomingMessage, ServerResponse } from 'node:http';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  DataPointType,
  type MetricData,
  type MetricProducer,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';

/**
 * Prometheus's names for OpenTelemetry's units (its compatibility specification): a metric's name
 * ends in its unit, `_seconds`, `_bytes`; `1` is a ratio (of gauges only); annotations in braces
 * (`{object}`) name no unit.
 */
const UNIT_WORDS: Record<string, string> = {
  s: 'seconds',
  ms: 'milliseconds',
  By: 'bytes',
  KiBy: 'kibibytes',
  MiBy: 'mebibytes',
  '%': 'percent',
};

/** The unit word a metric's Prometheus name ends in, if any. */
function unitWord(unit: string, gauge: boolean): string | undefined {
  const bare = unit.replace(/\{[^}]*\}/g, '');
  if (bare === '1') return gauge ? 'ratio' : undefined;
  return UNIT_WORDS[bare];
}

/**
 * The Prometheus name of an OpenTelemetry metric: dots and other characters Prometheus does not
 * allow become `_`, the unit word is appended (unless the name already ends in it), and counters
 * end in `_total`. `edgemesh.peer.received` in By, a counter: `edgemesh_peer_received_bytes_total`.
 */
export function prometheusName(name: string, kind: 'counter' | 'gauge' | 'histogram', unit = ''): string {
  let base = name.replace(/[^A-Za-z0-9_]/g, '_').replace(/_{2,}/g, '_');
  if (kind === 'counter') base = base.replace(/_total$/, '');
  const word = unitWord(unit, kind === 'gauge');
  if (word && !base.endsWith(`_${word}`)) base = `${base}_${word}`;
  return kind === 'counter' ? `${base}_total` : base;
}

const kindOf = (metric: MetricData): 'counter' | 'gauge' | 'histogram' =>
  metric.dataPointType === DataPointType.HISTOGRAM
    ? 'histogram'
    : metric.dataPointType === DataPointType.SUM && metric.isMonotonic
      ? 'counter'
      : 'gauge';

/** `metric` under its Prometheus name (the unit then said by the name, so dropped from the metadata). */
function renamed(metric: MetricData): MetricData {
  const { name } = metric.descriptor;
  const unit = metric.descriptor.unit;
  const kind = kindOf(metric);
  const full = prometheusName(name, kind, unit);
  // The serializer appends _total to counters itself.
  const base = kind === 'counter' ? full.replace(/_total$/, '') : full;
  return { ...metric, descriptor: { ...metric.descriptor, name: base, unit: '' } };
}

export interface PrometheusEndpointOptions {
  /**
   * Labels on every series, each read from a resource attribute: `{ zone: 'cloud.availability_zone' }`
   * gives each series `zone="..."` (and target_info too), so queries can group and join by them.
   */
  labels?: Record<string, string>;
  /** Metrics the process aggregates itself (MetricProducers), served beside its MeterProvider's. */
  producers?: MetricProducer[];
}

/**
 * A MetricReader whose collection is served as Prometheus text (/metrics), named the way Prometheus
 * names things (see prometheusName), with the chosen resource attributes as labels on every series,
 * and the whole resource on `target_info`. Instrumentation scope labels are left out: one process's
 * scopes say nothing a query needs.
 */
export class PrometheusEndpoint {
  readonly reader: PrometheusExporter;
  readonly #labels: Record<string, string>;
  readonly #serializer: PrometheusSerializer;

  constructor(opts: PrometheusEndpointOptions = {}) {
    this.reader = new PrometheusExporter({ preventServerStart: true, metricProducers: opts.producers ?? [] });
    this.#labels = opts.labels ?? {};
    const names = Object.keys(this.#labels);
    const pattern = new RegExp(`^(${names.map((n) => n.replace(/[^A-Za-z0-9_]/g, '')).join('|')})$`);
    this.#serializer = new PrometheusSerializer(
      undefined,
      false,
      names.length ? pattern : undefined,
      false,
      true,
    );
  }

  /** The scrape, as text. */
  async text(): Promise<string> {
    const { resourceMetrics } = await this.reader.collect();
    return this.#serializer.serialize(this.#prometheusView(resourceMetrics));
  }

  /** Answers a scrape. */
  handle(_req: IncomingMessage, res: ServerResponse): void {
    this.text().then(
      (text) => {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text);
      },
      (error: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`# ${error.message}\n`);
      },
    );
  }

  #prometheusView(collected: ResourceMetrics): ResourceMetrics {
    const attributes = collected.resource.attributes;
    const labels: Record<string, string> = {};
    for (const [label, attribute] of Object.entries(this.#labels)) {
      const value = attributes[attribute];
      if (typeof value === 'string' || typeof value === 'number') labels[label] = String(value);
    }
    return {
      resource: resourceFromAttributes({ ...attributes, ...labels }),
      scopeMetrics: collected.scopeMetrics.map((scope) => ({
        ...scope,
        metrics: scope.metrics.map(renamed),
      })),
    };
  }
}
