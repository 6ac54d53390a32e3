import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { isBuiltin } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import { eventually, startAgentProcess } from '../agent/harness/agent-process.ts';
import { startOtlpReceiver } from '../agent/harness/otlp-receiver.ts';
import { AGENT_IMAGE_ENV, AGENT_NODE_FLAGS } from '../agent/src/node-flags.ts';
import { serviceDefinition } from '../agent/src/transport/peer-service.ts';
import { startFakeApiServer } from '../operator/harness/fake-apiserver.ts';
import { startTestIssuer } from '../operator/harness/test-issuer.ts';
import { OPERATOR_NODE_FLAGS } from '../operator/src/node-flags.ts';

const SCRIPT = fileURLToPath(new URL('./build.ts', import.meta.url));
const DOCKERFILE = fileURLToPath(new URL('../Dockerfile', import.meta.url));

/** The bundles the image runs, checked where no container engine is needed. */
describe('the image build (scripts/build.ts)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-build-'));
    const r = spawnSync(process.execPath, [SCRIPT, join(dir, 'dist')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes both entry points and the .proto beside them', () => {
    for (const f of ['agent.mjs', 'operator.mjs', 'proto/edgemesh/peer/v1/peer.proto'])
      assert.ok(existsSync(join(dir, 'dist', f)), f);
  });

  it('writes beside the .proto its parsed descriptor, which gives the same service', () => {
    // The bundled agent loads the descriptor rather than parse the .proto (peer-service.ts says why).
    const proto = join(dir, 'dist', 'proto', 'edgemesh', 'peer', 'v1', 'peer.proto');
    // As the agent parses it from the sources: a descriptor built with another keepCase fails here.
    const parsed = new protobuf.Root().loadSync(proto, { keepCase: false });
    parsed.resolveAll();
    const loaded = protobuf.Root.fromJSON(
      JSON.parse(readFileSync(proto.replace(/\.proto$/, '.json'), 'utf8')),
    );
    loaded.resolveAll();
    const service = (root: protobuf.Root) =>
      Object.entries(serviceDefinition(root, 'edgemesh.peer.v1.Peer')).map(([name, m]) => [
        name,
        m.path,
        m.requestStream,
        m.responseStream,
        m.originalName,
      ]);
    assert.ok(service(parsed).length >= 10);
    assert.deepEqual(service(loaded), service(parsed));
    // Every type, field by field (names, numbers, rules, types, options), and the file's syntax.
    assert.deepEqual(loaded.toJSON(), parsed.toJSON());
    assert.ok(
      loaded.lookupType('edgemesh.peer.v1.PingRequest').fields.fromNode,
      'from_node as the agent spells it',
    );
  });

  it('reaches Node built-ins by require, never by a static ES import that would run their getters', () => {
    // `import 'node:http'` alone makes Node load its copy of undici (the namespace reads the
    // module's `WebSocket` getter); the banner's `import ... from 'node:module'` is the one allowed.
    // (Dynamic imports stay: they run when reached; the OTLP test below needs them whole.)
    const imports: string[] = [];
    for (const f of readdirSync(join(dir, 'dist')).filter((n) => n.endsWith('.mjs'))) {
      const code = readFileSync(join(dir, 'dist', f), 'utf8');
      for (const m of code.matchAll(/\bimport\s*(?:[\w${},*\s]+?\s*from\s*)?["']([^"']+)["']/g))
        if (isBuiltin(m[1]!) && m[1] !== 'node:module') imports.push(`${f}: ${m[1]}`);
    }
    assert.deepEqual(imports, []);
  });

  it('leaves out of every chunk the dependencies the agent and the operator do without', () => {
    const files = readdirSync(join(dir, 'dist'));
    const code = files
      .filter((n) => n.endsWith('.mjs'))
      .map((f) => readFileSync(join(dir, 'dist', f), 'utf8'))
      .join('\n');
    // Express and what it loaded (its router, mime-db's table, body-parser's iconv-lite) are in no
    // chunk: the agent serves its API with node:http (agent/src/http/app.ts).
    assert.doesNotMatch(code, /Failed to decode param|vnd\.3gpp\.pic-bw-large|iconv-lite/);
    // @grpc/proto-loader (a reflection descriptor of every type, with descriptor.proto's own) is in
    // no chunk: the agent makes its service from protobufjs's light build (transport/peer-service.ts).
    assert.doesNotMatch(code, /createPackageDefinition|FileDescriptorProto/);
    // systeminformation (@opentelemetry/host-metrics read the system with it): in no chunk; the
    // process metrics are telemetry/src/runtime.ts's own.
    assert.doesNotMatch(code, /systeminformation|networkStats/);
  });

  it('keeps the CA’s code (@peculiar/x509) out of what an agent loads at start, for a file CA only', async () => {
    const atStart = startChunks(dir);
    assert.ok(atStart.size > 1, `the start chunks: ${[...atStart].join(', ')}`);
    // @peculiar/x509's classes, reflect-metadata's, asn1js's and the ASN.1 schema's (each could come alone).
    const library =
      /Pkcs10CertificateRequestGenerator|X509CertificateGenerator|Reflect\.defineMetadata|AsnConvert|fromBER/;
    for (const file of atStart)
      assert.ok(
        !library.test(readFileSync(join(dir, 'dist', file), 'utf8')),
        `${file}, loaded at start, holds the CA's code`,
      );
    // It is a chunk of its own, which the file CA imports when it signs (the agents of this suite
    // start with a file CA, from this bundle, above and below).
    const lazy = readdirSync(join(dir, 'dist')).filter(
      (f) =>
        f.endsWith('.mjs') &&
        f !== 'operator.mjs' &&
        !atStart.has(f) &&
        library.test(readFileSync(join(dir, 'dist', f), 'utf8')),
    );
    assert.equal(lazy.length, 1, `the CA's chunk: ${lazy.join(', ')}`);
    // And the other way, certificates from the operator's endpoint, works from the bundle too.
    const issuer = await startTestIssuer({ mesh: { namespace: 'edge', name: 'lean' }, host: '127.0.0.1' });
    try {
      const agent = await startAgentProcess(
        [
          '--node-id',
          'by-issuer',
          '--zone',
          'z',
          '--region',
          'r',
          '--store.dir',
          join(dir, 'by-issuer'),
        ].concat(await issuer.agentFilesIn(dir, 'by-issuer')),
        20_000,
        { main: join(dir, 'dist', 'agent.mjs'), nodeFlags: AGENT_NODE_FLAGS },
      );
      assert.deepEqual(issuer.issuedTo, ['by-issuer']);
      assert.equal(await agent.stop('SIGTERM'), 0, agent.logs.join('').slice(-600));
    } finally {
      await issuer.close();
    }
  });

  it('loads the YAML parser only for a configuration that is not JSON, from the bundle alone too', async () => {
    // The operator writes the agents' files in JSON (config/document.ts): no YAML parser at start.
    const atStart = startChunks(dir);
    const yamlCode = /YAMLParseError/;
    const read = (file: string) => readFileSync(join(dir, 'dist', file), 'utf8');
    for (const file of atStart) assert.ok(!yamlCode.test(read(file)), `${file}, loaded at start, holds yaml`);
    // It is a chunk the agent's start chunks import dynamically.
    const imported = [...atStart].flatMap((file) =>
      [...read(file).matchAll(/import\(["']\.\/([^"']+)["']\)/g)].map((m) => m[1]!),
    );
    assert.equal(
      imported.filter((f) => yamlCode.test(read(f))).length,
      1,
      `yaml's chunk among ${imported.join(', ')}`,
    );
    // A hand-written YAML file still configures an agent run from the bundle.
    const config = join(dir, 'by-yaml.yaml');
    await writeFile(
      config,
      [
        '# written by hand',
        'nodeId: by-yaml',
        'security:',
        '  mtls: false',
        'store:',
        `  dir: ${join(dir, 'by-yaml')}`,
        '',
      ].join('\n'),
    );
    const agent = await startAgentProcess(['--config', config, '--zone', 'z', '--region', 'r'], 20_000, {
      main: join(dir, 'dist', 'agent.mjs'),
      nodeFlags: AGENT_NODE_FLAGS,
    });
    assert.match(agent.logs.join(''), /"node":"by-yaml"/);
    assert.equal(await agent.stop('SIGTERM'), 0, agent.logs.join('').slice(-600));
  });

  it('gives an agent that starts from the bundle alone (no node_modules, no TypeScript) and exports its traces', async () => {
    // An OTLP receiver: the exporter reaches node:http by a dynamic import the bundle must keep whole.
    const exported: string[] = [];
    const receiver = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        exported.push(`${req.method} ${req.url}`);
        res.end('{}');
      });
    });
    receiver.listen(0, '127.0.0.1');
    await once(receiver, 'listening');
    const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    // The bundle sits in a temporary directory with no node_modules above it, as in the image.
    const agent = await startAgentProcess(
      ['--node-id', 'b1', '--zone', 'z', '--region', 'r', '--store.dir', join(dir, 'store')].concat([
        '--telemetry.otlp-endpoint',
        endpoint,
      ]),
      20_000,
      { main: join(dir, 'dist', 'agent.mjs'), nodeFlags: AGENT_NODE_FLAGS },
    );
    try {
      const put = await fetch(`${agent.url}/v1/objects/bundle/check`, { method: 'PUT', body: 'bundled' });
      assert.equal(put.status, 201);
      assert.equal(await (await fetch(`${agent.url}/v1/objects/bundle/check`)).text(), 'bundled');
      assert.match(await (await fetch(`${agent.url}/metrics`)).text(), /^edgemesh_cache_entries\{/m);
      await eventually(
        () => Promise.resolve(exported.includes('POST /v1/traces') ? true : undefined),
        15_000,
        `the PUT's trace at the OTLP receiver (agent log: ${agent.logs.join('').slice(-600)})`,
      );
    } finally {
      await agent.stop('SIGKILL');
      receiver.close();
    }
  });

  it('gives an agent whose start and stop need neither TurboFan nor V8’s WebAssembly compiler', async () => {
    // Either one, once run, keeps megabytes of the Node binary's code resident (docs/deploy.md);
    // traffic brings TurboFan in soon enough, but a freshly started agent should not pay for it:
    // TurboFan optimizes a function that start-up alone calls hundreds of times (path.join's
    // normalizing loop once did, and the certificate library's PEM loops now and then), and
    // long.js, were it bundled, compiles a WebAssembly module as it loads. V8 prints its traces
    // through C's buffered stdout, so they are read once the agent has exited and closed it.
    const agent = await startAgentProcess(
      ['--node-id', 'lean', '--zone', 'z', '--region', 'r', '--store.dir', join(dir, 'lean')],
      20_000,
      {
        main: join(dir, 'dist', 'agent.mjs'),
        nodeFlags: [...AGENT_NODE_FLAGS, '--trace-opt'],
      },
    );
    const closed = once(agent.child, 'close');
    assert.equal((await fetch(`${agent.url}/healthz`)).status, 200);
    assert.equal(await agent.stop('SIGTERM'), 0, agent.logs.join('').slice(-600));
    await closed;
    const optimized = agent.logs.filter((l) => /TURBOFAN/.test(l));
    const names = new Set(optimized.map((l) => /<JSFunction ([^ >]*)/.exec(l)?.[1] ?? l));
    assert.equal(optimized.length, 0, `TurboFan optimized ${[...names].join(', ')} at start`);
    // Every file the agent may load (the operator's bundle, which the agent never loads, has undici's).
    for (const f of readdirSync(join(dir, 'dist')).filter(
      (n) => /\.[cm]?js$/.test(n) && n !== 'operator.mjs',
    ))
      assert.doesNotMatch(
        readFileSync(join(dir, 'dist', f), 'utf8'),
        /WebAssembly\.(Module|Instance|compile|instantiate)/,
        f,
      );
  });

  it('gives an operator that runs from the bundle alone and exports its traces and metrics', async () => {
    // The operator's OTLP exporters reach node:http by the same dynamic import as the agent's, so
    // the same bundling mistake would silence them; nothing else in the operator would notice.
    const receiver = await startOtlpReceiver();
    // The API server fake (in this process) stands in for a cluster; the bundle reads its kubeconfig.
    const api = await startFakeApiServer();
    const kubeconfig = join(dir, 'operator.kubeconfig');
    await writeFile(kubeconfig, api.kubeconfig);
    const operator = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, join(dir, 'dist', 'operator.mjs')], {
      env: {
        ...process.env,
        KUBECONFIG: kubeconfig,
        EDGEMESH_OPERATOR_IDENTITY: 'bundled',
        EDGEMESH_OPERATOR_NAMESPACE: 'edgemesh-system',
        EDGEMESH_OPERATOR_RETRY_PERIOD_MS: '200',
        EDGEMESH_OPERATOR_PROBE_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_PROBE_PORT: '0',
        EDGEMESH_OPERATOR_AGENT_IMAGE: 'registry.example/edgemesh:bundle',
        EDGEMESH_OPERATOR_OTLP_ENDPOINT: receiver.url,
        // Metrics are pushed every 60 s by default; spans leave within half a second anyway.
        OTEL_METRIC_EXPORT_INTERVAL: '300',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logs: string[] = [];
    operator.stdout.on('data', (d) => logs.push(String(d)));
    operator.stderr.on('data', (d) => logs.push(String(d)));
    // Waits for `check` to find what the receiver got; on a timeout or an early exit, says why
    // with the operator's last words (read then, not now: it has said nothing yet).
    const received = <T>(what: string, check: () => T | undefined) =>
      eventually(
        () =>
          operator.exitCode === null
            ? Promise.resolve(check())
            : Promise.reject(new Error(`the operator exited with ${operator.exitCode}`)),
        15_000,
        what,
      ).catch((error: unknown) => {
        throw new Error(`${(error as Error).message} (operator log: ${logs.join('').slice(-600)})`);
      });
    try {
      // The operator emits a span per reconcile (its metrics need none), so give it a mesh to reconcile.
      api.put({
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name: 'cdn', namespace: 'shop' },
        spec: { controlPlane: { natsUrl: 'nats://127.0.0.1:1' } },
      });
      const span = await received('the reconcile span at the OTLP receiver (POST /v1/traces)', () =>
        receiver.spans.find(
          (s) => s.name === 'edgemesh.reconcile' && s.attributes['edgemesh.mesh'] === 'shop/cdn',
        ),
      );
      assert.equal(span.resource['service.name'], 'edgemesh-operator');
      await received('the reconcile counter at the OTLP receiver (POST /v1/metrics)', () =>
        receiver.metrics.find((m) => m.name === 'controller_runtime_reconcile'),
      );
    } finally {
      operator.kill('SIGKILL');
      if (operator.exitCode === null && operator.signalCode === null) await once(operator, 'exit');
      await api.close();
      receiver.close();
    }
  });

  it('is what the Dockerfile runs: its ENTRYPOINT carries the flags of agent/src/node-flags.ts', () => {
    const entry = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(DOCKERFILE, 'utf8'))?.[1];
    assert.deepEqual(JSON.parse(entry ?? '[]'), ['node', ...AGENT_NODE_FLAGS, 'dist/agent.mjs']);
  });

  it('sets the environment of AGENT_IMAGE_ENV (node-flags.ts: malloc settings, NODE_ENV) in the image', () => {
    const lines = [...readFileSync(DOCKERFILE, 'utf8').matchAll(/^ENV (.*)$/gm)].map((m) => m[1]!);
    const set = Object.fromEntries(
      lines.flatMap((l) => l.split(/\s+/)).map((kv) => kv.split('=', 2) as [string, string]),
    );
    for (const [k, v] of Object.entries(AGENT_IMAGE_ENV)) assert.equal(set[k], v, k);
  });
});

/** The chunks agent.mjs imports statically, and theirs: what every agent loads and keeps. */
function startChunks(dir: string): Set<string> {
  const atStart = new Set<string>();
  const visit = (file: string) => {
    if (atStart.has(file)) return;
    atStart.add(file);
    const code = readFileSync(join(dir, 'dist', file), 'utf8');
    for (const m of code.matchAll(
      /(?:^|[;\s}])(?:import|export)\s*(?:[^'"();]*?from\s*)?["']\.\/([^"']+)["']/gm,
    ))
      visit(m[1]!);
  };
  visit('agent.mjs');
  return atStart;
}
