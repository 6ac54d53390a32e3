import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Resource, resourceFromAttributes } from '@opentelemetry/resources';
import { type MetricReader, MeterProvider } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { type BuildInfo, observeBuildInfo, observeRuntime, PrometheusEndpoint } from '@edgemesh/telemetry';
import type { WorkQueue } from './queue.ts';

export const OPERATOR_SERVICE = 'edgemesh-operator';

/**
 * The operator's metrics, named as controller-runtime's (so its dashboards and alerts carry over),
 * exported in Prometheus text: controller_runtime_reconcile_total{controller,result},
 * controller_runtime_reconcile_errors_total, controller_runtime_reconcile_time_seconds,
 * workqueue_depth, workqueue_adds_total, workqueue_retries_total, workqueue_queue_duration_seconds,
 * controller_runtime_active_workers, leader_election_master_status, and informer restarts; plus
 * edgemesh_build_info and the process's and runtime's metrics (telemetry/runtime.ts).
 */
export class OperatorMetrics {
  readonly #endpoint = new PrometheusEndpoint();
  readonly #provider: MeterProvider;
  readonly #runtime: { stop(): void } | undefined;
  readonly reconciles = { total: 0, errors: 0 };
  informerRestarts = 0;
  /** The metric names the operator exports, as Prometheus shows them (histograms: the base name). */
  readonly names = [
    'controller_runtime_reconcile_total',
    'controller_runtime_reconcile_errors_total',
    'controller_runtime_reconcile_time_seconds',
    'workqueue_adds_total',
    'workqueue_retries_total',
    'workqueue_queue_duration_seconds',
    'workqueue_depth',
    'controller_runtime_active_workers',
    'leader_election_master_status',
    'edgemesh_operator_informer_restarts_total',
    'edgemesh_operator_certificate_requests_total',
    'edgemesh_build_info',
  ];
  /** Records one certificate request's outcome ('issued', a refusal's reason, ...). */
  recordIssuance: (outcome: string) => void;

  constructor(opts: {
    controller: string;
    queue: WorkQueue;
    leading: () => boolean;
    /** This replica (service.instance.id on target_info and in OTLP), when no `resource` is given. */
    identity?: string;
    /** The process's resource (telemetry's serviceResource: with the OTEL_* environment). */
    resource?: Resource;
    /** Which build this is (edgemesh_build_info). */
    build?: BuildInfo;
    /** Process and runtime metrics; default on. */
    runtime?: boolean;
    /** More readers besides the Prometheus endpoint: an OTLP push (@edgemesh/telemetry). */
    readers?: MetricReader[];
  }) {
    this.#provider = new MeterProvider({
      readers: [this.#endpoint.reader, ...(opts.readers ?? [])],
      resource:
        opts.resource ??
        resourceFromAttributes({
          [ATTR_SERVICE_NAME]: OPERATOR_SERVICE,
          ...(opts.identity ? { [ATTR_SERVICE_INSTANCE_ID]: opts.identity } : {}),
        }),
    });
    const meter = this.#provider.getMeter(OPERATOR_SERVICE);
    observeBuildInfo(meter, opts.build ?? { version: 'unknown', revision: 'unknown' });
    this.#runtime = opts.runtime === false ? undefined : observeRuntime(this.#provider);
    const controller = { controller: opts.controller, name: opts.controller };
    const total = meter.createCounter('controller_runtime_reconcile', {
      description: 'Reconciles by result',
    });
    const errors = meter.createCounter('controller_runtime_reconcile_errors', {
      description: 'Reconcile errors',
    });
    const time = meter.createHistogram('controller_runtime_reconcile_time_seconds', {
      description: 'Time per reconcile',
      unit: 's',
      advice: { explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] },
    });
    const adds = meter.createCounter('workqueue_adds', { description: 'Keys added to the work queue' });
    const retries = meter.createCounter('workqueue_retries', { description: 'Retries of failed keys' });
    const waited = meter.createHistogram('workqueue_queue_duration_seconds', {
      description: 'Time a key waits in the queue',
      unit: 's',
      advice: { explicitBucketBoundaries: [0.001, 0.01, 0.1, 0.5, 1, 5, 10, 60] },
    });
    meter
      .createObservableGauge('workqueue_depth', { description: 'Keys ready in the queue' })
      .addCallback((r) => {
        r.observe(opts.queue.depth, controller);
      });
    meter
      .createObservableGauge('controller_runtime_active_workers', { description: 'Workers busy' })
      .addCallback((r) => r.observe(opts.queue.busy, controller));
    meter
      .createObservableGauge('leader_election_master_status', { description: '1 when this replica leads' })
      .addCallback((r) => r.observe(opts.leading() ? 1 : 0, { name: opts.controller }));
    meter
      .createObservableCounter('edgemesh_operator_informer_restarts', {
        description: 'Informer restarts after errors',
      })
      .addCallback((r) => r.observe(this.informerRestarts));
    const issuance = meter.createCounter('edgemesh_operator_certificate_requests', {
      description: 'Node certificate requests by outcome (issued, or why not)',
    });
    this.recordIssuance = (outcome) => issuance.add(1, { outcome });
    opts.queue.metrics = {
      adds: () => adds.add(1, controller),
      retries: () => retries.add(1, controller),
      queued: (seconds) => waited.record(seconds, controller),
      processed: (seconds, result) => {
        this.reconciles.total++;
        total.add(1, { controller: opts.controller, result });
        time.record(seconds, { controller: opts.controller });
        if (result === 'error') {
          this.reconciles.errors++;
          errors.add(1, { controller: opts.controller });
        }
      },
    };
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#endpoint.handle(req, res);
  }

  async shutdown(): Promise<void> {
    this.#runtime?.stop();
    await this.#provider.shutdown();
  }
}
