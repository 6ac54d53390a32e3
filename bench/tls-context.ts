/**
 * tls-context: what a mutual-TLS connection of the bulk stream costs, made the agent's way (every
 * connection given the node's one TLS context: `peerTlsOptions`, `NodeCredentials.secureContext`)
 * and, side by side, the way it was made before a5e64c6 (the certificate, key and trust bundle given
 * to each connection, which parses them into a context of its own). Each way runs in a process of its
 * own (so that one's memory is not the other's): N connections one after another to a TLS server in
 * that process that asks for the client's certificate, each closed once the server has answered.
 * Per way: connections per second, CPU per connection (both ends: they share the process) and RSS
 * growth over the run, which counts OpenSSL memory V8 does not see until it collects the sockets.
 * The two ways alternate, `--rounds` times (default 3; --quick: 1 round of 200 connections).
 */
import { once } from 'node:events';
import { createServer, connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { testCredentials } from '../agent/harness/test-ca.ts';
import { peerTlsOptions } from '../agent/src/security/grpc-credentials.ts';
import { childJson } from './support/child-json.ts';
import { describeMachine, median, round } from './support/machine.ts';

const WAYS = ['shared', 'per-connection'] as const;
type Way = (typeof WAYS)[number];
interface Figures {
  way: Way;
  connections: number;
  perSecond: number;
  cpuMs: number;
  rssMB: number;
}

/** One way, in this process: N connections, then its figures as a JSON line. */
async function measure(way: Way, n: number): Promise<Figures> {
  const server = await testCredentials('tls-bench-server', { mesh: 'bench' });
  const client = await testCredentials('tls-bench-client', { mesh: 'bench' });
  const listener = createServer(
    {
      cert: server.certPem,
      key: server.keyPem,
      ca: server.bundlePem,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (socket) => {
      socket.getPeerCertificate(); // as the agent reads the caller's identity
      socket.on('data', () => undefined);
      socket.end('ok');
    },
  );
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const { port } = listener.address() as { port: number };
  const shared = peerTlsOptions(client, undefined);
  const options = (): ConnectionOptions =>
    way === 'shared'
      ? shared
      : {
          ...shared,
          secureContext: undefined,
          cert: client.certPem,
          key: client.keyPem,
          ca: client.bundlePem,
        };
  const rss0 = process.memoryUsage().rss;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve, reject) => {
      const socket: TLSSocket = connect({ ...options(), host: '127.0.0.1', port }, () => socket.end());
      socket.on('data', () => undefined);
      socket.on('close', () => resolve());
      socket.on('error', reject);
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const figures = {
    way,
    connections: n,
    perSecond: n / seconds,
    cpuMs: (cpu.user + cpu.system) / 1000 / n,
    rssMB: (process.memoryUsage().rss - rss0) / 1e6,
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
  const n = quick ? 200 : 2000;
  const roundsArg = args.indexOf('--rounds');
  const rounds = quick ? 1 : roundsArg >= 0 ? Number(args[roundsArg + 1]) : 3;
  if (!Number.isSafeInteger(rounds) || rounds < 1)
    throw new Error('--rounds takes a whole number of at least 1');
  console.log(`# tls-context: ${n} mutual-TLS connections per way, ${rounds} round(s), ways alternated`);
  console.log(`# machine: ${describeMachine()}`);
  const results: Record<Way, Figures[]> = { shared: [], 'per-connection': [] };
  for (let r = 0; r < rounds; r++)
    for (const way of r % 2 === 0 ? WAYS : [...WAYS].reverse()) {
      const f = await measureApart(way, n);
      results[way].push(f);
      console.log(
        `# ${way}: ${round(f.perSecond, 0)} conn/s, ${round(f.cpuMs, 3)} ms CPU per connection, RSS +${round(f.rssMB, 1)} MB`,
      );
    }
  const m = (way: Way, key: 'perSecond' | 'cpuMs' | 'rssMB') => median(results[way].map((f) => f[key]));
  console.log(
    JSON.stringify({
      bench: 'tls-context',
      connections: n,
      rounds,
      shared_conn_per_s: round(m('shared', 'perSecond'), 0),
      per_connection_conn_per_s: round(m('per-connection', 'perSecond'), 0),
      shared_cpu_ms: round(m('shared', 'cpuMs'), 3),
      per_connection_cpu_ms: round(m('per-connection', 'cpuMs'), 3),
      shared_rss_mb: round(m('shared', 'rssMB'), 1),
      per_connection_rss_mb: round(m('per-connection', 'rssMB'), 1),
      cpu_ratio: round(m('shared', 'cpuMs') / m('per-connection', 'cpuMs'), 2),
    }),
  );
}

if (process.argv[2] === '--measure') {
  const way = process.argv[3] as Way;
  if (!WAYS.includes(way)) throw new Error(`tls-context: no way ${way}`);
  console.log(JSON.stringify(await measure(way, Number(process.argv[4]))));
  process.exit(0);
}
