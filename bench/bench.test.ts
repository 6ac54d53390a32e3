import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { geoLabUnavailable } from '../agent/harness/geo-lab.ts';
import { controlPlaneUnavailable } from '../e2e/harness/control-plane.ts';
import { nginxUnavailable } from './support/nginx.ts';
import { THREAD_KINDS } from './support/thread-cpu.ts';
import { wrkUnavailable } from './support/wrk.ts';

const RUN = fileURLToPath(new URL('./run.ts', import.meta.url));
/**
 * Benchmarks that start agents, and say in their last line how those really ran (`agent_build`, read
 * from the processes by bundle.ts's buildOf): as the image runs them, or as `--sources` asks (chaos
 * too: chaos.test.ts).
 */
const STARTS_AGENTS = new Set(['transfer', 'hit', 'ingest', 'membership', 'swarm', 'swarm-vs-peer']);
for (const name of ['locality', 'load', 'scale', 'idle']) STARTS_AGENTS.add(name);
/** Benchmarks whose --sources keeps the image's flags and settings (memory benches). */
const SOURCES_KEEP_SETTINGS = new Set(['scale']);

/** Keeps every benchmark runnable and its last line's shape stable. Figures are not judged here. */
describe('benchmarks (--quick, shape only)', () => {
  /** Name, the keys its last line must have, and its arguments (default --quick). */
  const cases: [string, string[], string[]?][] = [
    [
      'transfer',
      [
        'bench',
        'mesh_MBps',
        'mesh_grpc_MBps',
        'bulk_gain',
        'raw_tcp_MBps',
        'limit_MBps',
        'ratio',
        'ratio_to_limit',
        'cpu_by_thread',
      ],
    ],
    ['hit', ['bench', 'p50_ms', 'p99_ms', 'baseline_p99_ms', 'ratio']],
    // The agent from the sources: what ran is read from the process.
    ['hit', ['bench', 'p99_ms', 'ratio'], ['--quick', '--sources']],
    [
      'ingest',
      ['bench', 'put_MBps', 'baseline_put_MBps', 'put_ratio', 'read_MBps', 'read_ratio', 'put_cpu_by_thread'],
    ],
    // The agent from the sources, as the bench ran it before.
    ['ingest', ['bench', 'put_ratio', 'read_ratio', 'put_cpu_by_thread'], ['--quick', '--sources']],
    ['membership', ['bench', 'agents', 'detect_s', 'join_s']],
    ['swarm', ['bench', 'nodes', 'bytes', 'origin_bytes', 'time_s', 'naive_s', 'bound_s', 'ratio_to_bound']],
    [
      'swarm-vs-peer',
      [
        ...['bench', 'nodes', 'edgemesh_s', 'webtorrent_s', 'naive_s', 'bound_s'],
        ...['edgemesh_origin_bytes', 'webtorrent_origin_bytes'],
      ],
    ],
    ['locality', ['bench', 'near_fraction', 'far_group_ratio']],
    [
      'operator',
      [
        ...['bench', 'meshes', 'nodes', 'p50_ms', 'p99_ms', 'reconciles_per_s', 'rss_mb'],
        // Side by side with the fake, where a real control plane can run here.
        ...(controlPlaneUnavailable()
          ? []
          : ['real_p50_ms', 'real_p99_ms', 'real_reconciles_per_s', 'real_rss_mb']),
      ],
    ],
    [
      'load',
      [
        ...['bench', 'rps', 'node_rps', 'ratio_node', 'p99_ms', 'errors', 'large_rps', 'large_ratio_node'],
        ...['main_us_per_req', 'node_main_us_per_req', 'cpu_us_per_req', 'node_cpu_us_per_req'],
        // null, and said why, when nginx is not installed.
        ...(nginxUnavailable() ? [] : ['nginx_rps', 'ratio_nginx']),
      ],
    ],
    // after the agent's first quiet compaction (a minute and more, after the one at start), and
    // without one of the image's flags
    [
      'load',
      ['bench', 'rps', 'ratio_node', 'p99_ms', 'errors', 'main_us_per_req'],
      ['--quick', '--after-quiet', '--drop-flag', 'v8-pool-size'],
    ],
    // --quick is 100,000 objects, a few minutes here: the shape needs far fewer.
    [
      'scale',
      [
        ...['bench', 'objects', 'disk_ratio', 'rss_bytes_per_object', 'ready_s', 'p99_ms'],
        ...['marginal_rss_bytes_per_object', 'fixed_rss_MiB', 'projected_rss_bytes_per_object'],
      ],
      ['--objects', '3000'],
    ],
    // from the sources, with the image's flags and settings
    ['scale', ['bench', 'objects', 'rss_bytes_per_object'], ['--objects', '3000', '--sources']],
    [
      'tls-context',
      [
        ...['bench', 'connections', 'shared_conn_per_s', 'per_connection_conn_per_s', 'shared_cpu_ms'],
        ...['per_connection_cpu_ms', 'shared_rss_mb', 'per_connection_rss_mb', 'cpu_ratio'],
        ...['node_tls_server_conn_per_s', 'node_tls_server_cpu_ms', 'node_tls_server_rss_mb'],
        ...['shared_kb_per_connection', 'node_tls_server_kb_per_connection'],
      ],
    ],
    // --quick is 400,000 operations per way: the shape needs far fewer.
    [
      'hot-memory',
      [
        ...['bench', 'ops', 'slabs_rss_mb', 'as_handed_rss_mb', 'slabs_rest_mb', 'as_handed_rest_mb'],
        ...['slabs_rest_slope_mb_per_mop', 'as_handed_rest_slope_mb_per_mop', 'rss_ratio', 'cpu_ratio'],
        ...['slabs_hit_ratio', 'as_handed_hit_ratio'],
      ],
      ['--ops', '20000'],
    ],
    // --quick is half a minute of idling: the shape needs less.
    [
      'idle',
      [
        ...['bench', 'agents', 'minutes', 'start_mib', 'end_mib', 'max_mib', 'end_anon_mib', 'end_file_mib'],
        ...['node_mib', 'goal_mib'],
      ],
      ['--minutes', '0.2'],
    ],
    // and without one of the image's flags, with one it does not set, certified by a file CA, as
    // comparisons run it
    [
      'idle',
      ['bench', 'agents', 'minutes', 'start_mib', 'end_mib', 'node_mib'],
      [
        ...['--minutes', '0.2', '--drop-flag', 'no-concurrent-recompilation'],
        ...['--add-flag', 'no-turbofan', '--file-ca'],
      ],
    ],
  ];
  const labMissing = geoLabUnavailable();
  if (labMissing) console.log(`# locality bench skipped: ${labMissing}`);
  const wrkMissing = wrkUnavailable();
  if (wrkMissing) console.log(`# load bench skipped: ${wrkMissing}`);
  for (const [name, keys, args = ['--quick']] of cases) {
    const skip =
      name === 'locality' && labMissing ? labMissing : name === 'load' && wrkMissing ? wrkMissing : false;
    it(
      `${name}${args.includes('--after-quiet') ? ' --after-quiet' : ''}${args.includes('--drop-flag') ? ' --drop-flag' : ''}${args.includes('--add-flag') ? ' --add-flag' : ''}${args.includes('--file-ca') ? ' --file-ca' : ''}${args.includes('--sources') ? ' --sources' : ''} prints its machine and a JSON last line`,
      { skip },
      () => {
        // Shape only: the time a quick run takes is the benchmark's business, not this test's. The cap
        // is for a run that hangs: under the CPU hog, quick locality runs took 36-98 s against a 120 s cap.
        const r = spawnSync(process.execPath, [RUN, name, ...args], { encoding: 'utf8', timeout: 600_000 });
        assert.equal(r.status, 0, `${r.signal ? `killed (${r.signal}) after the cap; ` : ''}${r.stderr}`);
        const lines = r.stdout.trim().split('\n');
        assert.match(r.stdout, /# machine: \d+ x /);
        const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
        assert.equal(last.bench, name);
        for (const key of keys) {
          if (key === 'bench') continue;
          const value = last[key];
          if (!key.endsWith('cpu_by_thread')) {
            assert.ok(typeof value === 'number' && Number.isFinite(value), `${key} in ${lines.at(-1)}`);
            continue;
          }
          // CPU by thread: for each process (side, or pipeline and side), a finite figure per kind.
          const sides = (v: unknown): unknown[] =>
            typeof v === 'object' && v !== null && !THREAD_KINDS.every((k) => k in v)
              ? Object.values(v).flatMap(sides)
              : [v];
          const found = sides(value);
          assert.equal(found.length, name === 'transfer' ? 4 : 2, `${key} in ${lines.at(-1)}`);
          for (const side of found) {
            const kinds = Object.keys(side as object).sort();
            assert.deepEqual(kinds, [...THREAD_KINDS].sort(), `${key} in ${lines.at(-1)}`);
            for (const k of THREAD_KINDS) {
              const figure = (side as Record<string, unknown>)[k];
              assert.ok(typeof figure === 'number' && Number.isFinite(figure), `${key} in ${lines.at(-1)}`);
            }
          }
        }
        // Measured as the image runs the agents (but for a dropped or added flag), unless asked otherwise.
        if (STARTS_AGENTS.has(name))
          assert.equal(
            last.agent_build,
            args.includes('--drop-flag') || args.includes('--add-flag')
              ? 'mixed'
              : !args.includes('--sources')
                ? 'image'
                : SOURCES_KEEP_SETTINGS.has(name)
                  ? 'sources+image-settings'
                  : 'sources',
            lines.at(-1),
          );
        if ('ratio' in last) assert.ok((last.ratio as number) > 0);
        const dropped = args.indexOf('--drop-flag');
        if (dropped >= 0) {
          const flags = /^# node flags: (.*) \(/m.exec(r.stdout)?.[1] ?? '';
          assert.ok(flags.length > 0 && !flags.split(' ').includes(`--${args[dropped + 1]}`), r.stdout);
          assert.equal(last.dropped_flag, args[dropped + 1]);
        }
        const added = args.indexOf('--add-flag');
        if (added >= 0) {
          const flags = /^# node flags: (.*) \(/m.exec(r.stdout)?.[1] ?? '';
          assert.ok(flags.split(' ').includes(`--${args[added + 1]}`), r.stdout);
          assert.equal(last.added_flag, args[added + 1]);
        }
        if (name === 'load') {
          assert.equal(last.after_quiet, args.includes('--after-quiet'), lines.at(-1));
          if (args.includes('--after-quiet')) {
            // Waited for a compaction while quiet (three 20 s periods), not the one at start.
            const waited =
              /^# the agent left alone after its start: memory given back while quiet after (\d+) s$/m.exec(
                r.stdout,
              );
            assert.ok(waited && Number(waited[1]) >= 40, r.stdout);
          }
        }
        if (name === 'idle')
          assert.equal(last.certificates, args.includes('--file-ca') ? 'file-ca' : 'issuer');
      },
    );
  }
  it('idle refuses to drop a flag the image does not set, naming those it does', () => {
    const r = spawnSync(process.execPath, [RUN, 'idle', '--drop-flag', 'nope'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--drop-flag "nope": the image sets max-semi-space-size, /);
  });
  it('load refuses an unknown option, one given twice, and a flag change with --sources, before it starts anything', () => {
    const refused = (args: string[], message: RegExp) => {
      const r = spawnSync(process.execPath, [RUN, 'load', ...args], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0, r.stdout);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stdout, /^# load:/m); // nothing started
    };
    refused(['--quick', '--bogus'], /Unknown option '--bogus' \(--quick, --sources, --after-quiet, /);
    refused(
      ['--drop-flag', 'no-memory-reducer', '--drop-flag', 'v8-pool-size'],
      /--drop-flag is given twice/,
    );
    refused(['--drop-flag', 'nope'], /--drop-flag "nope": the image sets max-semi-space-size, /);
    refused(['--sources', '--add-flag', 'no-turbofan'], /which --sources runs without/);
  });
  it('refuses an unknown benchmark', () => {
    const r = spawnSync(process.execPath, [RUN, 'nope'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /usage: npm run bench -- <transfer\|hit\|ingest\|membership\|swarm\|swarm-vs-peer\|locality\|operator\|chaos\|load\|scale\|tls-context\|hot-memory\|idle>/,
    );
  });
});
