import {
  constants,
  createPrivateKey,
  type KeyObject,
  sign as cryptoSign,
  X509Certificate,
} from 'node:crypto';
import { createSecureContext, type PeerCertificate, type SecureContext } from 'node:tls';
import type { experimental } from '@grpc/grpc-js';
import {
  createNodeKey,
  identityOfSan,
  type MeshRef,
  type NodeIdentity,
  readPemBundle,
  sameMesh,
  verifyNodeCertificate,
} from '@edgemesh/identity/node';
import type { Logger } from '../telemetry/logger.ts';
import type { Clock } from '../time/clock.ts';
import type { Revocations } from './revocations.ts';
import { every } from '../time/every.ts';

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** Signs a certificate for the key of a request: the operator's endpoint, or a file-based CA. */
export interface CertificateIssuer {
  /** What it is, for logs. */
  readonly name: string;
  /** The certificate (PEM) for the key of `csrPem`; the issuer decides whom it names. */
  issue(csrPem: string): Promise<string>;
}

/** Where the mesh's trust bundle (its CA certificates, more than one during a CA rotation) comes from. */
export interface TrustSource {
  /** The bundle now, PEM. */
  read(): Promise<string>;
}

/** A peer's certificate was not this mesh's node identity, or not the node it had to be. */
export class PeerIdentityError extends Error {
  override name = 'PeerIdentityError';
}

export interface NodeCredentialsOptions {
  /** This node's id: the certificate must name it. */
  node: string;
  issuer: CertificateIssuer;
  trust: TrustSource;
  logger: Logger;
  clock: Clock;
  revocations?: Revocations;
  /** Renew at this fraction of the certificate's life (default two thirds). */
  renewAt?: number;
  /** How often the trust bundle is read again for changes (default 5 s). */
  trustRefreshMs?: number;
  /**
   * When a new trust bundle no longer holds the CA of this node's certificate, the renewal comes
   * within this long, at a random point (default 10 s): the mesh's agents see the new bundle
   * within seconds of each other, and the issuer is not asked by all of them at once.
   */
  untrustedRenewSpreadMs?: number;
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;
const UNTRUSTED_RENEW_SPREAD_MS = 10_000;

/**
 * This node's identity: a key made here (never written anywhere), a short-lived certificate for it
 * naming this node, renewed at two thirds of its life with a fresh key, and the mesh's trust bundle,
 * read again as it changes (a CA rotation). It is the certificate provider of both ends of every gRPC
 * connection (grpc-js takes new material for new handshakes; connections already open carry on, so
 * no transfer is interrupted), and it says who a peer's certificate names.
 */
export class NodeCredentials implements experimental.CertificateProvider {
  readonly node: string;
  /** The mesh this node's certificate names: peers must name the same one. */
  readonly mesh: MeshRef;
  readonly #opts: NodeCredentialsOptions;
  #identity: Material;
  /** The bundle as TLS gets it: each certificate parsed, written again one after another. */
  #bundlePem: string;
  /** The bundle as last read, to tell a change. */
  #bundleRead: string;
  #bundle: X509Certificate[];
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #verified = new Map<string, NodeIdentity & { validToMs: number }>();
  readonly #identified = new Map<string, NodeIdentity>();
  /** The TLS context of the current certificate, key and bundle, made when first asked for (secureContext). */
  #context: SecureContext | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  /** A renewal of the timer's under way (one at a time: the timer is set again when it ends). */
  #renewing = false;
  /** The last renewal failed, and its retry is set (with its backoff). */
  #retrying = false;
  #trustTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #renewals = 0;

  private constructor(opts: NodeCredentialsOptions, identity: Material, bundlePem: string, mesh: MeshRef) {
    this.#opts = opts;
    this.node = opts.node;
    this.mesh = mesh;
    this.#identity = identity;
    this.#bundleRead = bundlePem;
    this.#bundle = readPemBundle(bundlePem);
    this.#bundlePem = pemOf(this.#bundle);
  }

