import { SecretConflictError, type SecretApi } from '../identity/ca-store.ts';
import {
  checkNatsAuthKeys,
  createNatsAuthKeys,
  meshNatsPermissions,
  type NatsAuthKeys,
  natsAuthPublicKeys,
  natsServerConfig,
  natsUserCredentials,
} from './nats-auth.ts';

/** What the store needs of the API server beyond Secrets: GET and server-side apply. */
export interface KubeRequests {
  request<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T>;
}

/** The key of the configuration file in the ConfigMap the chart's NATS mounts. */
export const NATS_CONF_KEY = 'nats.conf';
/** The key of the credentials file in a mesh's NATS Secret (the agent reads `<mount>/creds`). */
export const NATS_CREDS_KEY = 'creds';
/** With the bundled NATS: its serving certificate, which the agents check it by (`<mount>/ca.crt`). */
export const NATS_CA_KEY = 'ca.crt';
/** When a mesh's credentials expire (RFC 3339), on its Secret: they are renewed at two thirds of their life. */
export const EXPIRES_ANNOTATION = 'edgemesh.p2p.dev/expires-at';
const FIELD_MANAGER = 'edgemesh-operator';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString());
const isNotFound = (error: unknown) => (error as { code?: number }).code === 404;
const path = (namespace: string, resource: string, name: string) =>
  `/api/v1/namespaces/${encodeURIComponent(namespace)}/${resource}/${encodeURIComponent(name)}`;
type Applied = {
  kind: string;
  metadata: { namespace: string; name: string } & Record<string, unknown>;
} & Record<string, unknown>;
const apply = (http: KubeRequests, object: Applied) =>
  http.request(
    'PATCH',
    `${path(object.metadata.namespace, `${object.kind.toLowerCase()}s`, object.metadata.name)}?fieldManager=${FIELD_MANAGER}&force=true`,
    { apiVersion: 'v1', ...object },
    'application/apply-patch+yaml',
  );
