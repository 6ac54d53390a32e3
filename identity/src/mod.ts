/** Node identity shared by the operator (which issues it) and the agent (which holds and checks it). */
export {
  CA_TTL_MS,
  type CaMaterial,
  createCa,
  createServingCertificate,
  CsrError,
  MeshCa,
  NODE_CERTIFICATE_TTL_MS,
} from './ca.ts';
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
