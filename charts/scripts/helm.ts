#!/usr/bin/env node
/** Runs the helm the tests use (charts/lib/helm.ts, from an npm package) with these arguments. */
import { spawnSync } from 'node:child_process';
import { helm } from '../lib/helm.ts';

const result = spawnSync(helm(), process.argv.slice(2), { stdio: 'inherit' });
process.exit(result.status ?? 1);
