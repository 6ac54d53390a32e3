/**
 * idle: what an agent left idle costs in memory over minutes, where `e2e/containers.test.ts` reads it
 * seconds after the start (issue 13's goal: 80 MB). Agents run from the bundle `scripts/build.ts`
 * makes (what the image runs) with the image's V8 flags and malloc settings (`node-flags.ts`), on a
 * real nats-server, joined into one mesh; nothing stored, nothing read. Each is probed as the
 * operator's DaemonSet has the kubelet probe it (`/readyz` every 5 s, `/healthz` every 10 s) and
 * scraped every 15 s (Prometheus's usual interval). Side by side: a bare Node process with the same
 * flags and settings, the floor under any agent. Every 10 s it prints each process's RSS with its
 * anonymous and file-backed parts (the file-backed part is mostly the Node binary's code: it grows by
 * about 5 MiB the first time V8 optimizes anything with TurboFan, which idle work does within
 * minutes; docs/deploy.md). Last line:
 * `{"bench":"idle","agents":…,"minutes":…,"start_mib":…,"end_mib":…,"max_mib":…,"end_anon_mib":…,"end_file_mib":…,"second_half_mib":…,"quiet_compactions":…,"compaction_pause_ms":…,"node_mib":…,"goal_mib":76.3}`
 * (start and end: the agents' mean at the first sample, once all are joined, and at the last; max:
 * the largest of any agent's samples; second_half: their mean over the run's second half; node: the
 * bare process at the end; quiet_compactions and compaction_pause_ms: memory given back while quiet,
 * all agents together, and its mean pause: agent/src/quiet-compaction.ts). Probes, like a kubelet's,
 * open a connection each and give up after a second. `--minutes M` (default 5; --quick 0.5),
 * `--agents N` (default 2; at least 2, so that there is a mesh to join), `--drop-flag NAME` (run
 * the agents and the bare process without `--NAME` of the image's flags, to measure what it does;
 * e.g. `--drop-flag no-concurrent-recompilation`; the last line's `dropped_flag` names it, else null),
 * `--add-flag FLAG` (run them with `--FLAG` too, e.g. `--add-flag no-turbofan`; `added_flag`).
 * The agents get their certificates as in Kubernetes, from the operator's issuance endpoint (its real
 * checks, run in this process; operator/harness/test-issuer.ts), so they never load the CA's code;
 * `--file-ca` has each sign its own with a file-based CA instead, as the local mesh does (the last
 * line's `certificates` says which: `issuer` or `file-ca`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentProcess, eventually, startAgentProcess } from '../agent/harness/agent-process.ts';
import { natsUnavailable, startNatsServer } from '../agent/harness/nats-server.ts';
import { startTestIssuer, type TestIssuer } from '../operator/harness/test-issuer.ts';
import { askedFlags, buildBundle, buildOfAll, imageEnv } from './support/bundle.ts';
import { onInterrupt } from './support/interrupt.ts';
import { strictOptions } from './support/options.ts';
import { describeMachine, round } from './support/machine.ts';

/** 80 MB, the goal, in MiB. */
const GOAL_MIB = round(80e6 / 2 ** 20, 1);
const SAMPLE_MS = 10_000;
const PROBES = [
  { path: '/readyz', everyMs: 5_000 },
  { path: '/healthz', everyMs: 10_000 },
  { path: '/metrics', everyMs: 15_000 },
];

interface Memory {
  rss: number;
  anon: number;
  file: number;
}

