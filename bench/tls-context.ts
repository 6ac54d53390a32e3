/**
 * tls-context: what a mutual-TLS connection of the bulk stream costs, made the agent's way (every
 * connection given the node's one TLS context: `peerTlsOptions`, `NodeCredentials.secureContext`;
 * accepted by the peer port's server, `mutual-tls-server.ts`) and, side by side, two others: the
 * client's way before a5e64c6 (`per-connection`: the certificate, key and trust bundle given to each
 * connection, which parses them into a context of its own), and the server's before 1d98a1f
 * (`node-tls-server`: node:tls's own server, which in Node 24 keeps a reference to every client
 * certificate it checks). Each way runs in a process of its own (so that one's memory is not the
 * other's): N connections one after another to the server in that process, each closed once the
 * server has answered. Per way: connections per second, CPU per connection (both ends: they share
 * the process), the RSS the run leaves after a full garbage collection (what stays, not what V8 has
 * yet to collect) and, the connections made in six batches with RSS read after each, its growth per
 * connection over the last three: what each connection keeps for good (the allocators' own growth
 * levels off in the first batches; a leak goes on). The ways alternate, `--rounds` times (default
 * 3; --quick: 1 round of 204 connections; 2,004 otherwise, a whole number of batches).
 */
import { once } from 'node:events';
import type { Server } from 'node:net';
import { createServer, connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { testCredentials } from '../agent/harness/test-ca.ts';
import { peerTlsOptions } from '../agent/src/security/grpc-credentials.ts';
import { BULK_ALPN } from '../agent/src/transport/bulk-wire.ts';
import { createMutualTlsServer } from '../agent/src/transport/mutual-tls-server.ts';
import { childJson } from './support/child-json.ts';
import { describeMachine, median, round } from './support/machine.ts';

const WAYS = ['shared', 'per-connection', 'node-tls-server'] as const;
type Way = (typeof WAYS)[number];
interface Figures {
  way: Way;
  connections: number;
  perSecond: number;
  cpuMs: number;
  /** RSS after a full collection, at the end against the start. */
  rssMB: number;
  /** Its growth per connection over the later batches: what each connection keeps for good. */
  keptKb: number;
}
/** Each way's connections are made in so many batches, RSS read after each. */
const BATCHES = 6;

/** One way, in this process: N connections, then its figures as a JSON line. */
async function measure(way: Way, n: number): Promise<Figures> {
  const server = await testCredentials('tls-bench-server', { mesh: 'bench' });
  const client = await testCredentials('tls-bench-client', { mesh: 'bench' });
  const answer = (socket: TLSSocket) => {
    socket.getPeerCertificate(); // as the agent reads the caller's identity
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    socket.end('ok');
  };
  const context = { cert: server.certPem, key: server.keyPem, ca: server.bundlePem };
  const listener: Server =
    way === 'node-tls-server'
      ? createServer({ ...context, requestCert: true, rejectUnauthorized: true }, answer)
      : createMutualTlsServer({
          context,
          ALPNProtocols: [BULK_ALPN, 'h2'],
          handshakeTimeoutMs: 10_000,
          secure: answer,
        }).server;
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const { port } = listener.address() as { port: number };
  const shared = peerTlsOptions(client, undefined);
  const options = (): ConnectionOptions =>
    way !== 'per-connection'
      ? shared // node-tls-server changes only the server
      : {
          ...shared,
          secureContext: undefined,
          cert: client.certPem,
          key: client.keyPem,
          ca: client.bundlePem,
        };
  // RSS after a full collection, after each of BATCHES batches: what the connections leave, not
  // what V8 has yet to collect. The allocators' own growth levels off after the first batches; what
  // each connection keeps for good goes on rising batch after batch.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const settledRss = async () => {
    gc();
    await new Promise((resolve) => setImmediate(resolve)); // the sockets' handles closed
    gc();
    return process.memoryUsage().rss;
  };
  const rss = [await settledRss()];
  const perBatch = Math.ceil(n / BATCHES);
  let seconds = 0;
  let cpuMicros = 0;
  for (let b = 0; b < BATCHES; b++) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < perBatch; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket: TLSSocket = connect({ ...options(), host: '127.0.0.1', port }, () => socket.end());
        socket.on('data', () => undefined);
        socket.on('close', () => resolve());
        socket.on('error', reject);
      });
    }
    seconds += (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    cpuMicros += cpu.user + cpu.system;
    rss.push(await settledRss());
  }
  const made = perBatch * BATCHES;
  // Over the later half of the batches (the first ones are the allocators' warm-up).
  const from = Math.floor(BATCHES / 2);
  const figures = {
    way,
    connections: made,
    perSecond: made / seconds,
    cpuMs: cpuMicros / 1000 / made,
    rssMB: (rss.at(-1)! - rss[0]!) / 1e6,
    keptKb: (rss.at(-1)! - rss[from]!) / 1e3 / ((BATCHES - from) * perBatch),
  };
  listener.close();
  server.close();
  client.close();
  return figures;
}

