#!/usr/bin/env node
/** Writes the values table of charts/edgemesh/README.md from values.yaml's `# --` comments. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chartReadme, README_FILE } from '../lib/values-doc.ts';

writeFileSync(README_FILE, chartReadme());
console.log(`wrote ${fileURLToPath(README_FILE)}`);