/** VmRSS and its anonymous and file-backed parts of process `child`, in MiB. */
function memoryOf(child: ChildProcess, what: string): Memory {
  if (child.exitCode !== null || child.signalCode !== null)
    throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) during the run`);
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  const mib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) / 1024;
  return { rss: mib('VmRSS'), anon: mib('RssAnon'), file: mib('RssFile') };
}

/** The options `idle` takes (`--quick` is run.ts's, passed on), parsed strictly. */
const options = (args: readonly string[]) =>
  strictOptions(
    args,
    {
      quick: { type: 'boolean' },
      minutes: { type: 'string' },
      agents: { type: 'string' },
      'drop-flag': { type: 'string' },
      'add-flag': { type: 'string' },
      'file-ca': { type: 'boolean' },
    },
    '--minutes M, --agents N, --drop-flag NAME, --add-flag FLAG, --file-ca',
  );

/** GETs `url` on a connection of its own, as a kubelet's probe does, giving up after a second. */
function probe(url: string): void {
  const request = get(url, { agent: false, timeout: 1000 }, (response) => response.resume());
  request.on('timeout', () => request.destroy());
  request.on('error', () => undefined); // the agent's problem, which the samples show
}

export async function run(quick: boolean, args: readonly string[]): Promise<void> {
  const values = options(args);
  const minutes = Number(values.minutes ?? (quick ? 0.5 : 5));
  const count = Number(values.agents ?? 2);
  if (!(Number.isFinite(minutes) && minutes > 0) || !Number.isInteger(count) || count < 2)
    throw new RangeError('--minutes must be a positive number and --agents a whole number of at least 2');
  const fileCa = values['file-ca'] ?? false;
  const { nodeFlags, dropped: drop, added, described } = askedFlags(values['drop-flag'], values['add-flag']);
  const unavailable = natsUnavailable();
  if (unavailable) throw new Error(`idle needs a real nats-server: ${unavailable}`);
  console.log(`# machine: ${describeMachine()}`);
  console.log(`# node flags: ${nodeFlags.join(' ')} ${described}`);

  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-idle-'));
  // As the image runs the agent: its V8 flags, malloc settings and NODE_ENV.
  const env = imageEnv();
  const agents: AgentProcess[] = [];
  const timers: NodeJS.Timeout[] = [];
  let nats: Awaited<ReturnType<typeof startNatsServer>> | undefined;
  let issuer: TestIssuer | undefined;
  let bare: ChildProcess | undefined;
  const removeInterrupt = onInterrupt(
    () => {
      bare?.kill('SIGKILL');
      for (const agent of agents) agent.child.kill('SIGKILL');
    },
    async () => {
      await nats?.stop();
      await issuer?.close();
      await rm(dir, { recursive: true, force: true });
    },
  );
  try {
    const dist = buildBundle(dir);
    nats = await startNatsServer();
    bare = spawn(process.execPath, [...nodeFlags, '-e', 'setInterval(() => {}, 60_000)'], {
      env: { ...process.env, ...env },
      stdio: 'ignore',
    });
    if (!fileCa)
      issuer = await startTestIssuer({ mesh: { namespace: 'bench', name: 'idle' }, host: '127.0.0.1' });
    for (let i = 1; i <= count; i++) {
      const node = `idle-${i}`;
      // Without issuer flags the agent harness gives each agent the test process's file CA.
      const certificates = issuer ? await issuer.agentFilesIn(dir, node) : [];
      agents.push(
        await startAgentProcess(
          [
            ...['--node-id', node, '--zone', `z${i}`, '--region', 'r1'],
            ...['--store.dir', join(dir, `store-${i}`), '--control-plane.servers', nats.url],
            ...certificates,
          ],
          30_000,
          { main: join(dist, 'agent.mjs'), nodeFlags, env },
        ),
      );
    }
    await eventually(
      async () =>
        (await Promise.all(agents.map((a) => a.status()))).every((s) => s.peers.alive === count - 1)
          ? true
          : undefined,
      30_000,
      `${count} agents to see each other alive`,
    );
    for (const agent of agents)
      for (const { path, everyMs } of PROBES)
        timers.push(setInterval(() => probe(`${agent.url}${path}`), everyMs));

    console.log(
      `# ${count} agents joined over NATS (certificates ${issuer ? "from the operator's issuance endpoint, as in Kubernetes" : 'from a file CA, each signing its own'}), probed and scraped; RSS (anonymous + file-backed) in MiB`,
    );
    console.log(`#   t_s  ${agents.map((_, i) => `agent ${i + 1}`.padEnd(22)).join('')}bare node`);
    const samples: Memory[][] = [];
    let node: Memory = { rss: 0, anon: 0, file: 0 };
    const started = performance.now();
    for (;;) {
      const now = agents.map((a, i) => memoryOf(a.child, `agent ${i + 1}`));
      node = memoryOf(bare, 'the bare node process');
      samples.push(now);
      const t = (performance.now() - started) / 1000;
      const show = (m: Memory) => `${m.rss.toFixed(1)} (${m.anon.toFixed(1)}+${m.file.toFixed(1)})`;
      console.log(
        `# ${t.toFixed(0).padStart(5)}  ${now.map((m) => show(m).padEnd(22)).join('')}${show(node)}`,
      );
      if (t >= minutes * 60) break;
      await new Promise((r) => setTimeout(r, Math.min(SAMPLE_MS, minutes * 60_000 - t * 1000 + 1)));
    }
    const mean = (ms: Memory[], k: keyof Memory) => ms.reduce((sum, m) => sum + m[k], 0) / ms.length;
    const first = samples[0]!;
    const last = samples.at(-1)!;
    // Memory given back while quiet (quiet-compaction.ts), over all the agents.
    const compactions = (
      await Promise.all(agents.map(async (a) => (await a.status()).counters.quietCompactions))
    ).reduce((sum, c) => ({ count: sum.count + c.count, pauseMs: sum.pauseMs + c.pauseMs }), {
      count: 0,
      pauseMs: 0,
    });
    console.log(
      JSON.stringify({
        bench: 'idle',
        agents: count,
        minutes,
        // Read from the agents' processes: `image`, or `mixed` with a flag dropped; with a flag added
        // (which buildOf does not look for), `mixed`.
        agent_build: added === undefined ? buildOfAll(agents.map((a) => a.child.pid)) : 'mixed',
        start_mib: round(mean(first, 'rss'), 1),
        end_mib: round(mean(last, 'rss'), 1),
        max_mib: round(Math.max(...samples.flat().map((m) => m.rss)), 1),
        end_anon_mib: round(mean(last, 'anon'), 1),
        end_file_mib: round(mean(last, 'file'), 1),
        // The agents' mean over the run's second half: the level it settles at, not one sample's.
        second_half_mib: round(mean(samples.slice(Math.floor(samples.length / 2)).flat(), 'rss'), 1),
        quiet_compactions: compactions.count,
        compaction_pause_ms: compactions.count ? round(compactions.pauseMs / compactions.count, 1) : null,
        node_mib: round(node.rss, 1),
        goal_mib: GOAL_MIB,
        dropped_flag: drop ?? null,
        added_flag: added ?? null,
        certificates: issuer ? 'issuer' : 'file-ca',
      }),
    );
  } finally {
    removeInterrupt();
    for (const timer of timers) clearInterval(timer);
    if (bare && bare.exitCode === null && bare.signalCode === null) {
      bare.kill('SIGKILL');
      await once(bare, 'exit');
    }
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    await issuer?.close();
    await rm(dir, { recursive: true, force: true });
  }
}
