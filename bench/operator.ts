/**
 * operator: the operator as its own process against the API server fake (over HTTP, real
 * client-node) holding N Nodes; M EdgeMeshes are created at once. Measures the time from each
 * mesh's creation until all six of its children exist (p50, p99), reconciles per second over that
 * span, and the operator's peak RSS. Side by side: the fake's own time to serve a list of the Nodes,
 * a floor for any reconcile that reads them; and two builds of the operator, the bundle the image
 * runs (scripts/build.ts; its figures are the JSON's main ones) and the TypeScript sources as
 * `npm run operator` runs them (`source_*`).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeApiServer } from '../operator/harness/fake-apiserver.ts';
import { OPERATOR_NODE_FLAGS } from '../operator/src/node-flags.ts';
import { describeMachine, percentile, round } from './support/machine.ts';

const MAIN = fileURLToPath(new URL('../operator/src/main.ts', import.meta.url));
const BUILD = fileURLToPath(new URL('../scripts/build.ts', import.meta.url));
const CHILDREN = ['serviceaccounts', 'roles', 'rolebindings', 'configmaps', 'services', 'daemonsets'];

const peakRssMb = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
};

async function reconcileTotal(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return [...text.matchAll(/^controller_runtime_reconcile_total\{[^}]*\} (\d+)/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
}

interface Figures {
  p50_ms: number;
  p99_ms: number;
  reconciles_per_s: number;
  rss_mb: number;
}

export async function run(quick: boolean): Promise<void> {
  const nodes = quick ? 100 : 1000;
  const meshes = quick ? 20 : 200;
  console.log(
    `# operator: ${meshes} EdgeMeshes created at once against an API server fake with ${nodes} Nodes`,
  );
  console.log(`# machine: ${describeMachine()}`);
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-operator-'));
  try {
    const built = spawnSync(process.execPath, [BUILD, join(dir, 'dist')], { encoding: 'utf8' });
    if (built.status !== 0) throw new Error(`build failed: ${built.stderr}`);
    const bundleMain = join(dir, 'dist', 'operator.mjs');
    // The fake runs in this process: warm its code up first, or whichever build runs first pays
    // for its JIT (measured: ~8% on p99).
    console.log('# warm-up (discarded):');
    await measure(bundleMain, Math.min(nodes, 200), Math.min(meshes, 40), dir);
    console.log('# the bundle (dist/operator.mjs, as the image runs it):');
    const bundle = await measure(bundleMain, nodes, meshes, dir);
    console.log('# the TypeScript sources (operator/src/main.ts, as npm run operator runs them):');
    const source = await measure(MAIN, nodes, meshes, dir);
    console.log('# goals: p99_ms < 1000, rss_mb < 200');
    console.log(
      JSON.stringify({
        bench: 'operator',
        meshes,
        nodes,
        ...bundle,
        source_p99_ms: source.p99_ms,
        source_rss_mb: source.rss_mb,
      }),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function measure(main: string, nodes: number, meshes: number, dir: string): Promise<Figures> {
  const api = await startFakeApiServer();
  let child: ChildProcess | undefined;
  try {
    for (let i = 0; i < nodes; i++) {
      api.put({
        apiVersion: 'v1',
        kind: 'Node',
        metadata: {
          name: `edge-${i}`,
          labels: {
            'topology.kubernetes.io/region': `r${i % 5}`,
            'topology.kubernetes.io/zone': `r${i % 5}-z${i % 3}`,
            'edgemesh.p2p.dev/pool': `p${i % 10}`,
          },
        },
      });
    }
    const listStarted = performance.now();
    await (await fetch(`${api.url}/api/v1/nodes`)).json();
    const listMs = performance.now() - listStarted;
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, api.kubeconfig);
    child = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, main], {
      env: {
        ...process.env,
        KUBECONFIG: kubeconfig,
        EDGEMESH_OPERATOR_IDENTITY: 'bench',
        EDGEMESH_OPERATOR_PROBE_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_PROBE_PORT: '0',
        EDGEMESH_OPERATOR_RETRY_PERIOD_MS: '200',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const probePort = await new Promise<number>((resolve, reject) => {
      let buffered = '';
      child!.stdout!.on('data', (d: Buffer) => {
        buffered += d.toString();
        const m = /"probePort":(\d+)/.exec(buffered);
        if (m) resolve(Number(m[1]));
      });
      child!.once('exit', (code) => reject(new Error(`operator exited with ${code}`)));
    });
    // Wait until it leads and has synced (a first mesh is reconciled).
    const warm = {
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'warm', namespace: 'bench' },
      spec: { controlPlane: { natsUrl: 'nats://nats:4222' } },
    };
    api.put(warm);
    while (!api.get('daemonsets', 'bench', 'edgemesh-warm')) await new Promise((r) => setTimeout(r, 20));
    const before = await reconcileTotal(probePort);
    const idleRss =
      Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

    const created = new Map<string, number>();
    const done = new Map<string, number>();
    const started = performance.now();
    for (let i = 0; i < meshes; i++) {
      const name = `mesh-${i}`;
      api.put({
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name, namespace: `tenant-${i % 20}` },
        spec: {
          controlPlane: { natsUrl: 'nats://nats.edgemesh-system:4222' },
          nodeSelector: { 'edgemesh.p2p.dev/pool': `p${i % 10}` },
          origins: [{ prefix: 'cdn/', url: `https://origin-${i}.example/` }],
        },
      });
      created.set(name, performance.now());
    }
    while (done.size < meshes) {
      for (const [name, at] of created) {
        if (done.has(name)) continue;
        const ns = `tenant-${Number(name.slice(5)) % 20}`;
        if (CHILDREN.every((plural) => api.get(plural, ns, `edgemesh-${name}`)))
          done.set(name, performance.now() - at);
      }
      if (performance.now() - started > 300_000) throw new Error('not all meshes converged in 300 s');
      await new Promise((r) => setTimeout(r, 5));
    }
    const elapsed = (performance.now() - started) / 1000;
    const reconciles = (await reconcileTotal(probePort)) - before;
    const rss = peakRssMb(child.pid!);
    const latencies = [...done.values()].sort((a, b) => a - b);
    console.log(
      `# all ${meshes} meshes had their children after ${elapsed.toFixed(2)} s; ${reconciles} reconciles; listing ${nodes} Nodes from the fake takes ${listMs.toFixed(1)} ms; API requests: ${api.stats.requests}`,
    );
    console.log(
      `# operator RSS: ${idleRss.toFixed(0)} MiB synced and idle, ${rss.toFixed(0)} MiB at the peak`,
    );
    const figures = {
      p50_ms: round(percentile(latencies, 50), 1),
      p99_ms: round(percentile(latencies, 99), 1),
      reconciles_per_s: round(reconciles / elapsed, 1),
      rss_mb: round(rss, 1),
    };
    console.log(`#   ${JSON.stringify(figures)}`);
    return figures;
  } finally {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM'); // a clean stop (releases its lease)
      const exited = new Promise((r) => child!.once('exit', r));
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      child.kill('SIGKILL');
    }
    await api.close();
  }
}
