import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { helm, objects, template } from '../charts/lib/helm.ts';
import { layerTool } from '../charts/lib/layer.ts';
import {
  buildEdgeMeshImage,
  buildNatsImage,
  containersUnavailable,
  EDGEMESH_IMAGE,
  ensureBaseImages,
  hasImage,
  NATS_IMAGE,
  ROOT,
  tagImage,
  useLocalEngine,
} from './harness/images.ts';
import { commandsOf, QUICKSTART, readQuickStart, type QuickStartSection } from './harness/quickstart.ts';
import { startShellSession, type ShellResult, type ShellSession } from './harness/shell-session.ts';

useLocalEngine();
/** The k3s image; it must already be in the local engine (nothing is pulled in CI here). */
const K3S_IMAGE = process.env.EDGEMESH_E2E_K3S_IMAGE ?? 'rancher/k3s:v1.33.5-k3s1';

/** The chart's default images, as it renders them with the bundled NATS: what the cluster runs. */
function chartImages(): { edgemesh: Image; nats: Image } {
  const rendered = objects(template(['--set', 'nats.enabled=true']));
  const image = (name: string): Image => {
    const deployment = rendered.find((o) => o.kind === 'Deployment' && o.metadata.name === name) as
      | { spec: { template: { spec: { containers: { image: string; imagePullPolicy: string }[] } } } }
      | undefined;
    const container = deployment?.spec.template.spec.containers[0];
    if (!container) throw new Error(`the chart renders no Deployment ${name}`);
    return { name: container.image, pullPolicy: container.imagePullPolicy };
  };
  return { edgemesh: image('edgemesh-operator'), nats: image('edgemesh-nats') };
}
type Image = { name: string; pullPolicy: string };

/** Why this suite cannot run here, or undefined. */
function unavailable(): string | undefined {
  const engine = containersUnavailable();
  if (engine) return engine;
  const why: string[] = [];
  if (!hasImage(K3S_IMAGE))
    why.push(
      `the k3s image ${K3S_IMAGE} is not in the local engine and cannot be pulled here (set EDGEMESH_E2E_K3S_IMAGE to one that is)`,
    );
  for (const tool of ['kubectl', 'helm'] as const) {
    try {
      layerTool(tool);
    } catch (error) {
      why.push(`no ${tool} for the quick start's commands: ${(error as Error).message}`);
    }
  }
  if (spawnSync('sh', ['-c', 'command -v curl']).status !== 0)
    why.push("curl is not installed (the quick start's put and get use it; apt-get install curl)");
  return why.length ? why.join('; ') : undefined;
}

/** A run of the quick start: the cluster, the shell its commands run in, and what to undo at the end. */
interface Run {
  /** The kubeconfig the shell's KUBECONFIG names; written once the cluster runs. */
  kubeconfig: string;
  shell: ShellSession;
  env: NodeJS.ProcessEnv;
  images: { edgemesh: Image; nats: Image };
  k3s?: { getKubeConfig(): string; getId(): string; stop(): Promise<unknown> };
  /** Done in reverse order after the run, whatever happened. */
  undo: (() => unknown)[];
}

/** A quick-start command this suite does not run as written: what it does instead, and why. */
interface Replacement {
  reason: string;
  run(run: Run): Promise<void> | void;
}

/**
 * The quick start's commands that this suite replaces for its environment, each with its reason.
 * Every other command of docs/quickstart.md runs exactly as written (AS_WRITTEN), in a `sh` whose
 * KUBECONFIG names the k3s cluster and whose PATH starts with kubectl and helm (charts/lib/layer.ts).
 */
