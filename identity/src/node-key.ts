import { generateKeyPair, sign } from 'node:crypto';
import { promisify } from 'node:util';
import { bitString, der, ECDSA_WITH_SHA256, oid, SEQUENCE, SET, UTF8_STRING } from './der.ts';
import { toPem } from './pem.ts';

/** A node's key pair, made on the node, and a request for a certificate for it. */
export interface NodeKey {
  /** PKCS#8 PEM, for TLS; it never leaves the process that made it. */
  keyPem: string;
  /** A PKCS#10 request signed by the key (proof of possession). What it names is not trusted by the CA. */
  csrPem: string;
}

/*
 * The request is written here, in DER, with Node's own crypto, rather than with @peculiar/x509 (which
 * the CA, reading and signing requests, uses). Its fields are fixed: version 0, a subject of one
 * common name (or none), the key's SubjectPublicKeyInfo as Node exports it, no attributes, ECDSA
 * with SHA-256. Writing them takes the few lines below; the ASN.1 library and what it brings (asn1js, tsyringe,
 * reflect-metadata; 550 KB of source in the agent's bundle) cost an agent 3-4 MiB of memory
 * just loaded, for as long as it runs (docs/deploy.md), and an agent that gets its certificate from
 * the operator needs nothing else of it. Parsing a request, which the CA does with untrusted input,
 * stays with the library.
 */

/** INTEGER 0: the request's version (v1). */
const VERSION_1 = Buffer.of(0x02, 0x01, 0x00);
/** OBJECT IDENTIFIER 2.5.4.3 (id-at-commonName). */
const COMMON_NAME = oid('2.5.4.3');
/** [0] IMPLICIT SET OF Attribute, empty: no attributes (the CA decides the extensions). */
const NO_ATTRIBUTES = Buffer.of(0xa0, 0x00);

/** The longest common name X.520 allows (ub-common-name); counted as the CA counts it (ca.ts). */
const COMMON_NAME_MAX = 64;

const generateEcKey = promisify(generateKeyPair);

/**
 * Makes a fresh ECDSA P-256 key and a certificate request for it, naming `node` as a courtesy (the
 * CA names the node it decides): as the common name where it fits, as the CA's certificate does (1
 * to 64 characters, a well-formed string), else no name at all.
 */
export async function createNodeKey(node: string): Promise<NodeKey> {
  const { privateKey, publicKey } = await generateEcKey('ec', { namedCurve: 'P-256' });
  const named = node.length >= 1 && node.length <= COMMON_NAME_MAX && node.isWellFormed();
  const subject = named
    ? der(SEQUENCE, der(SET, der(SEQUENCE, COMMON_NAME, der(UTF8_STRING, Buffer.from(node, 'utf8')))))
    : der(SEQUENCE);
  const info = der(
    SEQUENCE,
    VERSION_1,
    subject,
    publicKey.export({ type: 'spki', format: 'der' }),
    NO_ATTRIBUTES,
  );
  // Node signs ECDSA in DER (an Ecdsa-Sig-Value), which is what the BIT STRING holds.
  const signature = sign('sha256', info, privateKey);
  const request = der(SEQUENCE, info, ECDSA_WITH_SHA256, bitString(signature));
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString().trimEnd(),
    csrPem: toPem(request, 'CERTIFICATE REQUEST'),
  };
}
