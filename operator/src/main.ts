#!/usr/bin/env node
/**
 * The EdgeMesh operator. Configuration comes from EDGEMESH_OPERATOR_* variables (see
 * docs/operator.md), the cluster from KUBECONFIG or the in-cluster service account. Run it with
 * OPERATOR_NODE_FLAGS (node-flags.ts), as `npm run operator` and the image do.
 */
import { hostname } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { z } from 'zod';
import { startOperator } from './controller.ts';
import { buildInfo, otlpMetricReader } from '@edgemesh/telemetry';
import { OPERATOR_VERSION, operatorResource, startTracing } from './kit/tracing.ts';
import { imageSchema, objectNameSchema, pullPolicySchema } from './api/edgemesh.ts';

const ms = z.coerce.number().int().min(1);
/** A comma-separated list of `item`s (spaces around each ignored; unset or empty: none). */
const commaList = (item: z.ZodType<string, string>) =>
  z
    .string()
    .default('')
    .transform((list) =>
      list
        .split(',')
        .map((name) => name.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item));
const configSchema = z.object({
  EDGEMESH_OPERATOR_IDENTITY: z
    .string()
    .min(1)
    .default(process.env.POD_NAME ?? hostname()),
  EDGEMESH_OPERATOR_NAMESPACE: z
    .string()
    .min(1)
    .default(process.env.POD_NAMESPACE ?? 'edgemesh-system'),
  EDGEMESH_OPERATOR_LEASE_NAME: z.string().min(1).default('edgemesh-operator'),
  EDGEMESH_OPERATOR_LEASE_DURATION_MS: ms.default(15_000),
  EDGEMESH_OPERATOR_RENEW_DEADLINE_MS: ms.default(10_000),
  EDGEMESH_OPERATOR_RETRY_PERIOD_MS: ms.default(2_000),
  EDGEMESH_OPERATOR_WORKERS: z.coerce.number().int().min(1).max(64).default(4),
  EDGEMESH_OPERATOR_RESYNC_MS: ms.default(600_000),
  EDGEMESH_OPERATOR_PROBE_HOST: z.string().default('0.0.0.0'),
  EDGEMESH_OPERATOR_PROBE_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** Where agents reach the issuance endpoint (the chart's Service); unset: no issuance, no mTLS. */
  EDGEMESH_OPERATOR_ISSUER_URL: z
    .url({ protocol: /^https$/ })
    .optional()
    .or(z.literal('').transform(() => undefined)),
  EDGEMESH_OPERATOR_ISSUER_HOST: z.string().default('0.0.0.0'),
  EDGEMESH_OPERATOR_ISSUER_PORT: z.coerce.number().int().min(0).max(65535).default(7443),
  EDGEMESH_OPERATOR_ISSUER_SECRET: z.string().min(1).default('edgemesh-operator-issuer-tls'),
  /**
   * The bundled NATS whose authentication this operator manages (the chart sets `<release>-nats`):
   * its keys in Secret `<name>-keys`, its configuration in ConfigMap `<name>-config`, and every mesh
   * that names no credentials Secret gets its own NATS user. Unset: NATS without authentication.
   */
  EDGEMESH_OPERATOR_NATS_AUTH: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]{0,240}[a-z0-9])?$/)
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /** The life of a mesh's NATS credentials; renewed at two thirds of it. */
  EDGEMESH_OPERATOR_NATS_CREDENTIALS_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(31_536_000)
    .default(86_400),
  /** OTLP/HTTP endpoint for traces (a span per reconcile); none: no tracing. */
  EDGEMESH_OPERATOR_OTLP_ENDPOINT: z
    .url({ protocol: /^https?$/ })
    .optional()
    .or(z.literal('').transform(() => undefined)),
  OTEL_EXPORTER_OTLP_ENDPOINT: z
    .url({ protocol: /^https?$/ })
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /**
   * The agent image of every mesh whose spec.agent.image is unset (the chart sets it): changing it
   * rolls those meshes' agents. Unset: such meshes are Degraded (NoAgentImage).
   */
  EDGEMESH_OPERATOR_AGENT_IMAGE: imageSchema.optional().or(z.literal('').transform(() => undefined)),
  /** Their pull policy, unless spec.agent.imagePullPolicy says otherwise; unset: Kubernetes' default. */
  EDGEMESH_OPERATOR_AGENT_IMAGE_PULL_POLICY: pullPolicySchema
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /** Secret names, comma-separated, added to every agent DaemonSet's imagePullSecrets. */
  EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS: commaList(objectNameSchema),
  /** The PriorityClass of every mesh's agents whose spec.agent.priorityClassName is unset (the chart makes one). */
  EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS: objectNameSchema
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /** Namespaces, comma-separated, whose pods may reach every mesh's agents' HTTP port (Prometheus, for /metrics). */
  EDGEMESH_OPERATOR_SCRAPE_NAMESPACES: commaList(z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/)),
  EDGEMESH_OPERATOR_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
});

