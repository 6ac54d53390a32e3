import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1DaemonSet,
  type V1Service,
  type V1Node,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { type EdgeMesh, GROUP, PLURAL, VERSION } from './api/edgemesh.ts';
import { FiguresCollector } from './figures.ts';
import { ChangeFilter } from './kit/change-filter.ts';
import { Informer } from './kit/informer.ts';
import { tracer } from './kit/tracing.ts';
import { KubeHttp, objectPath } from './kit/kube-http.ts';
import { LeaderElector } from './kit/leader.ts';
import type { Resource } from '@opentelemetry/resources';
import type { MetricReader } from '@opentelemetry/sdk-metrics';
import type { BuildInfo } from '@edgemesh/telemetry';
import { OperatorMetrics } from './kit/metrics.ts';
import { WorkQueue } from './kit/queue.ts';
import {
  childName,
  deliveredClusterTokens,
  FIELD_MANAGER,
  MESH_LABEL,
  meshId,
  type MeshTrust,
  trustConfigMapName,
} from './reconcile/desired.ts';
import { reconcile, type ReconcileDeps } from './reconcile/reconciler.ts';
import type { AgentImageDefaults } from './reconcile/agent-image.ts';
import { mergePatchFrom } from './reconcile/status.ts';
import {
  advanceCaRotation,
  type CaRotationTiming,
  ROTATE_CA_ANNOTATION,
  ensureMeshCa,
  ensureServingCertificate,
  kubeSecretApi,
  loadMeshCa,
  readingOnce,
  type StoredCa,
} from './identity/ca-store.ts';
import { createPrivateKey, randomBytes, sign as cryptoSign } from 'node:crypto';
import { encodeEvent, eventVersion, revocationSignedBytes, subjectFor } from '@edgemesh/contracts';
import { kubeIssuanceApi } from './identity/issuance.ts';
import { cachedClusterTokenKeys, tokenPrecheck } from './identity/token-precheck.ts';
import { startIssuerServer } from './identity/issuer-server.ts';
import { ensureMeshNatsCredentials, ensureNatsAuth, NATS_CREDS_KEY } from './nats/nats-auth-store.ts';
import {
  credentialsFingerprint,
  type NatsAuthKeys,
  type NatsCredentials,
  natsUserCredentials,
  operatorNatsPermissions,
} from './nats/nats-auth.ts';
import type { NatsAuth } from './figures.ts';

export interface OperatorConfig {
  /** This replica's identity for leader election (the pod name). */
  identity: string;
  /** Namespace of the leader-election Lease. */
  leaseNamespace: string;
  leaseName: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  /** Concurrent reconciles. */
  workers: number;
  /** Every cached mesh is reconciled again this often. */
  resyncMs: number;
  /** /healthz, /readyz and /metrics; port 0 picks one. */
  probeHost: string;
  probePort: number;
  /** Called when the lease is lost; by default the process exits, as controller-runtime's managers do. */
  onLostLease?: () => void;
  /** Metric readers besides /metrics, e.g. an OTLP push (@edgemesh/telemetry). */
  metricReaders?: MetricReader[];
  /** The process's resource and build, for its metrics (kit/tracing.ts's operatorResource). */
  telemetry?: { resource: Resource; build: BuildInfo };
  /**
   * The node-certificate issuance endpoint, served by every replica (docs/security.md): agents reach
   * it at `url` (its host names the serving certificate, kept in Secret `secretName` of
   * `leaseNamespace`); it listens on host:port (0 picks one). Without it, meshes with
   * `security.mtls` are Degraded (NoIssuer).
   */
  issuer?: { url: string; host: string; port: number; secretName: string };
  /**
   * The bundled NATS's authentication (docs/security.md, "Control plane"): its keys and server
   * configuration kept under `authName` in `leaseNamespace`; each mesh without a credentials Secret
   * of its own gets a NATS user valid `credentialsTtlSeconds`, allowed its own subjects only.
   */
  nats?: {
    authName: string;
    credentialsTtlSeconds: number;
    /**
     * The host names the bundled NATS is reached by (its serving certificate names them; meshes whose
     * servers are all among them get its certificate to check it by). Default: its Service's names.
     */
    hosts?: readonly string[];
  };
  /**
   * The agent image, pull policy and pull Secrets of every mesh whose spec names none (agent-image.ts);
   * without an image, such meshes are Degraded (NoAgentImage).
   */
  agentImage?: AgentImageDefaults;
  /** The PriorityClass of every mesh's agents whose spec names none (the chart makes one); unset: none. */
  agentPriorityClass?: string | undefined;
  /** Namespaces whose pods every mesh's NetworkPolicy lets reach the agents' HTTP port (/metrics): Prometheus's. */
  scrapeNamespaces?: readonly string[] | undefined;
  /** How long the steps of a mesh CA rotation last (ca-store.ts); the defaults outside tests. */
  caRotation?: CaRotationTiming;
}

