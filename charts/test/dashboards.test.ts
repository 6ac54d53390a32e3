import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgentProcess } from '../../agent/harness/agent-process.ts';
import { Counters } from '../../agent/src/telemetry/counters.ts';
import { AgentMetrics } from '../../agent/src/telemetry/metrics.ts';
import { type FakeApiServer, startFakeApiServer } from '../../operator/harness/fake-apiserver.ts';
import type { Operator } from '../../operator/src/controller.ts';
import { startTestOperator } from '../../operator/harness/test-operator.ts';
import { objects, template } from '../lib/helm.ts';

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

  before(async () => {
    // Real processes and a real operator, made to do what the dashboards show.
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-dashboards-'));
    const a = await startAgentProcess(['--node-id', 'a', '--store.dir', join(dir, 'a')]);
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
    for (const agent of agents)
      for (const n of scraped(await (await fetch(`${agent.url}/metrics`)).text())) agentScrape.add(n);

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
    operatorScrape = scraped(await (await fetch(`http://127.0.0.1:${operator.probePort}/metrics`)).text());
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
    }).names;
    // The agent's list of names is true to what it serves: everything scraped is in it.
    for (const name of agentScrape)
      if (name !== 'target_info') assert.ok(agentNames.includes(name), `${name} scraped but not listed`);
    const exported = new Set([...agentNames, ...operatorScrape]);
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

  it('are shipped by the chart as ConfigMaps for the Grafana sidecar, off by default', () => {
    assert.equal(objects(template()).filter((o) => o.metadata.name.includes('dashboard')).length, 0);
    const maps = objects(template(['--set', 'dashboards.enabled=true'])).filter(
      (o) => o.kind === 'ConfigMap',
    );
    assert.equal(maps.length, dashboards.length);
    for (const map of maps) assert.equal(map.metadata.labels?.grafana_dashboard, '1');
  });
});