  /** Gets this node's first certificate (waits for it: without one the node can talk to nobody). */
  static async start(opts: NodeCredentialsOptions, signal?: AbortSignal): Promise<NodeCredentials> {
    const bundlePem = await opts.trust.read();
    if (readPemBundle(bundlePem).length === 0) throw new Error('the trust bundle holds no certificate');
    for (let delay = RETRY_MIN_MS; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      signal?.throwIfAborted();
      try {
        const identity = await obtain(opts, bundlePem);
        const credentials = new NodeCredentials(opts, identity.material, bundlePem, identity.mesh);
        credentials.#scheduleRenewal();
        credentials.#watchTrust();
        opts.logger.info(
          { issuer: opts.issuer.name, validTo: identity.material.cert.validTo, mesh: identity.mesh },
          'node certificate issued',
        );
        return credentials;
      } catch (error) {
        if (error instanceof PeerIdentityError) throw error; // a wrong certificate will not get better
        opts.logger.warn(
          { issuer: opts.issuer.name, err: (error as Error).message, retryInMs: delay },
          'no node certificate yet',
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  get certPem(): string {
    return this.#identity.certPem;
  }
  get keyPem(): string {
    return this.#identity.keyPem;
  }
  get bundlePem(): string {
    return this.#bundlePem;
  }
  /**
   * A TLS context of this node's certificate and key and the mesh's trust bundle, for connections
   * this node opens (the bulk stream's): one for all of them, made again after a renewal or a change
   * of the bundle. Given `cert`, `key` and `ca` instead, each connection parses them into a context
   * of its own: 0.5 ms more CPU per handshake, and OpenSSL memory that V8 does not see, held until
   * the closed socket is collected (twice the memory growth over 2,000 connections).
   */
  get secureContext(): SecureContext {
    return (this.#context ??= createSecureContext({
      cert: this.#identity.certPem,
      key: this.#identity.keyPem,
      ca: this.#bundlePem,
      // A server's second handshake (TLS 1.2) would bring a certificate nothing checks again.
      secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
    }));
  }
  /**
   * This node's signature over `bytes` with its current key (ECDSA P-256 / SHA-256, DER, base64), and
   * its current certificate (DER, base64) that proves the key is this node's.
   */
  sign(bytes: Uint8Array): { certificate: string; value: string } {
    const { key, certificateB64 } = this.#identity;
    return { certificate: certificateB64, value: cryptoSign('sha256', bytes, key).toString('base64') };
  }

  /** The trust bundle's certificates (a new array whenever it changes). */
  get trust(): readonly X509Certificate[] {
    return this.#bundle;
  }
  /** When the current certificate ends (ms since the epoch). */
  get validToMs(): number {
    return Date.parse(this.#identity.cert.validTo);
  }
  /** How many times the certificate was renewed since start. */
  get renewals(): number {
    return this.#renewals;
  }

  /**
   * The node the certificate a caller presented at its connection's handshake names (the handshake
   * checked it against the trust bundle and its validity): this mesh's, and not revoked now. For
   * every call on a connection: a connection keeps the identity it was opened with (a renewal or a
   * CA rotation interrupts nothing), and servers close connections after MAX_CONNECTION_AGE_MS, so
   * none outlives its certificate by more than that. Throws PeerIdentityError.
   */
  identify(cert: PeerCertificate | undefined): string {
    if (!cert?.raw) throw new PeerIdentityError('no certificate');
    let identity = this.#identified.get(cert.fingerprint256);
    if (!identity) {
      identity = identityOfSan(cert.subjectaltname);
      if (!identity) throw new PeerIdentityError('names no node identity');
      if (this.#identified.size >= 10_000) this.#identified.clear();
      this.#identified.set(cert.fingerprint256, identity);
    }
    if (!sameMesh(identity.mesh, this.mesh))
      throw new PeerIdentityError(
        `a node of mesh ${identity.mesh.namespace}/${identity.mesh.name}, not this one`,
      );
    if (this.#opts.revocations?.revoked(identity.node))
      throw new PeerIdentityError(`${identity.node} is revoked`);
    return identity.node;
  }

  /**
   * The node a peer's certificate names, checked in full (for a handshake): issued by a CA of the
   * trust bundle and valid now, this mesh's, not revoked, and `expected` when given. Throws
   * PeerIdentityError otherwise. Remembered per certificate until it ends.
   */
  authenticate(cert: PeerCertificate | undefined, expected?: string): string {
    if (!cert?.raw) throw new PeerIdentityError('no certificate');
    const now = this.#opts.clock.now();
    const key = cert.fingerprint256;
    let identity = this.#verified.get(key);
    if (!identity || identity.validToMs < now) {
      try {
        const x509 = new X509Certificate(cert.raw);
        identity = { ...verifyNodeCertificate(x509, this.#bundle, now), validToMs: Date.parse(x509.validTo) };
      } catch (error) {
        throw new PeerIdentityError((error as Error).message, { cause: error });
      }
      if (this.#verified.size > 10_000) this.#verified.clear();
      this.#verified.set(key, identity);
    }
    if (!sameMesh(identity.mesh, this.mesh))
      throw new PeerIdentityError(
        `a node of mesh ${identity.mesh.namespace}/${identity.mesh.name}, not this one`,
      );
    if (expected !== undefined && identity.node !== expected)
      throw new PeerIdentityError(`certificate names ${identity.node}, not ${expected}`);
    if (this.#opts.revocations?.revoked(identity.node))
      throw new PeerIdentityError(`${identity.node} is revoked`);
    return identity.node;
  }

  // New listeners hear the current material on the next tick, never during the call: grpc-js's
  // server credentials add a listener before the watcher that must hear it (as its own file provider).
  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    process.nextTick(
      () => this.#caListeners.has(listener) && listener({ caCertificate: Buffer.from(this.#bundlePem) }),
    );
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    process.nextTick(() => this.#identityListeners.has(listener) && listener(this.#identityUpdate()));
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  /** Renews now (a new key and certificate); what the timer does at two thirds of the life. */
  async renew(): Promise<void> {
    const { material } = await obtain(this.#opts, this.#bundlePem, this.mesh);
    if (this.#closed) return;
    // The bundle changed while the issuer answered (a CA replaced): a certificate peers reading the
    // new one would refuse does not replace the current one.
    if (!this.#peersAccept(material.cert))
      throw new Error('the certificate issued is not vouched for by the trust bundle read since');
    this.#identity = material;
    this.#context = undefined;
    this.#renewals++;
    for (const listener of this.#identityListeners) listener(this.#identityUpdate());
    this.#opts.logger.info({ validTo: material.cert.validTo }, 'node certificate renewed');
  }

  /** Reads the trust bundle again; applies it if it changed and still holds a CA. */
  async refreshTrust(): Promise<boolean> {
    const pem = await this.#opts.trust.read();
    if (pem === this.#bundleRead) return false;
    const bundle = readPemBundle(pem);
    if (bundle.length === 0) throw new Error('the new trust bundle holds no certificate');
    this.#bundleRead = pem;
    const bundlePem = pemOf(bundle);
    if (bundlePem === this.#bundlePem) return false; // the same certificates, written otherwise
    this.#bundlePem = bundlePem;
    this.#bundle = bundle;
    this.#context = undefined;
    this.#verified.clear();
    for (const listener of this.#caListeners) listener({ caCertificate: Buffer.from(this.#bundlePem) });
    this.#opts.logger.info({ cas: bundle.length }, 'trust bundle changed');
    // A bundle without this node's CA (the CA Secret deleted, a new CA made after a compromise):
    // peers that read it refuse this node's certificate, so the renewal comes now, not at two
    // thirds of the certificate's life (hours away); the issuer signs with the new CA.
    // A renewal under way is checked against this bundle when it ends (renew), and retried if need
    // be; a retry already set keeps its backoff (bundles that change often would undo it).
    if (!this.#renewing && !this.#retrying && !this.#peersAccept(this.#identity.cert)) {
      const inMs = Math.floor(
        Math.random() * (this.#opts.untrustedRenewSpreadMs ?? UNTRUSTED_RENEW_SPREAD_MS),
      );
      this.#opts.logger.warn(
        { renewInMs: inMs },
        'the trust bundle no longer holds the CA of this node’s certificate: renewing now',
      );
      this.#scheduleRenewal(inMs);
    }
    return true;
  }

  /** Whether peers with the current trust bundle accept `cert`: the check they make of it. */
  #peersAccept(cert: X509Certificate): boolean {
    try {
      verifyNodeCertificate(cert, this.#bundle, this.#opts.clock.now());
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#renewTimer);
    clearInterval(this.#trustTimer);
  }

  #identityUpdate() {
    return {
      certificate: Buffer.from(this.#identity.certPem),
      privateKey: Buffer.from(this.#identity.keyPem),
    };
  }

  /**
   * Sets the one renewal timer (any earlier one cleared): at two thirds of the certificate's life, or
   * in `inMs` (a bundle that no longer vouches for it, a retry). `failedMs`: the wait after the last
   * failure, doubled for the next (1 s to 60 s).
   */
  #scheduleRenewal(inMs?: number, failedMs?: number): void {
    clearTimeout(this.#renewTimer);
    if (this.#closed) return;
    const { cert, obtainedAtMs, renewJitter } = this.#identity;
    // Two thirds of the life it had when it came (its start is backdated for skewed clocks), less up
    // to a twentieth, drawn once per certificate: agents started together do not all renew at once.
    const to = Date.parse(cert.validTo);
    const life = to - obtainedAtMs;
    const at = obtainedAtMs + life * ((this.#opts.renewAt ?? 2 / 3) - renewJitter / 20);
    const delay = inMs ?? Math.max(0, at - this.#opts.clock.now());
    // setTimeout takes at most 2^31-1 ms; a later renewal is rescheduled on the way.
    this.#renewTimer = setTimeout(
      () => {
        if (inMs === undefined && this.#opts.clock.now() < at) return this.#scheduleRenewal();
        this.#renewing = true;
        this.renew().then(
          () => {
            this.#renewing = false;
            this.#retrying = false;
            this.#scheduleRenewal();
          },
          (error: unknown) => {
            this.#renewing = false;
            this.#retrying = true;
            const next = Math.min(Math.max(RETRY_MIN_MS, (failedMs ?? 0) * 2), RETRY_MAX_MS);
            this.#opts.logger.warn(
              { err: (error as Error).message, retryInMs: next, validTo: cert.validTo },
              'node certificate renewal failed',
            );
            this.#scheduleRenewal(next, next);
          },
        );
      },
      Math.min(delay, 2 ** 31 - 1),
    );
    this.#renewTimer.unref();
  }

  #watchTrust(): void {
    this.#trustTimer = every(
      this.#opts.trustRefreshMs ?? 5000,
      () => this.refreshTrust(),
      (error) => this.#opts.logger.warn({ err: error.message }, 'trust bundle not read; the last one stays'),
    );
  }
}

interface Material {
  certPem: string;
  keyPem: string;
  cert: X509Certificate;
  /** The key, parsed once, and the certificate as DER in base64: what every signature carries. */
  key: KeyObject;
  certificateB64: string;
  /** When it was asked for. */
  obtainedAtMs: number;
  /** In [0, 1): how much earlier than two thirds this one is renewed. */
  renewJitter: number;
}

/** A fresh key, its certificate from the issuer, checked: this mesh's CA, this node, valid now. */
async function obtain(
  opts: NodeCredentialsOptions,
  bundlePem: string,
  mesh?: MeshRef,
): Promise<{ material: Material; mesh: MeshRef }> {
  const obtainedAtMs = opts.clock.now();
  const key = await createNodeKey(opts.node);
  const certPem = await opts.issuer.issue(key.csrPem);
  const chain = readPemBundle(certPem);
  const cert = chain[0];
  if (!cert) throw new Error(`${opts.issuer.name} answered with no certificate`);
  let identity: NodeIdentity;
  try {
    identity = verifyNodeCertificate(cert, readPemBundle(bundlePem), opts.clock.now());
  } catch (error) {
    throw new PeerIdentityError(
      `${opts.issuer.name} issued a certificate this node cannot use: ${(error as Error).message}`,
    );
  }
  if (identity.node !== opts.node)
    throw new PeerIdentityError(
      `${opts.issuer.name} issued a certificate for ${identity.node}, not ${opts.node}`,
    );
  if (mesh && !sameMesh(mesh, identity.mesh))
    throw new PeerIdentityError(`${opts.issuer.name} issued a certificate for another mesh`);
  const privateKey = createPrivateKey(key.keyPem);
  if (!cert.checkPrivateKey(privateKey))
    throw new PeerIdentityError(`${opts.issuer.name} issued a certificate for another key`);
  return {
    material: {
      certPem,
      keyPem: key.keyPem,
      cert,
      key: privateKey,
      certificateB64: cert.raw.toString('base64'),
      obtainedAtMs,
      renewJitter: Math.random(),
    },
    mesh: identity.mesh,
  };
}

/**
 * PEM of `certs`, one after another, each ending its line: what this node's checks read, as OpenSSL
 * reads it too. Bundles joined by hand (`cat a.crt b.crt`) from files without a last newline put one
 * certificate's END and the next one's BEGIN on one line; OpenSSL then loads none of them, though
 * readPemBundle finds both, and every handshake failed while every check here passed.
 */
function pemOf(certs: readonly X509Certificate[]): string {
  return certs.map((cert) => cert.toString()).join('');
}
