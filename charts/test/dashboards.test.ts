import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgentProcess } from '../../agent/harness/agent-process.ts';
import { Counters } from '../../agent/src/telemetry/counters.ts';
import { AgentMetrics } from '../../agent/src/telemetry/metrics.ts';
import { RUNTIME_PREFIXES } from '../../telemetry/src/runtime.ts';
import { promtoolCheck } from '../../telemetry/src/promtool.ts';
import { type FakeApiServer, startFakeApiServer } from '../../operator/harness/fake-apiserver.ts';
import type { Operator } from '../../operator/src/controller.ts';
import { startTestOperator } from '../../operator/harness/test-operator.ts';
import { type K8sObject, objects, template } from '../lib/helm.ts';
import { builtinValidator } from '../../operator/harness/builtin-validation.ts';
import { type EdgeMesh, edgeMeshSpecSchema } from '../../operator/src/api/edgemesh.ts';
import { desiredChildren } from '../../operator/src/reconcile/desired.ts';

const DASHBOARDS = new URL('../edgemesh/dashboards/', import.meta.url);
const PROMQL_WORDS = new Set([
  ...[
    'sum',
    'min',
    'max',
    'avg',
    'count',
    'rate',
    'increase',
    'irate',
    'histogram_quantile',
    'by',
    'without',
  ],
  ...['on', 'ignoring', 'and', 'or', 'unless', 'offset', 'bool', 'le'],
]);

/** The metric names a PromQL expression reads (label matchers, groupings and ranges removed). */
export function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without)\s*\([^)]*\)/g, '');
  return [...bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w))
    .map((w) => w.replace(/_(bucket|sum|count)$/, ''));
}

const dashboards = readdirSync(DASHBOARDS)
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({
    file: f,
    json: JSON.parse(readFileSync(new URL(f, DASHBOARDS), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
      templating: { list: { name: string; type: string; query: string | { query: string } }[] };
    },
  }));

/** Names in a Prometheus text scrape (histograms: the base name). */
const scraped = (text: string) =>
  new Set(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.replace(/[{ ].*$/, '').replace(/_(bucket|sum|count)$/, '')),
  );

