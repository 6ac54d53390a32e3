#!/usr/bin/env node
/**
 * Packages the chart for a release (.github/workflows/release.yaml):
 *   node charts/scripts/package-chart.ts --image registry.example.com/acme/edgemesh --version 1.2.3 [--out dist/charts]
 * The package's version and appVersion are --version, its default image --image:--version.
 */
import { parseArgs } from 'node:util';
import { packageChart } from '../lib/package.ts';

const { values } = parseArgs({
  options: {
    image: { type: 'string' },
    version: { type: 'string' },
    out: { type: 'string', default: 'dist/charts' },
  },
});
if (!values.image || !values.version) {
  process.stderr.write('usage: package-chart.ts --image REPOSITORY --version X.Y.Z [--out DIR]\n');
  process.exit(2);
}
console.log(packageChart({ image: values.image, version: values.version, out: values.out }));
