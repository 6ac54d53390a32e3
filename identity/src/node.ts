/**
 * What a node needs of its identity, with no ASN.1 library: its key and certificate request, how a
 * certificate names a node, and the checks of a peer's certificate and of a signature (Node's own
 * X.509). The CA (`./ca.ts`, in the package's main entry) reads and signs requests with
 * @peculiar/x509; an agent loads it only when it signs its own certificate with a file-based CA, so
 * an agent whose certificates come from the operator never does (docs/deploy.md, idle memory).
 */
export { createNodeKey, type NodeKey } from './node-key.ts';
export {
  identityOfSan,
  type MeshRef,
  type NodeIdentity,
  nodeSpiffeId,
  parseNodeSpiffeId,
  sameMesh,
  sanUris,
  TRUST_DOMAIN,
} from './spiffe.ts';
export { readPemBundle, UntrustedCertificateError, verifyNodeCertificate } from './verify.ts';
export { NodeSigners, type SignerRefusal } from './signers.ts';
