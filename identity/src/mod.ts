/** Node identity shared by the operator (which issues it) and the agent (which holds and checks it). */
export {
  CA_TTL_MS,
  type CaMaterial,
  type CaValidity,
  createCa,
  createServingCertificate,
  CsrError,
  MeshCa,
  NODE_CERTIFICATE_TTL_MS,
} from './ca.ts';
export * from './node.ts';
