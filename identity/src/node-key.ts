import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { toPem } from './pem.ts';

x509.cryptoProvider.set(webcrypto as never);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A node's key pair, made on the node, and a request for a certificate for it. */
export interface NodeKey {
  /** PKCS#8 PEM, for TLS; it never leaves the process that made it. */
  keyPem: string;
  /** A PKCS#10 request signed by the key (proof of possession). What it names is not trusted by the CA. */
  csrPem: string;
}

/** Makes a fresh ECDSA P-256 key and a certificate request for it, naming `node` as a courtesy. */
export async function createNodeKey(node: string): Promise<NodeKey> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [node.slice(0, 64)] }],
    keys: keys as never,
    signingAlgorithm: ALGORITHM,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keyPem: toPem(pkcs8, 'PRIVATE KEY'), csrPem: toPem(csr.rawData, 'CERTIFICATE REQUEST') };
}
