import 'reflect-metadata';
import { createHash, generateKeyPair, randomBytes, sign, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import {
  bitString,
  der,
  ECDSA_WITH_SHA256,
  name,
  OCTET_STRING,
  oid,
  SEQUENCE,
  time,
  unsignedInteger,
} from './der.ts';
import { fromPem, toPem } from './pem.ts';
import { type MeshRef, nodeSpiffeId } from './spiffe.ts';

// The library takes a WebCrypto provider; Node's is the one (its types are node:crypto's own).
x509.cryptoProvider.set(webcrypto as never);
type CryptoKey = webcrypto.CryptoKey;

/** ECDSA P-256 with SHA-256, for the CA and for node keys (what Go's and Node's TLS both take). */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** A node certificate's default life; agents renew at two thirds of it. */
export const NODE_CERTIFICATE_TTL_MS = 24 * 3600_000;
/** A mesh CA's life; rotation with an overlapping bundle comes before it ends. */
export const CA_TTL_MS = 365 * 24 * 3600_000;
/** Certificates start this long before they are made, for clocks a little behind. */
const BACKDATE_MS = 5 * 60_000;

/** A certificate request that cannot be signed: unreadable, not self-signed by its key, or not ECDSA P-256. */
export class CsrError extends Error {
  override name = 'CsrError';
}

/** When a certificate is valid, as it says (to the second), in ms since the epoch. */
export interface CaValidity {
  validFromMs: number;
  validToMs: number;
}

/** A CA's certificate and private key (PKCS#8), both PEM: what the operator keeps in a Secret. */
export interface CaMaterial {
  certPem: string;
  keyPem: string;
}

/** 16 random bytes, read as a positive integer (RFC 5280: at most 20 octets, non-negative). */
const randomSerial = () => {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // a positive integer
  return bytes;
};
const serial = () => randomSerial().toString('hex');

/**
 * The DER in the PEM block `label` of `text`, which must be an ASN.1 SEQUENCE: @peculiar/x509 reads
 * anything else it is handed as text (PEM, hex or base64 again), which a block should never hold,
 * and some of it with a regular expression whose time grows with the square of the input.
 */
function derOf(text: string, label: string): Buffer {
  const der = fromPem(text, label);
  if (der[0] !== 0x30) throw new RangeError(`the PEM block "${label}" holds no DER (an ASN.1 SEQUENCE)`);
  return der;
}

/** Extensions of a mesh CA's certificate: what createCa writes, RFC 5280's OIDs. */
const BASIC_CONSTRAINTS = oid('2.5.29.19');
const KEY_USAGE = oid('2.5.29.15');
const SUBJECT_KEY_IDENTIFIER = oid('2.5.29.14');
const TRUE = Buffer.of(0x01, 0x01, 0xff);
/** [0] EXPLICIT INTEGER 2: an X.509 v3 certificate. */
const VERSION_3 = Buffer.of(0xa0, 0x03, 0x02, 0x01, 0x02);
/** A P-256 public key's SubjectPublicKeyInfo as Node exports it: 26 bytes of header, then the 65-byte point. */
const P256_SPKI_BYTES = 91;

/**
 * Makes a new CA for one mesh: an ECDSA P-256 key, and a self-signed certificate for it, valid from
 * five minutes before `now` for `ttlMs`, naming O=EdgeMesh, OU=namespace <ns>, CN=mesh <name> CA, with
 * basicConstraints (critical: a CA, path length 0), keyUsage (critical: keyCertSign, cRLSign) and
 * the key's identifier (SHA-1 of the public key, RFC 5280 4.2.1.2 method 1).
 *
 * The certificate is written in DER here, with Node's crypto, rather than by @peculiar/x509 (which
 * reads and signs node requests): its shape is fixed, and the library's building and encoding cost
 * 5.8 of the 6.15 ms of CPU a CA took, the operator's largest cost when many meshes start at once
 * (docs/benchmarks.md, operator). For the names Kubernetes allows, the bytes are the library's (a
 * test compares them) but for the key, the serial and the signature; the library would unescape a
 * name's quotes and backslashes, and write a date before 1950 as UTCTime (RFC 5280: GeneralizedTime).
 */
export async function createCa(
  mesh: MeshRef,
  now = new Date(),
  ttlMs = CA_TTL_MS,
): Promise<CaMaterial & CaValidity> {
  if (!(ttlMs > 0)) throw new RangeError(`a CA lives more than 0 ms, not ${ttlMs}`);
  // The key comes encoded from the key generation's job, off the event loop: exported here, it
  // cost the operator 0.16 ms of its thread a CA (of about 0.5).
  const { privateKey: pkcs8, publicKey: spki } = await derKeyPair();
  if (spki.length !== P256_SPKI_BYTES) throw new Error(`unexpected P-256 public key (${spki.length} bytes)`);
  const subject = name([
    ['2.5.4.10', 'EdgeMesh'],
    ['2.5.4.11', `namespace ${mesh.namespace}`],
    ['2.5.4.3', `mesh ${mesh.name} CA`],
  ]);
  const keyId = createHash('sha1').update(spki.subarray(-65)).digest();
  const validFrom = new Date(now.getTime() - BACKDATE_MS);
  const validTo = new Date(now.getTime() + ttlMs);
  const extension = (id: Buffer, critical: boolean, value: Buffer) =>
    der(SEQUENCE, id, ...(critical ? [TRUE] : []), der(OCTET_STRING, value));
  const tbs = der(
    SEQUENCE,
    VERSION_3,
    unsignedInteger(randomSerial()),
    ECDSA_WITH_SHA256,
    subject,
    der(SEQUENCE, time(validFrom), time(validTo)),
    subject,
    spki,
    der(
      0xa3,
      der(
        SEQUENCE,
        // cA TRUE, pathLenConstraint 0
        extension(BASIC_CONSTRAINTS, true, der(SEQUENCE, TRUE, Buffer.of(0x02, 0x01, 0x00))),
        // keyCertSign (bit 5) and cRLSign (bit 6): one unused bit
        extension(KEY_USAGE, true, Buffer.of(0x03, 0x02, 0x01, 0x06)),
        extension(SUBJECT_KEY_IDENTIFIER, false, der(OCTET_STRING, keyId)),
      ),
    ),
  );
  // Node signs ECDSA in DER (an Ecdsa-Sig-Value), which is what the BIT STRING holds; in its thread pool.
  const signature = await new Promise<Buffer>((resolve, reject) =>
    sign('sha256', tbs, { key: pkcs8, format: 'der', type: 'pkcs8' }, (error, signed) =>
      error ? reject(error) : resolve(signed),
    ),
  );
  const cert = der(SEQUENCE, tbs, ECDSA_WITH_SHA256, bitString(signature));
  return {
    certPem: toPem(cert, 'CERTIFICATE'),
    keyPem: toPem(pkcs8, 'PRIVATE KEY'),
    // As the certificate says them: to the second.
    validFromMs: Math.floor(validFrom.getTime() / 1000) * 1000,
    validToMs: Math.floor(validTo.getTime() / 1000) * 1000,
  };
}

/** A new P-256 key pair, encoded (SubjectPublicKeyInfo and PKCS#8, DER) by the generation's job. */
function derKeyPair(): Promise<{ privateKey: Buffer; publicKey: Buffer }> {
  return new Promise((resolve, reject) =>
    generateKeyPair(
      'ec',
      {
        namedCurve: 'P-256',
        publicKeyEncoding: { type: 'spki', format: 'der' },
        privateKeyEncoding: { type: 'pkcs8', format: 'der' },
      },
      (error, publicKey, privateKey) => (error ? reject(error) : resolve({ privateKey, publicKey })),
    ),
  );
}

/** A mesh's CA, loaded from its material, that signs node certificates. */
export class MeshCa {
  readonly certPem: string;
  readonly #cert: x509.X509Certificate;
  readonly #key: CryptoKey;

  private constructor(cert: x509.X509Certificate, key: CryptoKey) {
    this.#cert = cert;
    this.#key = key;
    this.certPem = toPem(cert.rawData, 'CERTIFICATE');
  }

  /** Loads a CA, refusing a certificate that is not a CA's or a key that is not its own. */
  static async load(material: CaMaterial): Promise<MeshCa> {
    const cert = new x509.X509Certificate(derOf(material.certPem, 'CERTIFICATE'));
    const der = fromPem(material.keyPem, 'PRIVATE KEY');
    const key = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
    const constraints = cert.getExtension(x509.BasicConstraintsExtension);
    const usages = cert.getExtension(x509.KeyUsagesExtension);
    if (!constraints?.ca || !usages || !(usages.usages & x509.KeyUsageFlags.keyCertSign))
      throw new Error('the CA certificate is not a CA (basicConstraints, keyCertSign)');
    const probe = new TextEncoder().encode('edgemesh CA key check');
    const signature = await webcrypto.subtle.sign(ALGORITHM, key, probe);
    const publicKey = await cert.publicKey.export(ALGORITHM, ['verify']);
    if (!(await webcrypto.subtle.verify(ALGORITHM, publicKey as CryptoKey, signature, probe)))
      throw new Error("the CA key is not the CA certificate's");
    return new MeshCa(cert, key);
  }

  /**
   * Reads a certificate request and checks it before anything else is spent on it: PEM, an ECDSA
   * P-256 key, signed with SHA-256 or better by that key (proof of possession).
   */
  static async readRequest(csrPem: unknown): Promise<x509.Pkcs10CertificateRequest> {
    if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----'))
      throw new CsrError('not a PEM certificate request');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(derOf(csrPem, 'CERTIFICATE REQUEST'));
    } catch (error) {
      throw new CsrError(`not a PEM certificate request: ${(error as Error).message}`, { cause: error });
    }
    const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
    if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256')
      throw new CsrError(
        `the key must be ECDSA P-256, not ${algorithm.name} ${algorithm.namedCurve ?? ''}`.trim(),
      );
    const hash = (csr.signatureAlgorithm as { hash?: { name?: string } }).hash?.name;
    if (!hash || !['SHA-256', 'SHA-384', 'SHA-512'].includes(hash))
      throw new CsrError(`the request must be signed with SHA-256 or better, not ${hash ?? 'unknown'}`);
    if (!(await csr.verify())) throw new CsrError('the request is not signed by its own key');
    return csr;
  }

  /**
   * Signs a node certificate for the public key of `csrPem` (checked by readRequest). The identity
   * comes from the caller, never from the request: one URI SAN (nodeSpiffeId), the node as CN where
   * it fits (64 characters), client and server authentication, `ttlMs` of life (at most
   * NODE_CERTIFICATE_TTL_MS), never outside the CA's own validity. A CA not valid now signs nothing.
   */
  async issue(opts: {
    csrPem: unknown;
    mesh: MeshRef;
    node: string;
    ttlMs?: number;
    now?: Date;
  }): Promise<string> {
    const csr = await MeshCa.readRequest(opts.csrPem);
    const now = opts.now ?? new Date();
    if (now < this.#cert.notBefore || now >= this.#cert.notAfter)
      throw new Error(
        `the mesh CA is not valid now (${this.#cert.notBefore.toISOString()} to ${this.#cert.notAfter.toISOString()})`,
      );
    const ttl = opts.ttlMs ?? NODE_CERTIFICATE_TTL_MS;
    if (!Number.isFinite(ttl) || ttl <= 0 || ttl > NODE_CERTIFICATE_TTL_MS)
      throw new RangeError(
        `a node certificate lives more than 0 and at most ${NODE_CERTIFICATE_TTL_MS} ms, not ${ttl}`,
      );
    const fitsCn = opts.node.length <= 64;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: fitsCn ? [{ CN: [opts.node] }] : [],
      issuer: this.#cert.subjectName, // its parsed name: the same bytes (a string would be read again)
      notBefore: new Date(Math.max(now.getTime() - BACKDATE_MS, this.#cert.notBefore.getTime())),
      notAfter: new Date(Math.min(now.getTime() + ttl, this.#cert.notAfter.getTime())),
      signingKey: this.#key,
      publicKey: csr.publicKey,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        // Critical only when the subject is empty (RFC 5280, 4.2.1.6).
        new x509.SubjectAlternativeNameExtension(
          [{ type: 'url', value: nodeSpiffeId(opts.mesh, opts.node) }],
          !fitsCn,
        ),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert),
      ],
    });
    return toPem(cert.rawData, 'CERTIFICATE');
  }
}

/**
 * A self-signed serving certificate for `dnsNames` (the operator's issuance endpoint): clients trust
 * exactly this certificate (it is its own trust anchor), handed to them with the mesh's trust bundle.
 */
export async function createServingCertificate(
  dnsNames: readonly string[],
  now = new Date(),
  ttlMs = CA_TTL_MS,
): Promise<CaMaterial> {
  if (dnsNames.length === 0) throw new RangeError('a serving certificate names at least one host');
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ O: ['EdgeMesh'] }, { CN: [dnsNames[0]!.slice(0, 64)] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + ttlMs),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: 'dns' as const, value }))),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: toPem(cert.rawData, 'CERTIFICATE'), keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}