const REPLACED: Record<string, Replacement> = {
  'kind create cluster --name edgemesh': {
    reason: 'the cluster is k3s in a container that testcontainers starts',
    async run(run) {
      const { K3sContainer } = await import('@testcontainers/k3s');
      const k3s = await new K3sContainer(K3S_IMAGE).start();
      run.k3s = k3s;
      run.undo.push(() => run.k3s?.stop());
      writeFileSync(run.kubeconfig, k3s.getKubeConfig());
    },
  },
  'docker build -t edgemesh:0.1.0 .': {
    reason:
      "the same Dockerfile, built by e2e/harness/images.ts (with the build arguments this machine's network needs and a revision label that shows the image is this build), then tagged with the chart's default image name",
    async run(run) {
      ensureBaseImages();
      await buildEdgeMeshImage(EDGEMESH_IMAGE);
      run.undo.push(tagImage(EDGEMESH_IMAGE, run.images.edgemesh.name));
    },
  },
  'kind load docker-image edgemesh:0.1.0 --name edgemesh': {
    reason:
      "the node is the k3s container: `ctr images import` into its containerd is how an image reaches it (k3d image import does the same). The chart's NATS image too, which the quick start's cluster pulls from Docker Hub: the engine's own copy, or one made from this machine's nats-server where the engine has none",
    async run(run) {
      const k3s = cluster(run);
      importImage(k3s.getId(), run.images.edgemesh.name);
      if (!hasImage(run.images.nats.name)) {
        await buildNatsImage(NATS_IMAGE);
        run.undo.push(tagImage(NATS_IMAGE, run.images.nats.name));
      }
      importImage(k3s.getId(), run.images.nats.name);
    },
  },
  'for node in $(kind get nodes --name edgemesh); do docker exec "$node" rm -rf /var/lib/edgemesh; done': {
    reason: "the loop's body on the one node there is, the k3s container",
    run(run) {
      const node = cluster(run).getId();
      const ls = (path: string) =>
        spawnSync('docker', ['exec', node, 'ls', '-d', path], { encoding: 'utf8' });
      assert.equal(ls('/var/lib/edgemesh/default_cdn').status, 0, "the mesh's cache is left on the node");
      docker(['exec', node, 'rm', '-rf', '/var/lib/edgemesh']);
      assert.notEqual(ls('/var/lib/edgemesh').status, 0, 'the cache is gone from the node');
    },
  },
  'kind delete cluster --name edgemesh': {
    reason: 'the k3s container stops (and is removed)',
    async run(run) {
      await cluster(run).stop();
      run.k3s = undefined;
    },
  },
};

/** What the suite checks after a command that ran as written; its exit status is always checked. */
type Check = (run: Run, result: ShellResult) => Promise<void> | void;

/**
 * The quick start's other commands, in order: each runs exactly as written, then its check.
 * Together with REPLACED, these must be the quick start's commands (the first test says what differs).
 */
const AS_WRITTEN: [command: string, check?: Check][] = [
  [
    "helm install edgemesh charts/edgemesh -n edgemesh-system --create-namespace --set nats.enabled=true --set 'meshNamespaces={default}' --wait",
    (run) => {
      const ready = (name: string) =>
        (
          kubectlJson(run, ['-n', 'edgemesh-system', 'get', 'deployment', name]).status as {
            readyReplicas?: number;
          }
        ).readyReplicas;
      assert.equal(ready('edgemesh-operator'), 2, 'both operator replicas ready');
      assert.equal(ready('edgemesh-nats'), 1, 'the bundled NATS ready');
    },
  ],
  [
    'kubectl -n edgemesh-system get pods',
    (_, { stdout }) => {
      // "two operator replicas and edgemesh-nats, all Running"
      const pods = stdout.trim().split('\n').slice(1);
      const named = (prefix: string) =>
        pods.filter((p) => p.startsWith(prefix) && / Running /.test(p)).length;
      assert.deepEqual(
        [pods.length, named('edgemesh-operator-'), named('edgemesh-nats-')],
        [3, 2, 1],
        stdout,
      );
    },
  ],
  ['kubectl apply -f manifests/samples/cdn.yaml', (_, { stdout }) => assert.match(stdout, /\/cdn created/)],
  [
    'kubectl wait --for=condition=Ready edgemesh/cdn --timeout=5m',
    (run, { stdout }) => {
      assert.match(stdout, /condition met/);
      const ds = kubectlJson(run, ['-n', 'default', 'get', 'daemonset', 'edgemesh-cdn']);
      assert.ok(((ds.status as { numberReady?: number }).numberReady ?? 0) >= 1, 'its agent runs');
    },
  ],
  [
    'kubectl get em cdn -o wide',
    (_, { stdout }) => {
      const [header, row] = stdout
        .trim()
        .split('\n')
        .map((l) => l.trimEnd());
      assert.match(header ?? '', /^NAME\s+READY\s.*\sREASON\s+MESSAGE$/);
      assert.match(row ?? '', /^cdn\s+True\s/);
    },
  ],
  [
    'kubectl -n default port-forward daemonset/edgemesh-cdn 7480:7480 &',
    async (_, forward) => {
      // A user sees "Forwarding from ..." before typing the next command.
      await until(
        'the port-forward listens',
        () => /Forwarding from 127\.0\.0\.1:7480/.test(forward.current().stdout),
        () => `it printed ${JSON.stringify(forward.current())}`,
      );
    },
  ],
  ['TOKEN=$(kubectl -n default create token default --audience edgemesh.p2p.dev)'],
  [
    `curl -sS -H "Authorization: Bearer $TOKEN" -X PUT --data-binary 'hello edge' localhost:7480/v1/objects/demo/hello`,
    (_, { stdout }) =>
      assert.deepEqual(pick(JSON.parse(stdout), ['key', 'size']), { key: 'demo/hello', size: 10 }),
  ],
  [
    'curl -sS -H "Authorization: Bearer $TOKEN" localhost:7480/v1/objects/demo/hello',
    (_, { stdout }) => assert.equal(stdout, 'hello edge'),
  ],
  [
    'curl -sS -H "Authorization: Bearer $TOKEN" localhost:7480/v1/status',
    (_, { stdout }) => assert.equal(typeof (JSON.parse(stdout) as { id?: unknown }).id, 'string', stdout),
  ],
  [
    'kubectl delete edgemeshes --all -A --wait',
    // "their DaemonSets, Services and Secrets go with them" (garbage collection, shortly after)
    (run) =>
      until('the DaemonSet and Service are gone', () =>
        gone(run, ['-n', 'default', 'daemonset,service', 'edgemesh-cdn']),
      ),
  ],
  [
    'helm uninstall edgemesh -n edgemesh-system',
    (run) =>
      until('the operator is gone', () =>
        gone(run, ['-n', 'edgemesh-system', 'deployment', 'edgemesh-operator']),
      ),
  ],
  [
    'kubectl delete crd edgemeshes.edgemesh.p2p.dev',
    (run) => assert.ok(gone(run, ['crd', 'edgemeshes.edgemesh.p2p.dev'])),
  ],
  [
    'kubectl delete namespace edgemesh-system',
    (run) => assert.ok(gone(run, ['namespace', 'edgemesh-system'])),
  ],
];

