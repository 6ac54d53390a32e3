/**
 * Bundles the agent and the operator for the container image: `dist/agent.mjs` and
 * `dist/operator.mjs` (with their shared and lazily loaded chunks) and the peer protocol's .proto.
 *
 * Why bundle, when Node 24 runs the TypeScript sources as they are: the image then needs no
 * node_modules at all, and an idle agent is smaller. Type stripping and loading a few hundred
 * separate modules cost about 33 MiB of RSS in an idle agent; see docs/deploy.md for the figures.
 * Identifiers are not minified, so stack traces keep their function names.
 *
 * Usage: node scripts/build.ts [OUT_DIR]   (default: dist)
 */
import { cpSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
const out = resolve(process.argv[2] ?? join(root, 'dist'));

rmSync(out, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: { agent: 'agent/src/main.ts', operator: 'operator/src/main.ts' },
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'linked',
  logLevel: 'warning',
  metafile: true,
  // Some bundled CommonJS packages call require(); give every ES module chunk one.
  banner: {
    js: "import { createRequire as __edgemeshRequire } from 'node:module'; const require = __edgemeshRequire(import.meta.url);",
  },
});
// The peer service reads its .proto at run time; the bundle looks for it beside itself.
cpSync(join(root, 'agent', 'proto'), join(out, 'proto'), { recursive: true });

const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
process.stdout.write(
  `build: ${out}: ${Object.keys(result.metafile.outputs).length} files, ${(bytes / 1048576).toFixed(1)} MiB\n`,
);
