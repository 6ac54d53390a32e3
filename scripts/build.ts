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
import { isBuiltin } from 'node:module';
import { join, resolve } from 'node:path';
import { build, type Plugin } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
const out = resolve(process.argv[2] ?? join(root, 'dist'));

/**
 * Node's built-in modules reached through `require` rather than an ES `import`. Importing a
 * built-in as an ES module makes Node build its namespace, which reads every property, getters
 * included: `node:http`'s `WebSocket` getter then loads Node's copy of undici (745 KB of source,
 * compiled), `node:process`'s `stdin` opens standard input, `node:tls`'s `rootCertificates` parses
 * every bundled root. The agent uses none of them; they cost an idle agent about 1.6 MiB
 * (docs/deploy.md). `require` returns the same module object without touching its getters; the
 * bundle's banner gives every chunk a `require`, and only `node:module` (for it) stays a static
 * import. Dynamic imports (`await import('http')`) are left as they are: they run only when reached.
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(b) {
    b.onResolve({ filter: /^[a-z_:/0-9]+$/ }, (args) => {
      if (!isBuiltin(args.path)) return undefined;
      // A dynamic import stays one: it runs only when reached, and its caller may want named
      // exports (the OTLP exporter's `(await import('http')).request`), which a CommonJS stand-in
      // would not give it.
      if (args.kind === 'require-call' || args.kind === 'dynamic-import')
        return { path: args.path, external: true };
      return { path: args.path, namespace: 'builtin-by-require' };
    });
    b.onLoad({ filter: /.*/, namespace: 'builtin-by-require' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

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
  plugins: [builtinsByRequire],
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
