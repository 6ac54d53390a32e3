#!/usr/bin/env node
/** Writes crds/ from the API definition (operator/src/api/edgemesh.ts). */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CRD_FILE, edgeMeshCrdYaml } from '../src/api/crd.ts';

writeFileSync(CRD_FILE, edgeMeshCrdYaml());
console.log(`wrote ${fileURLToPath(CRD_FILE)}`);
