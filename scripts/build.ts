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
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { join, resolve } from 'node:path';
import { build, type Plugin } from 'esbuild';
import protobuf from 'protobufjs';

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
/**
 * Two dependencies left out of the bundles. long.js, which protobufjs loads if it can: evaluating it
 * compiles a WebAssembly module (its 64-bit multiply and divide), which pages in V8's WebAssembly
 * compiler for good: about 0.7 MiB of an idle agent's RSS (docs/deploy.md). The agent
 * never needs Long objects: it loads the peer protocol with `longs: Number` (transport/
 * peer-service.ts), and protobufjs, finding no Long, reads and writes 64-bit fields as numbers
 * itself (`LongBits`), which is what `longs: Number` gives with Long too for every value under 2^63
 * in size (the agent's are times and counts). So `long` resolves to an empty module, which protobufjs
 * takes for "no Long" (it checks `Long.isLong`). And @grpc/proto-loader, which grpc-js requires only
 * to serve channelz and ORCA (neither of which the agent or the operator serves) and, as a client,
 * for ORCA's load reports when a service config picks weighted_round_robin (the agent's channels take
 * none from DNS, transport/peer-client.ts, and set none), but which esbuild would otherwise bundle,
 * with a second copy of protobufjs, into the chunk every agent loads: in its place a module whose
 * `loadSync` throws, saying so.
 */
const leftOut: Plugin = {
  name: 'left-out',
  setup(b) {
    b.onResolve({ filter: /^long$/ }, () => ({ path: 'long', namespace: 'no-long' }));
    b.onResolve({ filter: /^@grpc\/proto-loader$/ }, () => ({
      path: 'proto-loader',
      namespace: 'no-proto-loader',
    }));
    b.onLoad({ filter: /.*/, namespace: 'no-proto-loader' }, () => ({
      contents:
        "exports.loadSync = () => { throw new Error('@grpc/proto-loader is not in this bundle: gRPC channelz and ORCA services are not served by EdgeMesh'); };",
      loader: 'js',
    }));
    b.onLoad({ filter: /.*/, namespace: 'no-long' }, () => ({
      contents: 'module.exports = {};',
      loader: 'js',
    }));
  },
};

/**
 * The agent and the operator are bundled apart, so that no chunk is shared between them: a shared
 * chunk holds every module both reach, and the agent then loads (and keeps the source text of) what
 * only the operator uses, e.g. all of zod's locales, which the operator's classic zod re-exports.
 */
const common = {
  absWorkingDir: root,
  bundle: true,
  platform: 'node',
  target: 'node24',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'linked',
  logLevel: 'warning',
} as const;
const bundle = (entryPoints: Record<string, string>) =>
  build({
    ...common,
    entryPoints,
    outdir: out,
    outExtension: { '.js': '.mjs' },
    splitting: true,
    format: 'esm',
    metafile: true,
    plugins: [builtinsByRequire, leftOut],
    // Some bundled CommonJS packages call require(); give every ES module chunk one.
    banner: {
      js: "import { createRequire as __edgemeshRequire } from 'node:module'; const require = __edgemeshRequire(import.meta.url);",
    },
  });
const results = [
  await bundle({ agent: 'agent/src/main.ts' }),
  await bundle({ operator: 'operator/src/main.ts' }),
];
// The peer service reads its .proto at run time; the bundle looks for it beside itself, and for
// the same .proto parsed here, which it loads instead (agent/src/transport/peer-service.ts says why),
// with the protobufjs the agent uses and the same `keepCase`.
cpSync(join(root, 'agent', 'proto'), join(out, 'proto'), { recursive: true });
const peerProto = join('proto', 'edgemesh', 'peer', 'v1', 'peer.proto');
const peerRoot = new protobuf.Root().loadSync(join(out, peerProto), { keepCase: false });
peerRoot.resolveAll();
writeFileSync(join(out, peerProto.replace(/\.proto$/, '.json')), JSON.stringify(peerRoot.toJSON()));

const outputs = results.flatMap((r) => Object.values(r.metafile.outputs));
const bytes = outputs.reduce((sum, o) => sum + o.bytes, 0);
process.stdout.write(`build: ${out}: ${outputs.length} files, ${(bytes / 1048576).toFixed(1)} MiB\n`);