const parsed = configSchema.safeParse(process.env);
if (!parsed.success) {
  for (const issue of parsed.error.issues)
    process.stderr.write(`config: ${issue.path.join('.')}: ${issue.message}\n`);
  process.exit(2);
}
const env = parsed.data;
const logger = pino({
  level: env.EDGEMESH_OPERATOR_LOG_LEVEL,
  base: { identity: env.EDGEMESH_OPERATOR_IDENTITY },
});
const otlpEndpoint = env.EDGEMESH_OPERATOR_OTLP_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
const build = buildInfo(OPERATOR_VERSION, process.env);
const resource = await operatorResource(env.EDGEMESH_OPERATOR_IDENTITY, build);
const tracing = await startTracing(otlpEndpoint, resource);
const metricReaders = otlpEndpoint ? [await otlpMetricReader(otlpEndpoint)] : [];
const kc = new KubeConfig();
if (process.env.KUBECONFIG) kc.loadFromFile(process.env.KUBECONFIG);
else kc.loadFromCluster();

const operator = await startOperator(
  kc,
  {
    identity: env.EDGEMESH_OPERATOR_IDENTITY,
    leaseNamespace: env.EDGEMESH_OPERATOR_NAMESPACE,
    leaseName: env.EDGEMESH_OPERATOR_LEASE_NAME,
    leaseDurationMs: env.EDGEMESH_OPERATOR_LEASE_DURATION_MS,
    renewDeadlineMs: env.EDGEMESH_OPERATOR_RENEW_DEADLINE_MS,
    retryPeriodMs: env.EDGEMESH_OPERATOR_RETRY_PERIOD_MS,
    workers: env.EDGEMESH_OPERATOR_WORKERS,
    resyncMs: env.EDGEMESH_OPERATOR_RESYNC_MS,
    probeHost: env.EDGEMESH_OPERATOR_PROBE_HOST,
    probePort: env.EDGEMESH_OPERATOR_PROBE_PORT,
    metricReaders,
    telemetry: { resource, build },
    agentImage: {
      image: env.EDGEMESH_OPERATOR_AGENT_IMAGE,
      pullPolicy: env.EDGEMESH_OPERATOR_AGENT_IMAGE_PULL_POLICY,
      pullSecrets: env.EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS,
    },
    agentPriorityClass: env.EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS,
    scrapeNamespaces: env.EDGEMESH_OPERATOR_SCRAPE_NAMESPACES,
    ...(env.EDGEMESH_OPERATOR_ISSUER_URL
      ? {
          issuer: {
            url: env.EDGEMESH_OPERATOR_ISSUER_URL,
            host: env.EDGEMESH_OPERATOR_ISSUER_HOST,
            port: env.EDGEMESH_OPERATOR_ISSUER_PORT,
            secretName: env.EDGEMESH_OPERATOR_ISSUER_SECRET,
          },
        }
      : {}),
    ...(env.EDGEMESH_OPERATOR_NATS_AUTH
      ? {
          nats: {
            authName: env.EDGEMESH_OPERATOR_NATS_AUTH,
            credentialsTtlSeconds: env.EDGEMESH_OPERATOR_NATS_CREDENTIALS_TTL_SECONDS,
          },
        }
      : {}),
  },
  logger,
);
logger.info({ probePort: operator.probePort, issuerPort: operator.issuerPort }, 'operator started');

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: stopping watches, draining, releasing the lease');
    operator
      .stop()
      .then(() => tracing.shutdown())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  });
}
