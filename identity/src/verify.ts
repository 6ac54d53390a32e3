import { X509Certificate } from 'node:crypto';
import { identityOfSan, type NodeIdentity } from './spiffe.ts';

/** The certificates of a PEM bundle (a trust bundle, or a chain). Throws on anything unreadable. */
export function readPemBundle(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => new X509Certificate(block));
}

/** Why a node certificate was not accepted. */
export class UntrustedCertificateError extends Error {
  override name = 'UntrustedCertificateError';
}

/**
 * Checks a node certificate against a trust bundle (any CA in it, as during a CA rotation): issued
 * and signed by one of them, that CA valid at `now`, the certificate valid at `now`, not a CA, and
 * naming exactly one node identity. Returns it. With Node's own X.509 (no ASN.1 library), so it is
 * cheap enough for every signed message.
 */
export function verifyNodeCertificate(
  cert: X509Certificate,
  bundle: readonly X509Certificate[],
  now = Date.now(),
): NodeIdentity {
  if (cert.ca) throw new UntrustedCertificateError('a CA certificate is not a node identity');
  if (!(Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo)))
    throw new UntrustedCertificateError(`not valid now (${cert.validFrom} to ${cert.validTo})`);
  const issuer = bundle.find(
    (ca) =>
      cert.checkIssued(ca) &&
      Date.parse(ca.validFrom) <= now &&
      now <= Date.parse(ca.validTo) &&
      cert.verify(ca.publicKey),
  );
  if (!issuer) throw new UntrustedCertificateError('not issued by this mesh’s CA');
  const identity = identityOfSan(cert.subjectAltName);
  if (!identity) throw new UntrustedCertificateError('names no node identity');
  return identity;
}
