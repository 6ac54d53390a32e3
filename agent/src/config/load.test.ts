import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseBytes } from './bytes.ts';
import { ConfigError, loadConfig, parseConfig, settings, unreadVariables } from './load.ts';

describe('configuration', () => {
  let dir: string;
  let file: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-config-'));
    file = join(dir, 'agent.yaml');
    await writeFile(
      file,
      [
        'nodeId: from-file',
        'zone: z1',
        'store:',
        '  dir: /var/lib/em',
        '  maxBytes: 2Gi',
        'peers:',
        '  - 10.0.0.1:7481',
        '  - { address: "[::1]:7481", id: b }',
      ].join('\n'),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('fills defaults around the required fields (the store, and a CA for mTLS)', async () => {
    const c = await loadConfig(
      ['--store.dir', '/data', '--security.ca.cert-file', '/ca.crt', '--security.ca.key-file', '/ca.key'],
      {},
    );
    assert.equal(c.store.dir, '/data');
    assert.equal(c.security.mtls, true, 'mTLS on by default');
    assert.deepEqual(c.security.ca, { certFile: '/ca.crt', keyFile: '/ca.key', namespace: 'local' });
    assert.equal(c.security.certificateTtlSeconds, 86_400);
    assert.equal(c.http.port, 7480);
    assert.equal(c.grpc.port, 7481);
    assert.equal(c.store.maxBytes, 10 * 2 ** 30);
    assert.deepEqual(c.peers, []);
  });

  it('layers file < environment < flags', async () => {
    const c = await loadConfig(['--config', file, '--zone', 'z3', '--peers', 'p1:1,p2:2'], {
      EDGEMESH_ZONE: 'z2',
      EDGEMESH_REGION: 'r-env',
      EDGEMESH_STORE_MAX_BYTES: '3Gi',
      EDGEMESH_HTTP_PORT: '9000',
      EDGEMESH_SECURITY_MTLS: 'false',
    });
    assert.equal(c.nodeId, 'from-file');
    assert.equal(c.zone, 'z3');
    assert.equal(c.region, 'r-env');
    assert.equal(c.store.maxBytes, 3 * 2 ** 30);
    assert.equal(c.http.port, 9000);
    assert.deepEqual(c.peers, [
      { address: 'p1:1', id: 'p1:1' },
      { address: 'p2:2', id: 'p2:2' },
    ]);
    const fromFile = await loadConfig([], { EDGEMESH_CONFIG: file, EDGEMESH_SECURITY_MTLS: 'false' });
    assert.deepEqual(fromFile.peers, [
      { address: '10.0.0.1:7481', id: '10.0.0.1:7481' },
      { address: '[::1]:7481', id: 'b' },
    ]);
  });

  it('names the EDGEMESH_ variables it does not read (a misspelled setting is not silently lost)', () => {
    assert.deepEqual(
      unreadVariables({
        EDGEMESH_STORE_MAX_BYTES: '3Gi',
        EDGEMESH_STORE_MAXBYTES: '3Gi',
        EDGEMESH_CONFIG: 'x',
        EDGEMESH_REVISION: 'abc',
        EDGEMESH_TEST_ONLY_PROTOCOL: '1.0-1.0',
        EDGEMESH_ZONE: 'z',
        EDGEMESH_ZONES: 'z',
        HOME: '/root',
      }),
      ['EDGEMESH_STORE_MAXBYTES', 'EDGEMESH_ZONES'],
    );
  });

  it('takes zone, region and weight from the operator’s topology file, unless set otherwise', async () => {
    const lab = { EDGEMESH_SECURITY_MTLS: 'false' };
    const topology = join(dir, 'topology.yaml');
    await writeFile(
      topology,
      JSON.stringify({ nodes: { 'edge-7': { zone: 'eu-1a', region: 'eu-1', weight: 4 } } }),
    );
    const c = await loadConfig(['--store.dir', '/d', '--topology-file', topology], {
      ...lab,
      EDGEMESH_NODE_ID: 'edge-7',
    });
    assert.deepEqual([c.zone, c.region, c.weight], ['eu-1a', 'eu-1', 4]);
    const own = await loadConfig(['--store.dir', '/d', '--topology-file', topology, '--zone', 'z'], {
      ...lab,
      EDGEMESH_NODE_ID: 'edge-7',
    });
    assert.equal(own.zone, 'z');
    const absent = await loadConfig(['--store.dir', '/d', '--topology-file', topology], {
      ...lab,
      EDGEMESH_NODE_ID: 'edge-8',
    });
    assert.equal(absent.zone, '');
  });

  it('names the field when a value is wrong', async () => {
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [[], {}, /store: /],
      [['--store.dir', '/d', '--http.port', '70000'], {}, /http\.port/],
      [['--store.dir', '/d', '--store.max-bytes', 'lots'], {}, /store\.maxBytes: not a byte size/],
      // Larger than any manifest may describe (cache/manifest.ts): peers would refuse its manifests.
      [['--store.dir', '/d', '--store.max-object-bytes', '257Gi'], {}, /store\.maxObjectBytes: Too big/],
      [['--store.dir', '/d', '--peers', 'no-port'], {}, /peers\.0/],
      // Longer than a timer can wait (2^31 ms): it would fire at once, a scrub after another.
      [['--store.dir', '/d', '--store.scrub-interval-hours', '597'], {}, /store\.scrubIntervalHours/],
      [['--store.dir', '/d'], { EDGEMESH_STORE_FSYNC: 'maybe' }, /store\.fsync/],
      [['--config', '/nonexistent.yaml'], {}, /cannot read config file/],
      [['--store.dir', '/d'], {}, /security\.ca: mTLS needs a node certificate/],
    ];
    for (const [argv, env, pattern] of cases) {
      await assert.rejects(
        loadConfig(argv, env),
        (e: Error) => e instanceof ConfigError && pattern.test(e.message),
        argv.join(' '),
      );
    }
  });

  it('refuses settings that would leak secrets or contradict one another, and takes their limits', () => {
    const lab = { store: { dir: '/d' }, security: { mtls: false } };
    const issuer = { url: 'https://op:8443/', tokenFile: '/t', caFile: '/op.crt', namespace: 'n', name: 'm' };
    const refused: [unknown, RegExp][] = [
      // An origin's headers are secrets: never over plain http.
      [
        { ...lab, origins: [{ prefix: 'a/', url: 'http://origin/', headersDir: '/secrets' }] },
        /origins\.0\.url: an origin with headersDir must be https/,
      ],
      [
        { ...lab, replication: { factor: 2, writeCopies: 3 } },
        /replication\.writeCopies: writeCopies cannot exceed factor/,
      ],
      [{ ...lab, weight: 1001 }, /weight: Too big/],
      [{ ...lab, weight: -1 }, /weight: Too small/],
      [{ ...lab, store: { dir: '/d', maxBytes: -1 } }, /store\.maxBytes: not a byte size/],
      [{ ...lab, store: { dir: '/d', maxBytes: '3Mi' } }, /store\.maxBytes: at least 4Mi/],
      [{ ...lab, store: { dir: '/d', memoryBytes: 1.5 } }, /store\.memoryBytes: not a byte size/],
      [
        {
          store: { dir: '/d' },
          security: { ca: { certFile: '/ca.crt', keyFile: '/ca.key' }, issuer, trustBundleFile: '/b' },
        },
        /security\.issuer: set security\.ca or security\.issuer, not both/,
      ],
    ];
    for (const [raw, pattern] of refused)
      assert.throws(
        () => parseConfig(raw),
        (e: Error) => e instanceof ConfigError && pattern.test(e.message),
        String(pattern),
      );
    const https = parseConfig({
      ...lab,
      origins: [{ prefix: 'a/', url: 'https://origin/', headersDir: '/secrets' }],
    });
    assert.deepEqual(https.origins, [{ prefix: 'a/', url: 'https://origin/', headersDir: '/secrets' }]);
    const edge = parseConfig({ ...lab, weight: 1000, replication: { factor: 2, writeCopies: 2 } });
    assert.deepEqual([edge.weight, edge.replication.writeCopies], [1000, 2]);
    const alone = parseConfig({ store: { dir: '/d' }, security: { issuer, trustBundleFile: '/b' } });
    assert.equal(alone.security.issuer?.url, issuer.url);
  });

  it('rejects unknown fields and flags', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'store: { dir: /d, maxbytes: 1 }\n');
    await assert.rejects(loadConfig(['--config', bad], {}), /store: Unrecognized key: "maxbytes"/);
    await assert.rejects(loadConfig(['--nope'], {}), /Unknown option '--nope'/);
  });

  it('derives a flag and a variable for every leaf of the schema', () => {
    const byFlag = new Map(settings().map((s) => [s.flag, s.env]));
    assert.equal(byFlag.get('store.max-bytes'), 'EDGEMESH_STORE_MAX_BYTES');
    assert.equal(byFlag.get('grpc.flow-control-window'), 'EDGEMESH_GRPC_FLOW_CONTROL_WINDOW');
    assert.equal(byFlag.get('node-id'), 'EDGEMESH_NODE_ID');
  });

  it('parses byte sizes', () => {
    assert.equal(parseBytes('64Mi'), 64 * 2 ** 20);
    assert.equal(parseBytes('1.5G'), 1.5e9);
    assert.equal(parseBytes(' 10 GiB '), 10 * 2 ** 30);
    assert.equal(parseBytes(512), 512);
    assert.equal(parseBytes('1Ki'), 1024);
    assert.equal(parseBytes('3kib'), 3 * 1024);
    assert.equal(parseBytes('1k'), 1000);
    assert.equal(parseBytes('2Ti'), 2 * 2 ** 40);
    assert.equal(parseBytes('-1'), undefined);
    assert.equal(parseBytes(-1), undefined, 'a negative number');
    assert.equal(parseBytes(1.5), undefined, 'a fraction of a byte');
    assert.equal(parseBytes(0), 0);
    assert.equal(parseBytes('1Zi'), undefined);
  });
});