/** One way in a child process of its own. */
async function measureApart(way: Way, n: number): Promise<Figures> {
  return childJson<Figures>(
    [fileURLToPath(import.meta.url), '--measure', way, String(n)],
    `tls-context: measuring ${way}`,
  );
}

export async function run(quick: boolean, args: readonly string[]): Promise<void> {
  // A whole number of batches (measure's BATCHES).
  const n = quick ? 204 : 2004;
  const roundsArg = args.indexOf('--rounds');
  const rounds = quick ? 1 : roundsArg >= 0 ? Number(args[roundsArg + 1]) : 3;
  if (!Number.isSafeInteger(rounds) || rounds < 1)
    throw new Error('--rounds takes a whole number of at least 1');
  console.log(`# tls-context: ${n} mutual-TLS connections per way, ${rounds} round(s), ways alternated`);
  console.log(`# machine: ${describeMachine()}`);
  const results: Record<Way, Figures[]> = { shared: [], 'per-connection': [], 'node-tls-server': [] };
  for (let r = 0; r < rounds; r++)
    for (const way of r % 2 === 0 ? WAYS : [...WAYS].reverse()) {
      const f = await measureApart(way, n);
      results[way].push(f);
      console.log(
        `# ${way}: ${round(f.perSecond, 0)} conn/s, ${round(f.cpuMs, 3)} ms CPU per connection, RSS +${round(f.rssMB, 1)} MB after a full collection, rising ${round(f.keptKb, 2)} KB per connection over the later batches`,
      );
    }
  const m = (way: Way, key: 'perSecond' | 'cpuMs' | 'rssMB' | 'keptKb') =>
    median(results[way].map((f) => f[key]));
  console.log(
    JSON.stringify({
      bench: 'tls-context',
      connections: results.shared[0]!.connections,
      rounds,
      shared_conn_per_s: round(m('shared', 'perSecond'), 0),
      per_connection_conn_per_s: round(m('per-connection', 'perSecond'), 0),
      shared_cpu_ms: round(m('shared', 'cpuMs'), 3),
      per_connection_cpu_ms: round(m('per-connection', 'cpuMs'), 3),
      shared_rss_mb: round(m('shared', 'rssMB'), 1),
      per_connection_rss_mb: round(m('per-connection', 'rssMB'), 1),
      cpu_ratio: round(m('shared', 'cpuMs') / m('per-connection', 'cpuMs'), 2),
      node_tls_server_conn_per_s: round(m('node-tls-server', 'perSecond'), 0),
      node_tls_server_cpu_ms: round(m('node-tls-server', 'cpuMs'), 3),
      node_tls_server_rss_mb: round(m('node-tls-server', 'rssMB'), 1),
      // What each connection leaves for good: the agent's way, and with node:tls's server.
      shared_kb_per_connection: round(m('shared', 'keptKb'), 2),
      node_tls_server_kb_per_connection: round(m('node-tls-server', 'keptKb'), 2),
    }),
  );
}

if (process.argv[2] === '--measure') {
  const way = process.argv[3] as Way;
  if (!WAYS.includes(way)) throw new Error(`tls-context: no way ${way}`);
  console.log(JSON.stringify(await measure(way, Number(process.argv[4]))));
  process.exit(0);
}
