import { X509Certificate } from 'node:crypto';
import {
  type CaMaterial,
  type CaValidity,
  createCa,
  createServingCertificate,
  MeshCa,
  type MeshRef,
  readPemBundle,
} from '@edgemesh/identity';

/** The Secret keys of a CA: its certificate and key, and the trust bundle agents are given. */
export const CA_CERT_KEY = 'ca.crt';
export const CA_KEY_KEY = 'ca.key';
export const TRUST_BUNDLE_KEY = 'trust.crt';

/** A mesh's CA Secret: `edgemesh-<mesh>-ca` in the mesh's namespace. */
export const caSecretName = (mesh: string) => `edgemesh-${mesh}-ca`;

/** A Secret as read: its data (base64 values) and the uids its owner references name. */
export interface StoredSecret {
  data: Record<string, string>;
  ownerUids: readonly string[];
}

/**
 * A Secret the operator keeps for a mesh exists under its name and the mesh does not own it (one a
 * user made, or one of an earlier mesh of that name, which the garbage collector is about to delete
 * with it): the operator neither uses nor overwrites it, and looks again later.
 */
export class SecretConflictError extends Error {
  override name = 'SecretConflictError';
}

/** What the CA store needs from the API server: read a Secret, create one (409 when it exists), change its data. */
export interface SecretApi {
  /** The Secret, or undefined when there is none. */
  read(namespace: string, name: string): Promise<StoredSecret | undefined>;
  /** Sets (base64 values) and removes (null) keys of an existing Secret's data: a merge patch. */
  patchData?(namespace: string, name: string, data: Record<string, string | null>): Promise<void>;
  /** Sets the owner references of an existing Secret (a merge patch: the list replaced). */
  setOwners?(namespace: string, name: string, ownerReferences: unknown[]): Promise<void>;
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

/**
 * `api`, reading each Secret at most once (one reconcile's view): ensureMeshCa and advanceCaRotation
 * both read the CA Secret, which cost two GETs per reconcile. A patch through it forgets the Secret,
 * so what it reads after its own patch is the API server's; a create it made remembers what it
 * stored (a new mesh's CA is not read back).
 */
export function readingOnce(api: SecretApi): SecretApi {
  const reads = new Map<string, Promise<StoredSecret | undefined>>();
  const id = (namespace: string, name: string) => `${namespace}/${name}`;
  return {
    read: (namespace, name) => {
      let read = reads.get(id(namespace, name));
      if (!read) {
        read = api.read(namespace, name);
        reads.set(id(namespace, name), read);
        read.catch(() => reads.delete(id(namespace, name))); // a failed read is not remembered
      }
      return read;
    },
    create: async (secret) => {
      const key = id(secret.metadata.namespace, secret.metadata.name);
      reads.delete(key);
      const created = await api.create(secret);
      // What a create stored is what it sent: read back, it would cost a GET per new mesh.
      if (created) reads.set(key, Promise.resolve(asStored(secret)));
      return created;
    },
    ...(api.setOwners
      ? {
          setOwners: async (namespace: string, name: string, ownerReferences: unknown[]) => {
            reads.delete(id(namespace, name));
            await api.setOwners!(namespace, name, ownerReferences);
          },
        }
      : {}),
    ...(api.patchData
      ? {
          patchData: async (namespace: string, name: string, data: Record<string, string | null>) => {
            reads.delete(id(namespace, name));
            await api.patchData!(namespace, name, data);
          },
        }
      : {}),
  };
}

/** The uids owner references name (whatever the field holds: one without a string uid names none). */
function uidsOf(ownerReferences: unknown): string[] {
  if (!Array.isArray(ownerReferences)) return [];
  return ownerReferences.flatMap((o: { uid?: unknown } | null) =>
    typeof o?.uid === 'string' ? [o.uid] : [],
  );
}

/** What the API server holds after `secret`'s create. */
function asStored(secret: Parameters<SecretApi['create']>[0]): StoredSecret {
  return { data: { ...secret.data }, ownerUids: uidsOf(secret.metadata.ownerReferences) };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');

/** The material a CA Secret holds, once it is whole. */
export interface StoredCa extends CaMaterial, Partial<CaValidity> {
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
 * Whether a mesh whose uid is `uid` may take the CA `secret` holds: one it owns, or one nobody owns
 * (left by `kubectl delete --cascade=orphan`, or made by hand). One owned only by others is an
 * earlier mesh's of the same name, which the garbage collector deletes with it. (Owner references
 * prove nothing: whoever may create Secrets in the namespace writes any; see docs/security.md.)
 */
function mayTake(secret: StoredSecret, uid: string): boolean {
  return secret.ownerUids.length === 0 || secret.ownerUids.includes(uid);
}

/**
 * Makes the mesh's CA when it has none (create, never overwrite: a second replica or a retry that
 * loses the race reads the winner's), and returns it. The Secret is owned by the mesh, so it goes
 * when the mesh does; one of that name owned by others only is a SecretConflictError (an earlier
 * mesh of the same name: its CA would be adopted, then deleted with it by the garbage collector);
 * one nobody owns is taken, and made the mesh's (its owner reference set: it goes with the mesh).
 * `likelyNew` (a mesh no operator has written a status for): the create is tried without reading
 * first, which spares a new mesh a request; a CA that exists after all is read then, at the cost of
 * a key pair made for nothing.
 */
export async function ensureMeshCa(
  api: SecretApi,
  mesh: MeshRef & { uid: string; apiVersion: string },
  labels: Record<string, string>,
  { likelyNew = false }: { likelyNew?: boolean } = {},
): Promise<StoredCa> {
  const name = caSecretName(mesh.name);
  const owner = {
    apiVersion: mesh.apiVersion,
    kind: 'EdgeMesh',
    name: mesh.name,
    uid: mesh.uid,
    controller: true,
  };
  /** The CA the Secret holds if the mesh may take it; one nobody owned becomes the mesh's. */
  const take = async (secret: StoredSecret | undefined): Promise<StoredCa | undefined> => {
    if (secret && !mayTake(secret, mesh.uid)) {
      // The uids are whatever the Secret's maker wrote: a few, cut short, in a condition's message.
      const owners = secret.ownerUids.slice(0, 3).map((uid) => uid.slice(0, 64));
      throw new SecretConflictError(
        `Secret ${mesh.namespace}/${name} belongs to another object (uid ${owners.join(', ')}${secret.ownerUids.length > 3 ? ', ...' : ''}; a mesh of this name deleted before this one, whose Secrets the garbage collector deletes): its CA is not used, and this mesh makes its own once it is gone (or delete it)`,
      );
    }
    const ca = fromData(secret?.data);
    if (ca && secret!.ownerUids.length === 0) await api.setOwners?.(mesh.namespace, name, [owner]);
    return ca;
  };
  if (!likelyNew) {
    const existing = await take(await api.read(mesh.namespace, name));
    if (existing) return existing;
  }
  const made = await createCa(mesh);
  let created: boolean;
  try {
    created = await api.create({
      metadata: {
        namespace: mesh.namespace,
        name,
        labels,
        ownerReferences: [owner],
      },
      type: 'Opaque',
      data: {
        [CA_CERT_KEY]: b64(made.certPem),
        [CA_KEY_KEY]: b64(made.keyPem),
        [TRUST_BUNDLE_KEY]: b64(made.certPem),
      },
    });
  } catch (error) {
    // Not read first, a create refused at admission (a quota on Secrets, a policy) may be for one
    // that exists: the CA there is taken, the refusal thrown only when there is none.
    if (!likelyNew || (error as { code?: number }).code !== 403) throw error;
    const there = await take(await api.read(mesh.namespace, name));
    if (there) return there;
    throw error;
  }
  if (created) return { ...made, trustPem: made.certPem };
  const winner = await take(await api.read(mesh.namespace, name));
  if (!winner) throw new Error(`Secret ${mesh.namespace}/${name} exists but holds no CA`);
  return winner;
}

/**
 * The mesh's CA, to sign with; undefined when it has none yet. Given the mesh's uid, a Secret it
 * may not take (mayTake: an earlier mesh's of the same name) is a SecretConflictError.
 */
export async function loadMeshCa(
  api: SecretApi,
  mesh: MeshRef & { uid?: string | undefined },
): Promise<MeshCa | undefined> {
  const secret = await api.read(mesh.namespace, caSecretName(mesh.name));
  if (secret && mesh.uid !== undefined && !mayTake(secret, mesh.uid))
    throw new SecretConflictError(
      `Secret ${mesh.namespace}/${caSecretName(mesh.name)} belongs to another object (a mesh of this name deleted before this one): not signed with`,
    );
  const stored = fromData(secret?.data);
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
    const data = (await api.read(namespace, name))?.data;
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

/** On an EdgeMesh: any new value starts a rotation of its CA (the value is remembered, not read). */
export const ROTATE_CA_ANNOTATION = 'edgemesh.p2p.dev/rotate-ca';
/** The Secret's keys of a rotation in progress: the next CA, the one before it, the state. */
const NEXT_CERT_KEY = 'next.crt';
const NEXT_KEY_KEY = 'next.key';
const PREVIOUS_CERT_KEY = 'previous.crt';
const ROTATION_KEY = 'rotation.json';

/**
 * How long each step of a CA rotation lasts: the new CA is trusted by every agent before anything
 * is signed with it (`propagateMs`, counted from when the trust ConfigMap carries it: the kubelet's
 * refresh, then the agents' 5 s re-read), and the rotation ends once every certificate the old CA
 * signed has ended (`retireMs`: the longest node certificate, 24 h, and an hour for clocks).
 */
export interface CaRotationTiming {
  propagateMs: number;
  retireMs: number;
}
export const CA_ROTATION_TIMING: CaRotationTiming = {
  propagateMs: 10 * 60_000,
  retireMs: 25 * 3600_000,
};
/** How often a rotation looks again whether the trust ConfigMap carries the new CA yet. */
const DELIVERY_CHECK_MS = 30_000;

/** Where a rotation stands: what this call did (for an Event), and when to look again. */
export interface CaRotationStep {
  ca: StoredCa;
  /**
   * What changed now: 'started' (a new CA is trusted), 'signing' (it signs), 'finished' (no
   * certificate of the old CA is alive any more).
   */
  did?: 'started' | 'signing' | 'finished';
  /** Why it started: 'requested' (the annotation) or 'expiring' (a third of the CA's life left). */
  why?: 'requested' | 'expiring';
  /** When the next step is due, from now. */
  nextStepInMs?: number;
}

type RotationState = { phase: 'trusting' | 'signing'; sinceMs: number; deliveredAtMs?: number };

/** When the CA's certificate is valid: as createCa said it (a CA made in this reconcile), else as it reads. */
function validityOf(ca: StoredCa): CaValidity {
  if (ca.validFromMs !== undefined && ca.validToMs !== undefined)
    return { validFromMs: ca.validFromMs, validToMs: ca.validToMs };
  // Parsed, this cost 0.1 ms of the operator's thread a new mesh, a fifth of its CA's cost.
  const cert = new X509Certificate(ca.certPem);
  return { validFromMs: Date.parse(cert.validFrom), validToMs: Date.parse(cert.validTo) };
}

/** The CA certificates of a bundle that are still valid at `nowMs`, as PEM. */
function unexpired(bundlePem: string, nowMs: number): string {
  return readPemBundle(bundlePem)
    .filter((ca) => Date.parse(ca.validTo) > nowMs)
    .map((ca) => ca.toString().trim())
    .join('\n');
}

/**
 * Moves the mesh CA's rotation on, one step at a time, with an overlapping trust bundle:
 * (1) a new CA is made and added to the bundle; the old one still signs;
 * (2) once the trust ConfigMap has carried the new CA for `propagateMs` (`delivered` says whether it
 *     does), the new one signs certificates and revocation lists, and the old key is deleted;
 * (3) after `retireMs`, when no certificate of the old CA is alive, the rotation ends.
 * The old CA stays in the bundle until it expires itself, so that versions and purges it vouched
 * for stay verifiable (a signature is checked against the certificates of its own date); with its
 * key gone it signs nothing more. A rotation starts when `requested` (the mesh's annotation)
 * differs from the last one acted on, or when a third of the CA's life is left; one asked for while
 * another runs starts after it. Agents renew onto the new CA at their usual two thirds; nothing is
 * interrupted (agent/test/rotation.test.ts).
 */
export async function advanceCaRotation(
  api: SecretApi,
  mesh: MeshRef,
  stored: StoredCa,
  requested: string | undefined,
  opts: {
    nowMs?: number;
    timing?: CaRotationTiming;
    /** Whether the trust agents read carries `certPem` now. */
    delivered?: (certPem: string) => Promise<boolean>;
  } = {},
): Promise<CaRotationStep> {
  const nowMs = opts.nowMs ?? Date.now();
  const timing = opts.timing ?? CA_ROTATION_TIMING;
  if (!api.patchData) return { ca: stored };
  const name = caSecretName(mesh.name);
  const data = (await api.read(mesh.namespace, name))?.data ?? {};
  const state = JSON.parse(unb64(data[ROTATION_KEY]) ?? 'null') as RotationState | null;
  const patch = (changes: Record<string, string | null>) => api.patchData!(mesh.namespace, name, changes);
  if (!state) {
    const { validFromMs, validToMs } = validityOf(stored);
    const expiring = validToMs - nowMs < (validToMs - validFromMs) / 3;
    const asked = requested !== undefined && requested !== unb64(data['rotation-requested']);
    if (!asked && !expiring) return { ca: stored };
    const next = await createCa(mesh, new Date(nowMs));
    const trustPem = `${unexpired(stored.trustPem, nowMs)}\n${next.certPem.trim()}\n`;
    await patch({
      [NEXT_CERT_KEY]: b64(next.certPem),
      [NEXT_KEY_KEY]: b64(next.keyPem),
      [TRUST_BUNDLE_KEY]: b64(trustPem),
      [ROTATION_KEY]: b64(JSON.stringify({ phase: 'trusting', sinceMs: nowMs })),
      ...(requested === undefined ? {} : { 'rotation-requested': b64(requested) }),
    });
    return {
      ca: { ...stored, trustPem },
      did: 'started',
      why: asked ? 'requested' : 'expiring',
      nextStepInMs: Math.min(DELIVERY_CHECK_MS, timing.propagateMs),
    };
  }
  if (state.phase === 'trusting') {
    const certPem = unb64(data[NEXT_CERT_KEY]);
    const keyPem = unb64(data[NEXT_KEY_KEY]);
    if (!certPem || !keyPem)
      throw new Error(`Secret ${mesh.namespace}/${name}: a rotation without its next CA`);
    if (state.deliveredAtMs === undefined) {
      // The clock of the propagation starts when the agents' ConfigMap carries the new CA.
      if (!(await (opts.delivered?.(certPem) ?? Promise.resolve(true))))
        return { ca: stored, nextStepInMs: Math.min(DELIVERY_CHECK_MS, timing.propagateMs) };
      await patch({ [ROTATION_KEY]: b64(JSON.stringify({ ...state, deliveredAtMs: nowMs })) });
      return { ca: stored, nextStepInMs: timing.propagateMs };
    }
    const due = state.deliveredAtMs + timing.propagateMs - nowMs;
    if (due > 0) return { ca: stored, nextStepInMs: due };
    await patch({
      [CA_CERT_KEY]: b64(certPem),
      [CA_KEY_KEY]: b64(keyPem),
      [PREVIOUS_CERT_KEY]: b64(stored.certPem),
      [NEXT_CERT_KEY]: null,
      [NEXT_KEY_KEY]: null,
      [ROTATION_KEY]: b64(JSON.stringify({ phase: 'signing', sinceMs: nowMs })),
    });
    return {
      ca: { certPem, keyPem, trustPem: stored.trustPem },
      did: 'signing',
      nextStepInMs: timing.retireMs,
    };
  }
  const due = state.sinceMs + timing.retireMs - nowMs;
  if (due > 0) return { ca: stored, nextStepInMs: due };
  const trustPem = `${unexpired(stored.trustPem, nowMs)}\n`;
  await patch({ [TRUST_BUNDLE_KEY]: b64(trustPem), [PREVIOUS_CERT_KEY]: null, [ROTATION_KEY]: null });
  return { ca: { ...stored, trustPem }, did: 'finished' };
}

/** SecretApi over the API server. */
export function kubeSecretApi(http: {
  request<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T>;
  send(method: string, path: string, body?: unknown, contentType?: string): Promise<void>;
}): SecretApi {
  const path = (namespace: string) => `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`;
  return {
    async read(namespace, name) {
      try {
        const secret = await http.request<{
          data?: Record<string, string>;
          metadata?: { ownerReferences?: { uid?: unknown }[] };
        }>('GET', `${path(namespace)}/${encodeURIComponent(name)}`);
        return { data: secret.data ?? {}, ownerUids: uidsOf(secret.metadata?.ownerReferences) };
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
    async setOwners(namespace, name, ownerReferences) {
      await http.send(
        'PATCH',
        `${path(namespace)}/${encodeURIComponent(name)}`,
        { metadata: { ownerReferences } },
        'application/merge-patch+json',
      );
    },
    async patchData(namespace, name, data) {
      await http.send(
        'PATCH',
        `${path(namespace)}/${encodeURIComponent(name)}`,
        { data },
        'application/merge-patch+json',
      );
    },
    async create(secret) {
      try {
        await http.send('POST', path(secret.metadata.namespace), {
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
