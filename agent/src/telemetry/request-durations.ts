import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type CollectionResult,
  DataPointType,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  HTTP_REQUEST_METHOD_VALUE_OTHER,
} from '@opentelemetry/semantic-conventions';

/** The methods HTTP's semantic conventions name; any other is `_OTHER` (a bounded label). */
const KNOWN_METHODS = ['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE'];
const METHOD_INDEX = new Map(KNOWN_METHODS.map((m, i) => [m, i]));
const OTHER_METHOD = KNOWN_METHODS.length;

/** One label set's histogram, as OpenTelemetry's explicit-bucket histogram keeps it. */
interface Series {
  readonly attributes: Attributes;
  readonly startTime: HrTime;
  /** counts[i]: values in (bounds[i-1], bounds[i]]; the last, values above every bound. */
  readonly counts: number[];
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** A series as one reader last exported it (for delta temporality). */
interface Exported {
  counts: number[];
  count: number;
  sum: number;
}

export interface RequestDurationsOptions {
  name: string;
  description: string;
  /** Upper bounds of the buckets, ascending, in seconds. */
  bounds: readonly number[];
  /** Its instrumentation scope (the agent's meter). */
  scope: string;
  /** The MeterProvider's resource (a MetricReader keeps its provider's: this only fills the type). */
  resource: Resource;
}

/**
 * The HTTP server's request-duration histogram (http.server.request.duration), aggregated here and
 * handed to each metric reader as a MetricProducer, not recorded through an OpenTelemetry
 * Histogram: the SDK's `record` hashes its attribute set on every call (its keys sorted and
 * JSON-serialized), which cost a local hit of 4 KiB an eighth to a fifth of the agent's main thread under load
 * (docs/benchmarks.md, load). Here a request finds its series by its route and a number made of its
 * method, status and error type: nothing is allocated once the series exists. What a reader gets
 * is what the SDK's histogram gives (the same descriptor, buckets with upper bounds inclusive, sum,
 * count, min and max), cumulative, or delta for a reader that asks for delta (an OTLP push with
 * OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta; min and max are then left out, as the
 * SDK leaves them out when it cannot know them). Label sets are bounded: routes are the router's
 * templates, methods nine and `_OTHER`, statuses the agent's own answers.
 */
export class RequestDurations {
  readonly #opts: RequestDurationsOptions;
  readonly #bounds: readonly number[];
  /** Series by route, then by method, status and error type. */
  readonly #series = new Map<string, Map<number | string, Series>>();

  constructor(opts: RequestDurationsOptions) {
    this.#opts = opts;
    this.#bounds = [...opts.bounds];
  }

  /**
   * Records one request. As OpenTelemetry's HTTP conventions say: its status code only when a status
   * line was sent (`status`), and `error.type` when the response was not completely sent.
   */
  record(
    method: string,
    route: string,
    status: number | undefined,
    errorType: string | undefined,
    seconds: number,
  ): void {
    if (!(seconds >= 0)) return; // as the SDK: a negative or NaN duration is not recorded
    let byRoute = this.#series.get(route);
    if (!byRoute) this.#series.set(route, (byRoute = new Map()));
    const m = METHOD_INDEX.get(method) ?? OTHER_METHOD;
    const key = errorType === undefined ? m * 1000 + (status ?? 0) : `${m} ${status ?? ''} ${errorType}`;
    let series = byRoute.get(key);
    if (!series) byRoute.set(key, (series = this.#newSeries(m, route, status, errorType)));
    series.count++;
    series.sum += seconds;
    if (seconds < series.min) series.min = seconds;
    if (seconds > series.max) series.max = seconds;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    series.counts[i]!++;
  }

  /** A producer for one reader, with that reader's temporality (read when it collects). */
  producer(temporality: () => AggregationTemporality): MetricProducer {
    const exported = new WeakMap<Series, Exported>();
    let lastTime: HrTime | undefined;
    return {
      collect: (): Promise<CollectionResult> => {
        const now = hrTime(Date.now());
        const delta = temporality() === AggregationTemporality.DELTA;
        const dataPoints = [];
        for (const byRoute of this.#series.values())
          for (const s of byRoute.values()) {
            const before = delta ? exported.get(s) : undefined;
            const counts = before ? s.counts.map((n, i) => n - before.counts[i]!) : [...s.counts];
            const count = s.count - (before?.count ?? 0);
            const sum = s.sum - (before?.sum ?? 0);
            if (delta) {
              if (count === 0) continue; // nothing since the last export: as the SDK, no point
              exported.set(s, { counts: [...s.counts], count: s.count, sum: s.sum });
            }
            dataPoints.push({
              attributes: s.attributes,
              startTime: delta && lastTime ? lastTime : s.startTime,
              endTime: now,
              value: {
                buckets: { boundaries: [...this.#bounds], counts },
                count,
                sum,
                ...(delta ? {} : { min: s.min, max: s.max }),
              },
            });
          }
        lastTime = now;
        const { name, description, scope, resource } = this.#opts;
        return Promise.resolve({
          resourceMetrics: {
            resource,
            scopeMetrics: [
              {
                scope: { name: scope },
                metrics: [
                  {
                    descriptor: { name, description, unit: 's', valueType: ValueType.DOUBLE },
                    aggregationTemporality: delta
                      ? AggregationTemporality.DELTA
                      : AggregationTemporality.CUMULATIVE,
                    dataPointType: DataPointType.HISTOGRAM,
                    dataPoints,
                  },
                ],
              },
            ],
          },
          errors: [],
        });
      },
    };
  }

  #newSeries(m: number, route: string, status: number | undefined, errorType: string | undefined): Series {
    // In the order the SDK's histogram was given them (its output keeps the first set's order).
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: KNOWN_METHODS[m] ?? HTTP_REQUEST_METHOD_VALUE_OTHER,
      [ATTR_HTTP_ROUTE]: route,
    };
    if (status !== undefined) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
    if (errorType !== undefined) attributes[ATTR_ERROR_TYPE] = errorType;
    return {
      attributes,
      startTime: hrTime(Date.now()),
      counts: new Array<number>(this.#bounds.length + 1).fill(0),
      count: 0,
      sum: 0,
      min: Infinity,
      max: -Infinity,
    };
  }
}

function hrTime(ms: number): HrTime {
  const seconds = Math.trunc(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}