export interface Operator {
  readonly probePort: number;
  /** The issuance endpoint's port, when it is served. */
  readonly issuerPort: number | undefined;
  readonly leading: boolean;
  readonly metrics: OperatorMetrics;
  /** Meshes whose agents' figures are followed, the NATS connections that carry them, reports dropped. */
  readonly figures: { meshes: number; connections: number; dropped: number };
  /** Stops watches, drains the queue, releases the lease. */
  stop(): Promise<void>;
}

const keyOf = (o: { metadata?: { namespace?: string; name?: string } }) =>
  `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/**
 * The EdgeMesh controller: informers on EdgeMeshes, their DaemonSets and Services, and Nodes feed
 * one work queue (a child maps to its mesh by label, a Node change to every mesh; a watched child
 * someone else edits is re-applied); workers reconcile keys while
 * this replica holds the lease. Probes and metrics are served on every replica.
 */
export async function startOperator(
  kc: KubeConfig,
  config: OperatorConfig,
  logger: Logger,
): Promise<Operator> {
  const queue = new WorkQueue();
  const metrics = new OperatorMetrics({
    controller: 'edgemesh',
    queue,
    leading: () => leader.leading,
    identity: config.identity,
    ...config.telemetry,
    readers: config.metricReaders ?? [],
  });
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const http = new KubeHttp(kc);
  const onRestart = () => metrics.informerRestarts++;
  const secrets = kubeSecretApi(http);
  // Every replica serves issuance (agents must get certificates while a standby waits); only the
  // leader reconciles, and so makes the meshes' CAs.
  let issuer: { url: string; certPem: string; server: { port: number; close(): Promise<void> } } | undefined;
  if (config.issuer) {
    const { url, host, port, secretName } = config.issuer;
    const tls = await ensureServingCertificate(secrets, config.leaseNamespace, secretName, [
      new URL(url).hostname,
    ]);
    const server = await startIssuerServer({
      host,
      port,
      tls,
      api: kubeIssuanceApi(http),
      meshCa: (mesh) => loadMeshCa(secrets, mesh),
      mesh: async (mesh) => {
        const found = await http.request<EdgeMesh>(
          'GET',
          objectPath({
            apiVersion: `${GROUP}/${VERSION}`,
            kind: 'EdgeMesh',
            metadata: { namespace: mesh.namespace, name: mesh.name },
          }),
        );
        return { uid: found.metadata?.uid, revokedNodes: found.spec?.security?.revokedNodes ?? [] };
      },
      logger,
      onOutcome: (outcome) => metrics.recordIssuance(outcome),
      // Tokens are checked against the cluster's keys first: garbage costs no TokenReview.
      precheck: tokenPrecheck((maxAgeMs) => clusterTokens(maxAgeMs)),
    });
    issuer = { url, certPem: tls.certPem, server };
    logger.info({ url, port: server.port }, 'issuance endpoint serving');
  }

  // The bundled NATS's keys and configuration, made by the first replica to start. The operator
  // connects to each mesh's NATS as a user of that mesh alone (nats-auth.ts operatorNatsPermissions),
  // minted here and renewed when a reconcile finds a third of its life left.
  let natsKeys: NatsAuthKeys | undefined;
  let natsHosts = new Set<string>();
  let natsCaPem: string | undefined;
  /** Whether a mesh's NATS is the bundled one: then it is checked by the bundled NATS's certificate. */
  const bundledNats = (mesh: EdgeMesh) =>
    mesh.spec.controlPlane.natsUrl.split(',').every((url) => {
      try {
        return natsHosts.has(new URL(url).hostname);
      } catch {
        return false;
      }
    });
  const operatorUsers = new Map<string, NatsCredentials>();
  if (config.nats) {
    const made = await ensureNatsAuth(http, secrets, config.leaseNamespace, config.nats.authName, {
      'app.kubernetes.io/managed-by': FIELD_MANAGER,
    });
    natsKeys = made.keys;
    // The bundled NATS serves TLS with this certificate (the chart mounts Secret `<name>-tls`).
    const { authName } = config.nats;
    const ns = config.leaseNamespace;
    natsHosts = new Set(
      config.nats.hosts ?? [
        authName,
        `${authName}.${ns}`,
        `${authName}.${ns}.svc`,
        `${authName}.${ns}.svc.cluster.local`,
      ],
    );
    natsCaPem = (await ensureServingCertificate(secrets, ns, `${authName}-tls`, [...natsHosts])).certPem;
    if (made.rewritten)
      logger.warn(
        { configMap: `${config.nats.authName}-config` },
        'the NATS configuration was made again from new keys: restart the NATS pod so that it reads it (meshes get new credentials)',
      );
    logger.info({ configMap: `${config.nats.authName}-config` }, 'NATS authentication managed');
  }
  /** The operator's user for mesh `id`, minted again when a third of its life is left. */
  const operatorAuth = async (
    keys: NatsAuthKeys,
    id: string,
    ttl: number,
    caPem?: string,
  ): Promise<NatsAuth> => {
    const known = operatorUsers.get(id);
    if (!known || known.expiresAtMs - Date.now() < (ttl * 1000) / 3) {
      // Users of meshes no longer reconciled (deleted) have expired by now: forget them.
      for (const [mesh, user] of operatorUsers) if (user.expiresAtMs < Date.now()) operatorUsers.delete(mesh);
      operatorUsers.set(
        id,
        await natsUserCredentials(keys, `operator for ${id}`, operatorNatsPermissions(id), ttl),
      );
    }
    return {
      id: `operator/${id}${caPem ? '/tls' : ''}`,
      creds: () => new TextEncoder().encode(operatorUsers.get(id)!.creds),
      ...(caPem ? { caPem } : {}),
    };
  };

  /** What a reconcile uses of each mesh and Node, as last seen (see their informers). */
  const meshChanges = new ChangeFilter();
  const nodeChanges = new ChangeFilter();
  const meshes = new Informer<EdgeMesh>({
    kc,
    path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
    list: () => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }) as never,
    onChange: (mesh, verb) => {
      // A write of its status alone (the figures, every 15 s, come back as updates) changes nothing
      // to reconcile: skipped, so an idle mesh costs the API server no applies.
      const key = keyOf(mesh);
      const { uid, generation, deletionTimestamp, labels, annotations } = mesh.metadata;
      const uses = JSON.stringify([uid, generation, deletionTimestamp, labels, annotations]);
      if (!meshChanges.changed(key, uses, verb)) return;
      queue.add(key);
    },
    resyncMs: config.resyncMs,
    logger,
    onRestart,
  });
  const managed = `app.kubernetes.io/managed-by=${FIELD_MANAGER}`;
  /** A child changed (or was changed by someone else): its mesh is reconciled, which undoes drift. */
  const toOwner = (child: { metadata?: { namespace?: string; labels?: Record<string, string> } }) => {
    const mesh = child.metadata?.labels?.[MESH_LABEL];
    if (mesh) queue.add(`${child.metadata?.namespace}/${mesh}`);
  };
  const daemonSets = new Informer<V1DaemonSet>({
    kc,
    path: '/apis/apps/v1/daemonsets',
    list: () => apps.listDaemonSetForAllNamespaces({ labelSelector: managed }),
    labelSelector: managed,
    onChange: toOwner,
    resyncMs: 0,
    logger,
    onRestart,
  });
  const services = new Informer<V1Service>({
    kc,
    path: '/api/v1/services',
    list: () => core.listServiceForAllNamespaces({ labelSelector: managed }),
    labelSelector: managed,
    onChange: toOwner,
    resyncMs: 0,
    logger,
    onRestart,
  });
  // ConfigMaps are not watched: their data (every node's topology) would cost more memory than the
  // rest of the operator; drift in them is undone at the next resync or change of the mesh.
  const informers = () => [meshes, daemonSets, services, nodes];
  const nodes = new Informer<V1Node>({
    kc,
    path: '/api/v1/nodes',
    list: () => core.listNode(),
    onChange: (node, verb) => {
      // Meshes use a Node's name and labels alone: an update of anything else (its status and
      // heartbeats, several a second on a large cluster) queues no mesh.
      const labels = JSON.stringify(Object.entries(node.metadata?.labels ?? {}).sort());
      if (!nodeChanges.changed(node.metadata?.name ?? '', labels, verb)) return;
      for (const mesh of meshes.list()) queue.add(keyOf(mesh));
    },
    resyncMs: 0,
    logger,
    onRestart,
  });

  const figures = new FiguresCollector({ logger, onChange: (key) => queue.add(key) });
  /**
   * Each mesh's revocation list, signed by its CA: signed again only when the nodes or the CA change
   * (a signature differs every time, and the trust ConfigMap would be rewritten at every reconcile).
   */
  const revocationLists = new Map<string, { of: string; list: MeshTrust['revocations'] }>();
  const revocationsOf = async (mesh: EdgeMesh, ca: StoredCa): Promise<MeshTrust['revocations']> => {
    const nodes = [...new Set(mesh.spec.security.revokedNodes ?? [])].sort();
    const of = JSON.stringify([ca.certPem, nodes]);
    const key = keyOf(mesh);
    const known = revocationLists.get(key);
    if (known?.of === of) return known.list;
    const issuedAtMs = Date.now();
    // Signed in the thread pool: a burst of new meshes signs one list each.
    const signed = await new Promise<Buffer>((resolve, reject) =>
      cryptoSign(
        'sha256',
        revocationSignedBytes(meshId(mesh), nodes, issuedAtMs),
        createPrivateKey(ca.keyPem),
        (error, signature) => (error ? reject(error) : resolve(signature)),
      ),
    );
    const list = { nodes, issuedAtMs, signature: signed.toString('base64') };
    revocationLists.set(key, { of, list });
    return list;
  };
  /**
   * The cluster's ServiceAccount token issuer and keys (OIDC discovery), which agents check their
   * clients' tokens with (cachedClusterTokenKeys: read again when older than asked, a failed read
   * tried again after a minute, concurrent reconciles waiting for the one read under way).
   */
  const clusterTokens = cachedClusterTokenKeys(
    async () => {
      const discovery = await http.request<{ issuer?: string }>('GET', '/.well-known/openid-configuration');
      // The API server serves its keys only to a client that accepts a JWK set.
      const jwks = await http.request<{ keys?: unknown[] }>(
        'GET',
        '/openid/v1/jwks',
        undefined,
        undefined,
        'application/jwk-set+json, application/json',
      );
      if (!discovery.issuer || !Array.isArray(jwks.keys)) throw new Error('no issuer or keys in the answers');
      return { issuer: discovery.issuer, jwks: `${JSON.stringify(jwks)}\n` };
    },
    {
      onError: (error) =>
        logger.warn(
          { err: error.message },
          'the cluster token keys could not be read; agents keep the last ones',
        ),
    },
  );
  const configMapData = (mesh: EdgeMesh, name: string) =>
    http
      .request<{ data?: Record<string, string> }>(
        'GET',
        objectPath({
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { namespace: mesh.metadata.namespace, name },
        }),
      )
      .then(
        (cm) => cm.data ?? {},
        (error: { code?: number }) => {
          if (error.code === 404) return undefined;
          throw error;
        },
      );
  /**
   * The keys for a mesh's agents: the cluster's, or, while they cannot be read (this process never
   * read them: a blip just after it started or took over), the ones its agents were given last, so
   * an unreadable answer never renders the agents a configuration without them (which would roll
   * every pod, twice, and refuse every client token meanwhile). A failed read of those ConfigMaps
   * fails the reconcile, retried.
   */
  const meshClusterTokens = async (mesh: EdgeMesh): Promise<MeshTrust['clusterTokens']> => {
    const read = await clusterTokens();
    if (read) return read;
    const [trust, agent] = await Promise.all([
      configMapData(mesh, trustConfigMapName(mesh)),
      configMapData(mesh, childName(mesh)),
    ]);
    return deliveredClusterTokens(trust, agent);
  };
  /** Objects deleted (or found gone) since this process last applied them: not asked to delete again. */
  const absent = new Set<string>();
  const deps: ReconcileDeps = {
    said: new Map(),
    figures,
    agentImage: config.agentImage ?? {},
    agentPriorityClass: config.agentPriorityClass,
    scrapeNamespaces: config.scrapeNamespaces,
    ...(issuer
      ? {
          meshTrust: async (mesh: EdgeMesh) => {
            const once = readingOnce(secrets); // the CA Secret, read once for both steps
            const stored = await ensureMeshCa(
              once,
              {
                namespace: mesh.metadata.namespace,
                name: mesh.metadata.name,
                uid: mesh.metadata.uid ?? '',
                apiVersion: `${GROUP}/${VERSION}`,
              },
              { 'app.kubernetes.io/managed-by': FIELD_MANAGER, [MESH_LABEL]: mesh.metadata.name },
              // No operator has written its status yet: its CA is made without a read first.
              { likelyNew: mesh.status === undefined },
            );
            const rotation = await advanceCaRotation(
              once,
              { namespace: mesh.metadata.namespace, name: mesh.metadata.name },
              stored,
              mesh.metadata.annotations?.[ROTATE_CA_ANNOTATION],
              {
                ...(config.caRotation ? { timing: config.caRotation } : {}),
                // The agents read the trust ConfigMap: the new CA must be in it before it signs.
                delivered: async (certPem) => {
                  const trust = await configMapData(mesh, trustConfigMapName(mesh)).catch(() => undefined);
                  return trust?.['ca.crt']?.includes(certPem.trim()) ?? false;
                },
              },
            );
            const { ca } = rotation;
            return {
              issuer: { url: issuer.url, certPem: issuer.certPem },
              bundlePem: ca.trustPem,
              revocations: await revocationsOf(mesh, ca),
              clusterTokens: await meshClusterTokens(mesh),
              caRotation: { did: rotation.did, why: rotation.why, nextStepInMs: rotation.nextStepInMs },
            };
          },
          publishRevocations: async (mesh: EdgeMesh, list: MeshTrust['revocations']) => {
            const id = meshId(mesh);
            const data = encodeEvent({
              ...eventVersion(),
              type: 'mesh.revocations',
              mesh: id,
              from: 'operator',
              sentAtMs: Date.now(),
              body: list,
            });
            await figures.publish(id, subjectFor(id, 'mesh.revocations'), data);
          },
        }
      : {}),
    ...(natsKeys && config.nats
      ? {
          meshNatsCredentials: async (mesh: EdgeMesh) => {
            const keys = natsKeys;
            const ttl = config.nats!.credentialsTtlSeconds;
            const id = meshId(mesh);
            const caPem = bundledNats(mesh) ? natsCaPem : undefined;
            const made = await ensureMeshNatsCredentials(
              http,
              keys,
              {
                namespace: mesh.metadata.namespace,
                name: mesh.metadata.name,
                uid: mesh.metadata.uid ?? '',
                apiVersion: `${GROUP}/${VERSION}`,
                id,
              },
              ttl,
              { 'app.kubernetes.io/managed-by': FIELD_MANAGER, [MESH_LABEL]: mesh.metadata.name },
              Date.now(),
              caPem,
            );
            return { ...made, auth: await operatorAuth(keys, id, ttl, caPem), tls: caPem !== undefined };
          },
        }
      : {}),
    specNatsAuth: async (mesh, secretName) => {
      const creds = (await secrets.read(mesh.metadata.namespace, secretName))?.data[NATS_CREDS_KEY];
      if (!creds) return undefined;
      const bytes = Buffer.from(creds, 'base64');
      return {
        id: `${mesh.metadata.namespace}/${secretName}/${credentialsFingerprint(bytes)}`,
        creds: () => bytes,
      };
    },
    mesh: (namespace, name) => meshes.get(name, namespace),
    daemonSet: (namespace, name) => daemonSets.get(name, namespace),
    nodes: () => nodes.list(),
    secretLabels: async (namespace, name) => {
      try {
        const secret = await http.request<{ metadata?: { labels?: Record<string, string> } }>(
          'GET',
          `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets/${encodeURIComponent(name)}`,
        );
        return secret.metadata?.labels ?? {};
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
    apply: async (object, answer) => {
      absent.delete(objectPath(object));
      const path = `${objectPath(object)}?fieldManager=${FIELD_MANAGER}&force=true`;
      if (answer) return http.request('PATCH', path, object, 'application/apply-patch+yaml');
      await http.send('PATCH', path, object, 'application/apply-patch+yaml');
      return undefined;
    },
    remove: async (object) => {
      const path = objectPath(object);
      if (absent.has(path)) return;
      await http.send('DELETE', path).catch((error: unknown) => {
        if ((error as { code?: number }).code !== 404) throw error;
      });
      absent.add(path);
    },
    writeStatus: async (mesh, status) => {
      const path = objectPath({
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'EdgeMesh',
        metadata: mesh.metadata,
      });
      // Keys the new status drops are sent as null: a merge patch would keep them otherwise.
      const patch = { status: mergePatchFrom(mesh.status ?? {}, status) };
      await http.send('PATCH', `${path}/status`, patch, 'application/merge-patch+json');
    },
    event: async (mesh, type, reason, note) => {
      const now = new Date();
      await http
        .send('POST', `/apis/events.k8s.io/v1/namespaces/${mesh.metadata.namespace}/events`, {
          apiVersion: 'events.k8s.io/v1',
          kind: 'Event',
          metadata: {
            namespace: mesh.metadata.namespace,
            // Two Events of one reconcile may fall in the same millisecond: a random tail keeps both.
            name: `${mesh.metadata.name}.${now.getTime().toString(36)}${randomBytes(3).toString('hex')}`,
          },
          eventTime: now.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z'),
          reportingController: `${GROUP}/operator`,
          reportingInstance: config.identity,
          action: 'Reconcile',
          type,
          reason,
          note: note.slice(0, 1024),
          regarding: {
            apiVersion: `${GROUP}/${VERSION}`,
            kind: 'EdgeMesh',
            name: mesh.metadata.name,
            namespace: mesh.metadata.namespace,
            uid: mesh.metadata.uid ?? '',
          },
        })
        .catch((error: unknown) =>
          logger.warn({ err: (error as Error).message }, 'could not record an event'),
        );
    },
    logger,
  };

  let running: Promise<void> | undefined;
  let synced = false;
  const startControllers = async () => {
    await Promise.all(informers().map((i) => i.start()));
    synced = true;
    logger.info(
      { meshes: meshes.list().length, nodes: nodes.list().length },
      'informers synced; reconciling',
    );
    running = queue.run(config.workers, (key) =>
      // A span per reconcile; the work queue's metrics say how long keys waited for it.
      tracer().startActiveSpan(
        'edgemesh.reconcile',
        { attributes: { 'edgemesh.mesh': key } },
        async (span) => {
          try {
            return await reconcile(key, deps);
          } catch (error) {
            span.setStatus({ code: 2, message: (error as Error).message });
            throw error;
          } finally {
            span.end();
          }
        },
      ),
    );
  };

  const leader = new LeaderElector({
    api: kc.makeApiClient(CoordinationV1Api),
    namespace: config.leaseNamespace,
    name: config.leaseName,
    identity: config.identity,
    leaseDurationMs: config.leaseDurationMs,
    renewDeadlineMs: config.renewDeadlineMs,
    retryPeriodMs: config.retryPeriodMs,
    logger,
    onStartedLeading: () => {
      startControllers().catch((error: unknown) =>
        logger.error({ err: error }, 'controllers failed to start'),
      );
    },
    onStoppedLeading: () => {
      logger.error('lost the lease: stopping so that only the leader reconciles');
      (config.onLostLease ?? (() => process.exit(1)))();
    },
  });

  const probes: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/healthz') return void res.writeHead(200).end('ok');
    if (path === '/readyz') {
      // A standby is ready (it serves probes and waits for the lease); a leader once it has synced.
      const ready = !leader.leading || synced;
      return void res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'informers not synced');
    }
    if (path === '/metrics') return metrics.handle(req, res);
    res.writeHead(404).end();
  });
  probes.listen(config.probePort, config.probeHost);
  await once(probes, 'listening');
  leader.start();

  return {
    probePort: (probes.address() as AddressInfo).port,
    issuerPort: issuer?.server.port,
    get leading() {
      return leader.leading;
    },
    metrics,
    get figures() {
      return figures.following;
    },
    async stop() {
      leader.close();
      queue.shutDown();
      await Promise.all(informers().map((i) => i.stop()));
      await running;
      await leader.release();
      probes.closeAllConnections();
      probes.close();
      await issuer?.server.close();
      await metrics.shutdown();
      await http.close();
      await figures.close();
    },
  };
}
