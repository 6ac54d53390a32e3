#!/usr/bin/env node
/** Writes manifests/install.yaml: the chart rendered with its defaults, CRDs included, for one kubectl apply. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { installYaml, INSTALL_FILE } from '../lib/install.ts';

writeFileSync(INSTALL_FILE, installYaml());
console.log(`wrote ${fileURLToPath(INSTALL_FILE)}`);