async function get<T>(http: KubeRequests, at: string): Promise<T | undefined> {
  try {
    return await http.request<T>('GET', at);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** The line of nats.conf that says which keys made it; a configuration without it, or with others, is made again. */
const keysLine = (keys: NatsAuthKeys) => {
  const pub = natsAuthPublicKeys(keys);
  return `# keys: operator ${pub.operator} system ${pub.system} account ${pub.account}`;
};

/**
 * The bundled NATS's keys and configuration, for an operator that manages its authentication
 * (`EDGEMESH_OPERATOR_NATS_AUTH=<name>`): the keys in Secret `<name>-keys` (made by the first replica
 * to start, never overwritten: a replica that loses the race reads the winner's), the server's
 * configuration in ConfigMap `<name>-config`, which the chart's NATS mounts, written again when it
 * is missing or was made from other keys (`rewritten`: NATS must then be restarted to read it).
 */
export async function ensureNatsAuth(
  http: KubeRequests,
  secrets: SecretApi,
  namespace: string,
  name: string,
  labels: Record<string, string>,
): Promise<{ keys: NatsAuthKeys; rewritten: boolean }> {
  const secretName = `${name}-keys`;
  const read = async () => {
    const data = (await secrets.read(namespace, secretName))?.data;
    return (
      data &&
      checkNatsAuthKeys({
        operator: unb64(data.operator),
        system: unb64(data.system),
        account: unb64(data.account),
      })
    );
  };
  let keys = await read();
  if (!keys) {
    const made = createNatsAuthKeys();
    const created = await secrets.create({
      metadata: { namespace, name: secretName, labels },
      type: 'Opaque',
      data: { operator: b64(made.operator), system: b64(made.system), account: b64(made.account) },
    });
    keys = created ? made : await read();
    if (!keys) throw new Error(`Secret ${namespace}/${secretName} exists but holds no NATS keys`);
  }
  const configName = `${name}-config`;
  const current = await get<{ data?: Record<string, string> }>(
    http,
    path(namespace, 'configmaps', configName),
  );
  const line = keysLine(keys);
  if (current?.data?.[NATS_CONF_KEY]?.includes(line)) return { keys, rewritten: false };
  await apply(http, {
    kind: 'ConfigMap',
    metadata: { namespace, name: configName, labels },
    data: { [NATS_CONF_KEY]: `${line}\n${await natsServerConfig(keys)}` },
  });
  // nats-server reads its configuration when it starts: one made from other keys needs a restart.
  return { keys, rewritten: current !== undefined };
}

/** A mesh's NATS credentials Secret: `edgemesh-<mesh>-nats` in the mesh's namespace. */
export const meshNatsSecretName = (mesh: string) => `edgemesh-${mesh}-nats`;

/** The account that signed a mesh's credentials: credentials of another one (keys made again) are made again. */
export const ACCOUNT_ANNOTATION = 'edgemesh.p2p.dev/nats-account';

/**
 * The mesh's agents' NATS credentials (a user allowed the mesh's own subjects only), in a Secret the
 * mesh owns, with the NATS server's certificate (`caPem`) when it is the bundled one; made again when
 * missing, past two thirds of their life, signed by another account, or with another certificate.
 * Returns the Secret's name and when the credentials are due for renewal. A Secret of that name that
 * the mesh does not own is never overwritten (SecretConflictError).
 */
export async function ensureMeshNatsCredentials(
  http: KubeRequests,
  keys: NatsAuthKeys,
  mesh: { namespace: string; name: string; uid: string; apiVersion: string; id: string },
  ttlSeconds: number,
  labels: Record<string, string>,
  nowMs = Date.now(),
  caPem?: string,
): Promise<{ secretName: string; renewInMs: number }> {
  const name = meshNatsSecretName(mesh.name);
  const current = await get<{
    data?: Record<string, string>;
    metadata?: { annotations?: Record<string, string>; ownerReferences?: { uid?: string }[] };
  }>(http, path(mesh.namespace, 'secrets', name));
  if (current && !current.metadata?.ownerReferences?.some((o) => o.uid === mesh.uid))
    throw new SecretConflictError(
      `Secret ${mesh.namespace}/${name} exists and is not this mesh's: its NATS credentials cannot be kept there`,
    );
  const account = natsAuthPublicKeys(keys).account;
  const annotations = current?.metadata?.annotations ?? {};
  const renewAt = (expiresMs: number) => expiresMs - (ttlSeconds * 1000) / 3;
  const expires = Date.parse(annotations[EXPIRES_ANNOTATION] ?? '');
  if (
    current?.data?.[NATS_CREDS_KEY] !== undefined &&
    annotations[ACCOUNT_ANNOTATION] === account &&
    unb64(current.data[NATS_CA_KEY]) === caPem &&
    renewAt(expires) > nowMs
  )
    return { secretName: name, renewInMs: renewAt(expires) - nowMs };
  const made = await natsUserCredentials(
    keys,
    `${mesh.namespace}/${mesh.name}`,
    meshNatsPermissions(mesh.id),
    ttlSeconds,
    nowMs,
  );
  await apply(http, {
    kind: 'Secret',
    metadata: {
      namespace: mesh.namespace,
      name,
      labels,
      annotations: {
        [EXPIRES_ANNOTATION]: new Date(made.expiresAtMs).toISOString(),
        [ACCOUNT_ANNOTATION]: account,
      },
      ownerReferences: [
        { apiVersion: mesh.apiVersion, kind: 'EdgeMesh', name: mesh.name, uid: mesh.uid, controller: true },
      ],
    },
    type: 'Opaque',
    data: { [NATS_CREDS_KEY]: b64(made.creds), ...(caPem ? { [NATS_CA_KEY]: b64(caPem) } : {}) },
  });
  return { secretName: name, renewInMs: renewAt(made.expiresAtMs) - nowMs };
}