/** One step of the run: a quick-start command and how this suite handles it. */
type Step = { section: string; command: string } & (
  { replaced: Replacement } | { replaced?: undefined; check: Check | undefined }
);

/**
 * The quick start as this suite runs it: its commands in order, each either replaced (REPLACED)
 * or run as written (the next of AS_WRITTEN). `problems` names every command the two disagree on.
 */
function plan(sections: QuickStartSection[]): { steps: Step[]; problems: string[] } {
  const steps: Step[] = [];
  const problems: string[] = [];
  const written = [...AS_WRITTEN];
  for (const { section, command, line } of commandsOf(sections)) {
    const replaced = REPLACED[command];
    if (replaced) {
      steps.push({ section, command, replaced });
      continue;
    }
    const [expected, check] = written[0] ?? [];
    if (expected === command) {
      written.shift();
      steps.push({ section, command, check });
    } else
      problems.push(
        `docs/quickstart.md line ${line} has \`${command}\`, which the k3s suite neither runs as written nor replaces` +
          (expected ? ` (it expects \`${expected}\` next)` : ''),
      );
  }
  for (const [command] of written)
    problems.push(`the k3s suite runs \`${command}\`, which the quick start lacks`);
  for (const command of Object.keys(REPLACED))
    if (steps.filter((s) => s.command === command).length !== 1)
      problems.push(`the k3s suite replaces \`${command}\`, which the quick start has not exactly once`);
  return { steps, problems };
}

const cluster = (run: Run) => {
  if (!run.k3s) throw new Error('no cluster runs (the quick start creates it first)');
  return run.k3s;
};

