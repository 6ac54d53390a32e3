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

/** A histogram's figures over some time: since the start, or since a reader's last collection. */
interface Figures {
  /** counts[i]: values in (bounds[i-1], bounds[i]]; the last, values above every bound. */
  readonly counts: number[];
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** One label set's histogram since the start, as OpenTelemetry's explicit-bucket histogram keeps it. */
interface Series extends Figures {
  readonly attributes: Attributes;
  readonly startTime: HrTime;
}

/** At most this many label sets, as the SDK's default cardinality limit; the rest go to one overflow set. */
const MAX_SERIES = 2000;

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
 * JSON-serialized), which cost a local hit of 4 KiB an eighth of the agent's main thread under load
 * (docs/benchmarks.md, eighth session). Here a request finds its series by its route and a number
 * made of its method, status and error type: nothing is allocated once the series exists. A reader
 * gets the points the SDK's histogram would give (buckets with upper bounds inclusive, sum, count,
 * min and max; no point, and no metric, for a label set with nothing to report), as a second entry
 * of the agent's scope: cumulative, or, for a reader that asks for delta (an OTLP push with
 * OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE `delta` or `lowmemory`), what arrived since its
 * last collection, kept apart for it from its first collection on. Label sets are bounded by their
 * callers (routes are the router's templates, methods nine and `_OTHER`, statuses the agent's own
 * answers, the error type `aborted`) and, as the SDK bounds them, at 2,000: more go to one set
 * labelled `otel.metric.overflow` (for good: the SDK's delta readers count the limit per interval).
 * A delta reader that stops collecting keeps being counted for, in at most that many sets.
 */
export class RequestDurations {
  readonly #opts: RequestDurationsOptions;
  readonly #bounds: readonly number[];
  /** Series by route, then by method, status and error type. */
  readonly #series = new Map<string, Map<number | string, Series>>();
  #count = 0;
  #overflow: Series | undefined;
  /** Each delta reader's figures since its last collection, by series. */
  readonly #intervals: Map<Series, Figures>[] = [];

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
    const series = this.#seriesOf(method, route, status, errorType);
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    add(series, seconds, i);
    for (const interval of this.#intervals) {
      let figures = interval.get(series);
      if (!figures) interval.set(series, (figures = emptyFigures(bounds.length)));
      add(figures, seconds, i);
    }
  }

  /** A producer for one reader, with that reader's temporality (read when it collects). */
  producer(temporality: () => AggregationTemporality): MetricProducer {
    /** Delta: what arrived since the last collection (made at the first, which reports everything). */
    let interval: Map<Series, Figures> | undefined;
    let lastTime: HrTime | undefined;
    return {
      collect: (): Promise<CollectionResult> => {
        const now = hrTime(nowMs());
        const delta = temporality() !== AggregationTemporality.CUMULATIVE;
        const point = (s: Series, figures: Figures, startTime: HrTime) => ({
          attributes: s.attributes,
          startTime,
          endTime: now,
          value: {
            buckets: { boundaries: [...this.#bounds], counts: [...figures.counts] },
            count: figures.count,
            sum: figures.sum,
            min: figures.min,
            max: figures.max,
          },
        });
        const dataPoints = [];
        if (delta && interval) {
          for (const [s, figures] of interval) dataPoints.push(point(s, figures, lastTime ?? s.startTime));
          interval.clear();
        } else {
          for (const s of this.#all()) dataPoints.push(point(s, s, s.startTime));
          if (delta) this.#intervals.push((interval = new Map()));
        }
        lastTime = now;
        const { name, description, scope, resource } = this.#opts;
        const metric = {
          descriptor: { name, description, unit: 's', valueType: ValueType.DOUBLE },
          aggregationTemporality: delta ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.HISTOGRAM as const,
          dataPoints,
        };
        return Promise.resolve({
          resourceMetrics: {
            resource,
            // As the SDK: a metric with no point is left out.
            scopeMetrics: dataPoints.length > 0 ? [{ scope: { name: scope }, metrics: [metric] }] : [],
          },
          errors: [],
        });
      },
    };
  }

  *#all(): Iterable<Series> {
    for (const byRoute of this.#series.values()) yield* byRoute.values();
    if (this.#overflow) yield this.#overflow;
  }

  #seriesOf(
    method: string,
    route: string,
    status: number | undefined,
    errorType: string | undefined,
  ): Series {
    let byRoute = this.#series.get(route);
    const m = METHOD_INDEX.get(method) ?? OTHER_METHOD;
    const key = errorType === undefined ? m * 1000 + (status ?? 0) : `${m} ${status ?? ''} ${errorType}`;
    const found = byRoute?.get(key);
    if (found) return found;
    if (this.#count >= MAX_SERIES - 1)
      return (this.#overflow ??= this.#newSeries({ 'otel.metric.overflow': true }));
    if (!byRoute) this.#series.set(route, (byRoute = new Map()));
    // In the order the SDK's histogram was given them (its output keeps the first set's order).
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: KNOWN_METHODS[m] ?? HTTP_REQUEST_METHOD_VALUE_OTHER,
      [ATTR_HTTP_ROUTE]: route,
    };
    if (status !== undefined) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
    if (errorType !== undefined) attributes[ATTR_ERROR_TYPE] = errorType;
    const series = this.#newSeries(attributes);
    byRoute.set(key, series);
    this.#count++;
    return series;
  }

  #newSeries(attributes: Attributes): Series {
    return { attributes, startTime: hrTime(nowMs()), ...emptyFigures(this.#bounds.length) };
  }
}

function emptyFigures(bounds: number): Figures {
  return { counts: new Array<number>(bounds + 1).fill(0), count: 0, sum: 0, min: Infinity, max: -Infinity };
}

/** Counts `seconds`, in bucket `i`, in `f`. */
function add(f: Figures, seconds: number, i: number): void {
  f.count++;
  f.sum += seconds;
  if (seconds < f.min) f.min = seconds;
  if (seconds > f.max) f.max = seconds;
  f.counts[i]!++;
}

/** Now, in ms since the epoch, as the SDK reads it: the monotonic clock from the process's start (a step of the wall clock does not move it). */
const nowMs = () => performance.timeOrigin + performance.now();

function hrTime(ms: number): HrTime {
  const seconds = Math.trunc(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}