describe('the Grafana dashboards', () => {
  let dir: string;
  let api: FakeApiServer;
  let operator: Operator;
  const agents: AgentProcess[] = [];
  const agentScrape = new Set<string>();
  let operatorScrape = new Set<string>();
  /** The agents' and the operator's /metrics, as served. */
  const agentTexts: string[] = [];
  let operatorText = '';

  before(async () => {
    // Real processes and a real operator, made to do what the dashboards show.
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-dashboards-'));
    // One agent says more of itself in OTEL_RESOURCE_ATTRIBUTES, as a pod may.
    const a = await startAgentProcess(
      ['--node-id', 'a', '--store.dir', join(dir, 'a'), '--zone', 'z1', '--region', 'r1'],
      undefined,
      {
        env: {
          OTEL_RESOURCE_ATTRIBUTES: 'k8s.namespace.name=shop,k8s.pod.name=edgemesh-agent-x1',
          EDGEMESH_REVISION: '0123abc',
        },
      },
    );
    agents.push(a);
    const b = await startAgentProcess([
      '--node-id',
      'b',
      '--store.dir',
      join(dir, 'b'),
      '--peers',
      `127.0.0.1:${a.grpcPort}`,
    ]);
    agents.push(b);
    await fetch(`${a.url}/v1/objects/d/one`, { method: 'PUT', body: 'dashboards' });
    await (await fetch(`${b.url}/v1/objects/d/one`)).arrayBuffer();
    await fetch(`${b.url}/v1/objects/d/one`, { method: 'DELETE' });
    for (const agent of agents) {
      // Probes and a scrape first: none of them may show up in the request latency histogram.
      for (const path of ['/healthz', '/readyz', '/metrics'])
        await (await fetch(`${agent.url}${path}`)).text();
      const text = await (await fetch(`${agent.url}/metrics`)).text();
      agentTexts.push(text);
      for (const n of scraped(text)) agentScrape.add(n);
    }

    api = await startFakeApiServer();
    operator = await startTestOperator(api, { workers: 1 });
    api.fault({ method: 'PATCH', status: 500, times: 1 }); // one failed reconcile, then a retry
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name: 'm', namespace: 'd' },
      spec: { controlPlane: { natsUrl: 'nats://127.0.0.1:1' } },
    });
    for (let i = 0; i < 200 && !api.get('edgemeshes', 'd', 'm')?.status; i++)
      await new Promise((r) => setTimeout(r, 25));
    operatorText = await (await fetch(`http://127.0.0.1:${operator.probePort}/metrics`)).text();
    operatorScrape = scraped(operatorText);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await operator?.stop();
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('names only metrics the agent or the operator really exports, in every panel', () => {
    const agentNames = new AgentMetrics({
      counters: new Counters(),
      store: () => ({ bytes: 0, maxBytes: 0, entries: 0, hotBytes: 0 }) as never,
      peersKnown: () => 0,
      runtime: false,
    }).names;
    // The agent's list of names is true to what it serves: everything scraped is in it (but the
    // process's and runtime's metrics, which telemetry/runtime.ts names).
    for (const name of agentScrape)
      if (name !== 'target_info' && !RUNTIME_PREFIXES.some((p) => name.startsWith(p)))
        assert.ok(agentNames.includes(name), `${name} scraped but not listed`);
    assert.ok(
      RUNTIME_PREFIXES.every((p) => [...agentScrape].some((n) => n.startsWith(p))),
      'process and runtime metrics',
    );
    const exported = new Set([...agentNames, ...agentScrape, ...operatorScrape, ...operator.metrics.names]);
    for (const { file, json } of dashboards) {
      assert.ok(json.panels.length > 0, file);
      for (const panel of json.panels) {
        assert.ok(panel.targets.length > 0, `${file}: ${panel.title} has queries`);
        for (const target of panel.targets)
          for (const metric of metricsIn(target.expr))
            assert.ok(
              exported.has(metric),
              `${file}: "${panel.title}" reads ${metric}, which nothing exports`,
            );
      }
    }
  });

  it("have namespace, mesh, zone and node variables (the operator's: namespace and replica), used by every query", () => {
    const wanted: Record<string, string[]> = {
      'mesh.json': ['namespace', 'mesh', 'zone', 'node'],
      'operator.json': ['namespace', 'pod'],
    };
    const exported = new Set([...agentScrape, ...operatorScrape]);
    for (const { file, json } of dashboards) {
      const variables = json.templating.list.filter((v) => v.type === 'query');
      assert.deepEqual(
        variables.map((v) => v.name),
        wanted[file],
        `${file}: its variables`,
      );
      for (const v of variables) {
        const query = typeof v.query === 'string' ? v.query : v.query.query;
        const inner = /^label_values\((.*), (\w+)\)$/.exec(query);
        assert.ok(inner, `${file}: $${v.name} is a label_values query`);
        for (const metric of metricsIn(inner[1]!))
          assert.ok(exported.has(metric), `${file}: $${v.name} reads ${metric}, which nothing exports`);
      }
      for (const panel of json.panels)
        for (const { expr } of panel.targets) {
          // every selector filters by every variable
          for (const selector of expr.match(/\{[^}]*\}/g) ?? [])
            for (const v of variables)
              assert.ok(
                selector.includes(`${v.name}=~"$${v.name}"`),
                `${file}: "${panel.title}": ${selector} lacks $${v.name}`,
              );
          assert.ok(/\}/.test(expr), `${file}: "${panel.title}" selects by the variables`);
          // rates over Grafana's $__rate_interval (at least four scrapes), never a fixed window
          for (const range of expr.match(/\[[^\]]*\]/g) ?? [])
            assert.equal(range, '[$__rate_interval]', `${file}: "${panel.title}"`);
        }
    }
  });

  it("read live metrics that pass promtool check metrics, the agent's and the operator's", async (t) => {
    for (const [who, text] of [
      ...agentTexts.map((x, i) => [`agent ${i}`, x] as const),
      ['operator', operatorText] as const,
    ]) {
      const problems = await promtoolCheck(text);
      if (problems === undefined)
        return t.skip('promtool is not installed (Debian: apt-get install prometheus)');
      assert.equal(problems, '', `${who}: promtool check metrics`);
    }
  });

  it('read agent series that carry mesh, zone and region, no per-peer label, no probes in latency', () => {
    const a = agentTexts[0]!;
    const series = a.split('\n').filter((l) => l && !l.startsWith('#'));
    for (const line of series) assert.match(line, /[{,]mesh="default",zone="z1",region="r1"[,}]/, line);
    for (const text of agentTexts) {
      // b fetched from a: what it received is counted by hop class, not by peer
      assert.doesNotMatch(text, /^[^#].*[{,]peer=/m);
      const routes = new Set(
        [...text.matchAll(/^http_server_request_duration_seconds_count\{[^}]*http_route="([^"]*)"/gm)].map(
          (m) => m[1],
        ),
      );
      assert.ok(routes.size > 0, 'API requests are in it');
      for (const probe of ['/healthz', '/readyz', '/metrics'])
        assert.ok(!routes.has(probe), `${probe}: ${[...routes].join(', ')}`);
    }
    assert.match(a, /^edgemesh_build_info\{version="\d+\.\d+\.\d+[^"]*",revision="0123abc"/m, 'build info');
    // OTEL_RESOURCE_ATTRIBUTES reaches the resource, which Prometheus shows as target_info
    const target = /^target_info\{(.*)\} 1$/m.exec(a)?.[1] ?? '';
    assert.match(target, /k8s_namespace_name="shop"/, target);
    assert.match(target, /k8s_pod_name="edgemesh-agent-x1"/, target);
    assert.match(target, /service_instance_id="a"/, target);
    assert.match(target, /service_version="/, target);
  });

  it('are shipped by the chart as ConfigMaps for the Grafana sidecar, off by default', () => {
    assert.equal(objects(template()).filter((o) => o.metadata.name.includes('dashboard')).length, 0);
    const maps = objects(template(['--set', 'dashboards.enabled=true'])).filter(
      (o) => o.kind === 'ConfigMap',
    );
    assert.equal(maps.length, dashboards.length);
    for (const map of maps) assert.equal(map.metadata.labels?.grafana_dashboard, '1');
  });
});

describe('the PodMonitor for agents', () => {
  type PodMonitor = K8sObject & {
    spec: {
      namespaceSelector: { any?: boolean; matchNames?: string[] };
      selector: {
        matchLabels: Record<string, string>;
        matchExpressions: { key: string; operator: string }[];
      };
      podMetricsEndpoints: { port: string; path: string; relabelings: { targetLabel: string }[] }[];
    };
  };
  const podMonitors = (args: string[] = []) =>
    objects(template(args)).filter((o) => o.kind === 'PodMonitor') as PodMonitor[];

  it('is off by default, like the ServiceMonitor', () => {
    assert.equal(podMonitors().length, 0);
  });

  it('selects the agent pods of every mesh the operator makes, on the port that serves /metrics', async () => {
    const [monitor, ...more] = podMonitors([
      ...['--set', 'podMonitor.enabled=true', '--set', 'podMonitor.labels.release=prom'],
      ...['--set', 'meshNamespaces={shop,factory}'],
    ]);
    assert.ok(monitor && more.length === 0, 'one PodMonitor');
    assert.equal(monitor.metadata.labels?.release, 'prom', 'with the labels Prometheus selects on');
    const validate = await builtinValidator([
      { group: 'monitoring.coreos.com', version: 'v1', kind: 'PodMonitor' },
    ]);
    assert.deepEqual(validate('monitoring.coreos.com', 'v1', 'PodMonitor', monitor), []);
    assert.deepEqual(
      monitor.spec.namespaceSelector,
      { matchNames: ['shop', 'factory', 'edgemesh-system'] },
      "the release's mesh namespaces (and its own), never any",
    );
    // Two meshes in two namespaces: the pods the operator would run for both are selected.
    for (const [namespace, name] of [
      ['shop', 'cdn'],
      ['factory', 'edge'],
    ] as const) {
      const mesh = {
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name, namespace, uid: 'u', generation: 1 },
        spec: edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' } }),
      } as EdgeMesh;
      const children = desiredChildren(mesh, new Map(), {
        image: { image: 'edgemesh:test', pullSecrets: [] },
      });
      const daemonSet = children.find((o) => o.kind === 'DaemonSet') as unknown as {
        spec: {
          template: {
            metadata: { labels: Record<string, string> };
            spec: { containers: { ports: { name: string; containerPort: number }[] }[] };
          };
        };
      };
      const pod = daemonSet.spec.template;
      for (const [key, value] of Object.entries(monitor.spec.selector.matchLabels))
        assert.equal(pod.metadata.labels[key], value, `${namespace}/${name}: pod label ${key}`);
      for (const { key, operator } of monitor.spec.selector.matchExpressions) {
        assert.equal(operator, 'Exists');
        assert.ok(key in pod.metadata.labels, `${namespace}/${name}: pod label ${key}`);
      }
      const endpoint: PodMonitor['spec']['podMetricsEndpoints'][number] =
        monitor.spec.podMetricsEndpoints[0]!;
      const port: { containerPort: number } | undefined = pod.spec.containers[0]!.ports.find(
        (p) => p.name === endpoint.port,
      );
      assert.ok(port, `the agent container has a port named ${endpoint.port}`);
      assert.equal(port.containerPort, mesh.spec.ports.http, 'the HTTP API port, which serves /metrics');
      assert.equal(endpoint.path, '/metrics');
      assert.ok(
        endpoint.relabelings.some((r) => r.targetLabel === 'node'),
        'the node label the dashboards filter by',
      );
    }
  });

  it('can be limited to some namespaces', () => {
    const [monitor] = podMonitors([
      '--set',
      'podMonitor.enabled=true',
      '--set',
      'podMonitor.namespaces={shop}',
    ]);
    assert.deepEqual(monitor?.spec.namespaceSelector, { matchNames: ['shop'] });
  });

  it('scrapes each agent once when two releases enable it: each selects its own meshes’ namespaces', () => {
    const selected = (release: string, namespaces: string) =>
      objects(
        template(['--set', 'podMonitor.enabled=true', '--set', `meshNamespaces={${namespaces}}`], {
          release,
          namespace: `${release}-system`,
        }),
      )
        .filter((o) => o.kind === 'PodMonitor')
        .flatMap((o) => (o as unknown as PodMonitor).spec.namespaceSelector.matchNames ?? []);
    const [a, b] = [selected('edge-a', 'shop-a,factory-a'), selected('edge-b', 'shop-b')];
    assert.ok(a.length > 0 && b.length > 0);
    assert.deepEqual(
      a.filter((ns) => b.includes(ns)),
      [],
      'no namespace is scraped by both',
    );
  });
});
