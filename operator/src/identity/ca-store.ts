import {
  type CaMaterial,
  createCa,
  createServingCertificate,
  MeshCa,
  type MeshRef,
} from '@edgemesh/identity';

/** The Secret keys of a CA: its certificate and key, and the trust bundle agents are given. */
export const CA_CERT_KEY = 'ca.crt';
export const CA_KEY_KEY = 'ca.key';
export const TRUST_BUNDLE_KEY = 'trust.crt';

/** A mesh's CA Secret: `edgemesh-<mesh>-ca` in the mesh's namespace. */
export const caSecretName = (mesh: string) => `edgemesh-${mesh}-ca`;

/** What the CA store needs from the API server: read a Secret, and create one (409 when it exists). */
export interface SecretApi {
  /** The Secret's data (base64 values), or undefined when there is none. */
  read(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /** Creates it; resolves false when it already exists. */
  create(secret: {
    metadata: {
      namespace: string;
      name: string;
      labels?: Record<string, string>;
      ownerReferences?: unknown[];
    };
    type: string;
    data: Record<string, string>;
  }): Promise<boolean>;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');

/** The material a CA Secret holds, once it is whole. */
export interface StoredCa extends CaMaterial {
  /** The CA certificates agents trust: this CA's, and during a rotation the one before it. */
  trustPem: string;
}

function fromData(data: Record<string, string> | undefined): StoredCa | undefined {
  const certPem = unb64(data?.[CA_CERT_KEY]);
  const keyPem = unb64(data?.[CA_KEY_KEY]);
  if (!certPem || !keyPem) return undefined;
  return { certPem, keyPem, trustPem: unb64(data?.[TRUST_BUNDLE_KEY]) ?? certPem };
}

/**
 * Makes the mesh's CA when it has none (create, never overwrite: a second replica or a retry that
 * loses the race reads the winner's), and returns it. The Secret is owned by the mesh, so it goes
 * when the mesh does.
 */
export async function ensureMeshCa(
  api: SecretApi,
  mesh: MeshRef & { uid: string; apiVersion: string },
  labels: Record<string, string>,
): Promise<StoredCa> {
  const name = caSecretName(mesh.name);
  const existing = fromData(await api.read(mesh.namespace, name));
  if (existing) return existing;
  const made = await createCa(mesh);
  const created = await api.create({
    metadata: {
      namespace: mesh.namespace,
      name,
      labels,
      ownerReferences: [
        { apiVersion: mesh.apiVersion, kind: 'EdgeMesh', name: mesh.name, uid: mesh.uid, controller: true },
      ],
    },
    type: 'Opaque',
    data: {
      [CA_CERT_KEY]: b64(made.certPem),
      [CA_KEY_KEY]: b64(made.keyPem),
      [TRUST_BUNDLE_KEY]: b64(made.certPem),
    },
  });
  if (created) return { ...made, trustPem: made.certPem };
  const winner = fromData(await api.read(mesh.namespace, name));
  if (!winner) throw new Error(`Secret ${mesh.namespace}/${name} exists but holds no CA`);
  return winner;
}

/** The mesh's CA, to sign with; undefined when it has none yet. */
export async function loadMeshCa(api: SecretApi, mesh: MeshRef): Promise<MeshCa | undefined> {
  const stored = fromData(await api.read(mesh.namespace, caSecretName(mesh.name)));
  return stored && MeshCa.load(stored);
}

/**
 * The issuance endpoint's serving certificate, kept in Secret `name` of the operator's namespace
 * (made by whichever replica starts first; the others read it).
 */
export async function ensureServingCertificate(
  api: SecretApi,
  namespace: string,
  name: string,
  dnsNames: readonly string[],
): Promise<CaMaterial> {
  const read = async () => {
    const data = await api.read(namespace, name);
    const certPem = unb64(data?.['tls.crt']);
    const keyPem = unb64(data?.['tls.key']);
    return certPem && keyPem ? { certPem, keyPem } : undefined;
  };
  const existing = await read();
  if (existing) return existing;
  const made = await createServingCertificate(dnsNames);
  const created = await api.create({
    metadata: { namespace, name },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': b64(made.certPem), 'tls.key': b64(made.keyPem) },
  });
  if (created) return made;
  const winner = await read();
  if (!winner) throw new Error(`Secret ${namespace}/${name} exists but holds no certificate`);
  return winner;
}

/** SecretApi over the API server. */
export function kubeSecretApi(http: {
  request<T>(method: string, path: string, body?: unknown): Promise<T>;
}): SecretApi {
  const path = (namespace: string) => `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`;
  return {
    async read(namespace, name) {
      try {
        const secret = await http.request<{ data?: Record<string, string> }>(
          'GET',
          `${path(namespace)}/${encodeURIComponent(name)}`,
        );
        return secret.data ?? {};
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
    async create(secret) {
      try {
        await http.request('POST', path(secret.metadata.namespace), {
          apiVersion: 'v1',
          kind: 'Secret',
          ...secret,
        });
        return true;
      } catch (error) {
        if ((error as { code?: number }).code === 409) return false;
        throw error;
      }
    },
  };
}