function docker(args: string[], input?: Buffer): void {
  const r = spawnSync('docker', args, { input, maxBuffer: 4 << 30 });
  if (r.status !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr?.toString() || String(r.error)}`);
}

/** Hands an image of the local engine to the k3s node's containerd, where the kubelet finds it. */
function importImage(node: string, image: string): void {
  const saved = spawnSync('docker', ['save', image], { maxBuffer: 4 << 30 });
  if (saved.status !== 0) throw new Error(`docker save ${image}: ${saved.stderr.toString()}`);
  docker(['exec', '-i', node, 'ctr', '-n', 'k8s.io', 'images', 'import', '-'], saved.stdout);
}

const kubectl = (run: Run, args: string[]) =>
  spawnSync(layerTool('kubectl'), args, { env: run.env, encoding: 'utf8', maxBuffer: 64 << 20 });

function kubectlJson(run: Run, args: string[]): Record<string, unknown> {
  const r = kubectl(run, [...args, '-o', 'json']);
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr || String(r.error)}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** True when the API server answers NotFound for every object `get` names. */
function gone(run: Run, getArgs: string[]): boolean {
  const r = kubectl(run, ['get', ...getArgs, '--ignore-not-found', '-o', 'name']);
  if (r.status !== 0) throw new Error(`kubectl get ${getArgs.join(' ')}: ${r.stderr}`);
  return r.stdout.trim() === '';
}

async function until(what: string, done: () => boolean, detail?: () => string): Promise<void> {
  const timeoutMs = 60_000;
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 500)))
    if (done()) return;
  assert.fail(`${what}: not within ${timeoutMs / 1000} s${detail ? ` (${detail()})` : ''}`);
}

const pick = (o: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.map((k) => [k, o[k]]));

describe('the k3s suite follows docs/quickstart.md', () => {
  it('runs each of its commands as written or replaces it, with a reason', () => {
    const { problems } = plan(readQuickStart());
    assert.deepEqual(
      problems,
      [],
      'run the new command as written (AS_WRITTEN in e2e/k3s.test.ts) or replace it (REPLACED, with its reason)',
    );
    for (const [command, { reason }] of Object.entries(REPLACED)) assert.ok(reason.length > 20, command);
  });

  it("builds and loads the chart's default image, which the chart pulls only when the node lacks it", () => {
    const images = chartImages();
    const commands = commandsOf(readQuickStart()).map((c) => c.command);
    const named = (pattern: RegExp) => commands.map((c) => pattern.exec(c)?.[1]).filter(Boolean);
    assert.deepEqual(named(/^docker build -t (\S+) \.$/), [images.edgemesh.name]);
    assert.deepEqual(named(/^kind load docker-image (\S+) /), [images.edgemesh.name]);
    assert.deepEqual([images.edgemesh.pullPolicy, images.nats.pullPolicy], ['IfNotPresent', 'IfNotPresent']);
  });
});

const why = unavailable();
if (why) console.log(`# k3s e2e skipped: ${why}`);

/**
 * The quick start on a real cluster (k3s in a container), section by section: every command as
 * written in a shell (REPLACED says which are not, and why), each checked (AS_WRITTEN).
 */
describe(`the quick start (${QUICKSTART.slice(ROOT.length + 1)}) on k3s`, { skip: why ?? false }, () => {
  const { steps, problems } = plan(readQuickStart());
  let run: Run;
  let dir: string;
  let failed: string | undefined;

  before(() => {
    if (problems.length) throw new Error(`the quick start and this suite differ: ${problems.join('; ')}`);
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-k3s-'));
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(layerTool('kubectl'), join(bin, 'kubectl'));
    symlinkSync(helm(), join(bin, 'helm'));
    const kubeconfig = join(dir, 'kubeconfig');
    const env = {
      ...process.env,
      PATH: `${bin}${delimiter}${process.env.PATH ?? ''}`,
      KUBECONFIG: kubeconfig,
      // kubectl's and helm's caches and settings in the run's directory, not the user's home
      KUBECACHEDIR: join(dir, 'kube-cache'),
      HELM_CACHE_HOME: join(dir, 'helm', 'cache'),
      HELM_CONFIG_HOME: join(dir, 'helm', 'config'),
      HELM_DATA_HOME: join(dir, 'helm', 'data'),
    };
    const shell = startShellSession({ cwd: ROOT, env });
    run = { kubeconfig, shell, env, images: chartImages(), undo: [() => shell.stop()] };
  });
  after(async () => {
    const errors: unknown[] = [];
    for (const undo of (run?.undo ?? []).reverse())
      await Promise.resolve()
        .then(undo)
        .catch((e: unknown) => errors.push(e));
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, 'cleaning up after the quick start failed');
  });

  for (const title of new Set(steps.map((s) => s.section)))
    it(title, async (t) => {
      if (failed) return t.skip(`an earlier section failed (${failed})`);
      failed = title;
      for (const step of steps.filter((s) => s.section === title)) {
        if (step.replaced) {
          t.diagnostic(`replaced: ${step.command} (${step.replaced.reason})`);
          await step.replaced.run(run);
          continue;
        }
        const result = await run.shell.run(step.command);
        assert.equal(result.status, 0, `\`${step.command}\` exited ${result.status}: ${result.stderr}`);
        await step.check?.(run, result);
      }
      failed = undefined;
    });
});
