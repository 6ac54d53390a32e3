import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';
import { startOrigin, type TestOrigin } from '../harness/origin-server.ts';
import { startOtlpReceiver } from '../harness/otlp-receiver.ts';

/** OTLP's span kinds. */
const SERVER = 2;
const CLIENT = 3;

/**
 * One fetch, three agents, one trace: C reads an object only A holds; C asks both peers for it (B
 * has none), then streams its chunks from A. Every agent exports its spans over OTLP to one receiver.
 */
describe('traces across agents (OTLP)', () => {
  let dir: string;
  let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let origin: TestOrigin;
  const fromOrigin = randomBytes(5 * 2 ** 20);
  const agents: AgentProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-tracing-'));
    receiver = await startOtlpReceiver();
    process.env.OTEL_METRIC_EXPORT_INTERVAL = '300'; // the agents push their metrics over OTLP that often
    origin = await startOrigin(new Map([['/o/movie.bin', fromOrigin]]));
    const start = (id: string, zone: string, peers: string[], extra: string[] = [], env = {}) =>
      startAgentProcess(
        [
          ...['--node-id', id, '--zone', zone, '--region', 'eu', '--store.dir', join(dir, id)],
          ...[
            '--telemetry.otlp-endpoint',
            receiver.url,
            ...(peers.length ? ['--peers', peers.join(',')] : []),
          ],
          ...['--origins', `cdn/=${origin.url}`],
          ...extra,
        ],
        undefined,
        { env },
      );
    const a = await start('a', 'eu-1', []);
    const b = await start('b', 'eu-2', [`127.0.0.1:${a.grpcPort}`]);
    const c = await start(
      'c',
      'eu-3',
      [`127.0.0.1:${b.grpcPort}`, `127.0.0.1:${a.grpcPort}`],
      ['--log.level', 'debug'],
      // what a pod may say of itself, through OpenTelemetry's own variable
      { OTEL_RESOURCE_ATTRIBUTES: 'k8s.namespace.name=shop,k8s.pod.name=edgemesh-c' },
    );
    agents.push(a, b, c);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    receiver.close();
    origin.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives a fetch that crossed three agents one trace id, with a span per source and per chunk batch', async () => {
    const [a, , c] = agents as [AgentProcess, AgentProcess, AgentProcess];
    const body = randomBytes(9 * 2 ** 20); // three chunks
    assert.equal((await fetch(`${a.url}/v1/objects/traced/one`, { method: 'PUT', body })).status, 201);
    const traceId = randomBytes(16).toString('hex');
    const res = await fetch(`${c.url}/v1/objects/traced/one`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    });
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    assert.equal(res.headers.get('x-edgemesh-source'), 'peer');
    const spans = await eventually(
      () => {
        const mine = receiver.spans.filter((s) => s.traceId === traceId);
        const nodes = new Set(mine.map((s) => s.resource['service.instance.id']));
        // Each agent exports in batches of its own: the trace is whole once the root and the caller's
        // span of every peer call are in too (a callee's batch may come before the caller's).
        const whole =
          mine.some((s) => s.name === 'GET /v1/objects/{key}') &&
          mine
            .filter((s) => s.kind === SERVER && s.name.startsWith('edgemesh.peer.v1.Peer/'))
            .every((server) => mine.some((s) => s.spanId === server.parentSpanId));
        return Promise.resolve(
          nodes.size === 3 && whole && mine.some((s) => s.name.endsWith('/FetchChunks')) ? mine : undefined,
        );
      },
      15_000,
      'spans from three agents, the trace whole',
    );
    const on = (node: string) =>
      spans.filter((s) => s.resource['service.instance.id'] === node).map((s) => s.name);
    console.log(
      `# trace ${traceId}: ${spans.length} spans: c ${on('c').join(', ')} | a ${on('a').join(', ')} | b ${on('b').join(', ')}`,
    );
    const root = spans.find((s) => s.name === 'GET /v1/objects/{key}')!;
    assert.equal(root.resource['service.instance.id'], 'c');
    assert.equal(root.attributes['edgemesh.source'], 'peer');
    const batches = spans.filter((s) => s.name === 'edgemesh.fetch_chunks');
    assert.ok(batches.length >= 1, 'a span per chunk batch');
    assert.equal(batches[0]!.attributes['edgemesh.peer'], `127.0.0.1:${a.grpcPort}`, 'from the holder, a');
    assert.equal(batches[0]!.attributes['edgemesh.peer.zone'], 'eu-1', 'with its zone');
    assert.equal(batches[0]!.attributes['edgemesh.peer.region'], 'eu', 'and region');
    assert.ok(
      on('a').includes('edgemesh.peer.v1.Peer/FetchChunks'),
      'the holder served the chunks in the same trace',
    );
    assert.ok(
      on('b').includes('edgemesh.peer.v1.Peer/GetManifest'),
      'the peer that was asked is in the trace',
    );
    // Each peer call has a client span on the caller, parent of the callee's server span.
    for (const server of spans.filter(
      (s) => s.kind === SERVER && s.name.startsWith('edgemesh.peer.v1.Peer/'),
    )) {
      const client = spans.find((s) => s.spanId === server.parentSpanId);
      assert.ok(
        client,
        `${server.name} on ${String(server.resource['service.instance.id'])} has its caller's span`,
      );
      assert.equal(client.kind, CLIENT, `${server.name}: its parent is a client span`);
      assert.equal(client.name, server.name);
      assert.equal(client.resource['service.instance.id'], 'c', 'on the caller');
      assert.equal(client.attributes['rpc.system.name'], 'grpc');
      assert.equal(client.attributes['rpc.method'], server.name);
      assert.equal(client.attributes['server.address'], '127.0.0.1');
    }
    const fetchChunks = spans.find((s) => s.kind === CLIENT && s.name.endsWith('/FetchChunks'));
    assert.equal(fetchChunks?.attributes['server.port'], a.grpcPort, 'FetchChunks called on the holder');
    assert.ok(
      batches.some((b) => b.spanId === fetchChunks.parentSpanId),
      'inside its chunk batch span',
    );
    // OTEL_RESOURCE_ATTRIBUTES reaches the exported resource
    const c0 = spans.find((s) => s.resource['service.instance.id'] === 'c')!;
    assert.equal(c0.resource['k8s.namespace.name'], 'shop');
    assert.equal(c0.resource['k8s.pod.name'], 'edgemesh-c');
    assert.equal(
      spans.find((s) => s.resource['service.instance.id'] === 'a')!.resource['cloud.availability_zone'],
      'eu-1',
    );
  });

  it('traces a local hit (the fast path) as the same server span, its log lines in the trace', async () => {
    const c = agents[2]!;
    const body = randomBytes(4096);
    assert.equal((await fetch(`${c.url}/v1/objects/traced/local`, { method: 'PUT', body })).status, 201);
    const traceId = randomBytes(16).toString('hex');
    const parent = randomBytes(8).toString('hex');
    const res = await fetch(`${c.url}/v1/objects/traced/local`, {
      headers: { traceparent: `00-${traceId}-${parent}-01` },
    });
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), body);
    assert.equal(res.headers.get('x-edgemesh-source'), 'local');
    const span = await eventually(
      () => Promise.resolve(receiver.spans.find((s) => s.traceId === traceId)),
      15_000,
      'the span of the local hit',
    );
    assert.equal(span.name, 'GET /v1/objects/{key}');
    assert.equal(span.kind, SERVER);
    assert.equal(span.parentSpanId, parent, "a child of the client's span");
    assert.equal(span.resource['service.instance.id'], 'c');
    assert.deepEqual(
      {
        method: span.attributes['http.request.method'],
        route: span.attributes['http.route'],
        key: span.attributes['edgemesh.key'],
        source: span.attributes['edgemesh.source'],
        status: span.attributes['http.response.status_code'],
      },
      { method: 'GET', route: '/v1/objects/{key}', key: 'traced/local', source: 'local', status: 200 },
    );
    await eventually(
      () => Promise.resolve(c.logs.some((l) => l.includes(`"trace_id":"${traceId}"`)) || undefined),
      5000,
      'a log line with the trace id',
    );
  });

  it('puts the trace id in log lines written inside a traced operation', async () => {
    const c = agents[2]!;
    const traceId = randomBytes(16).toString('hex');
    // C logs each read at debug level, inside the read's trace.
    await fetch(`${c.url}/v1/objects/traced/missing`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    });
    await eventually(
      () => Promise.resolve(c.logs.some((l) => l.includes(`"trace_id":"${traceId}"`)) || undefined),
      5000,
      'a log line with the trace id',
    );
  });

  it('traces an origin fetch: a span with the origin, its answer and the bytes', async () => {
    const c = agents[2]!;
    const traceId = randomBytes(16).toString('hex');
    const res = await fetch(`${c.url}/v1/objects/cdn/movie.bin`, {
      headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    });
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(fromOrigin), 'the origin’s bytes');
    assert.equal(res.headers.get('x-edgemesh-source'), 'origin');
    const span = await eventually(
      () =>
        Promise.resolve(
          receiver.spans.find((s) => s.traceId === traceId && s.name === 'edgemesh.fetch_origin'),
        ),
      15_000,
      'the origin fetch span',
    );
    assert.equal(span.attributes['url.full'], `${origin.url}movie.bin`);
    assert.equal(span.attributes['http.response.status_code'], 200);
    assert.equal(span.attributes['edgemesh.bytes'], fromOrigin.length);
    const root = receiver.spans.find((s) => s.traceId === traceId && s.name === 'GET /v1/objects/{key}');
    assert.equal(root?.attributes['edgemesh.source'], 'origin');
    // and its duration, in the origin fetch histogram
    const text = await (await fetch(`${c.url}/metrics`)).text();
    assert.match(text, /^edgemesh_origin_fetch_duration_seconds_count\{outcome="ok"[^}]*\} 1$/m);
    // this node's own health score (Lifeguard's), read from the overlay at each scrape (0 when its
    // probes are answered; a loaded machine may miss one)
    assert.match(text, /^edgemesh_membership_local_health(\{[^}]*\})? [0-8]$/m);
  });

  it('pushes its metrics over OTLP too, named as on /metrics, with the node as resource', async () => {
    const got = await eventually(
      () =>
        Promise.resolve(
          receiver.metrics.find(
            (m) => m.name === 'edgemesh.peer.received' && m.resource['service.instance.id'] === 'c',
          ),
        ),
      10_000,
      'edgemesh.peer.received from c over OTLP',
    );
    assert.equal(got.resource['service.name'], 'edgemesh-agent');
    assert.equal(got.resource['cloud.availability_zone'], 'eu-3');
    assert.ok(receiver.metrics.some((m) => m.name === 'http.server.request.duration'));
  });
});
