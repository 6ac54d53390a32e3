export * from './api/edgemesh.ts';
export { edgeMeshCrd, edgeMeshCrdYaml } from './api/crd.ts';
export { startOperator, type Operator, type OperatorConfig } from './controller.ts';
