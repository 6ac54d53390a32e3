import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzSetting, nearlyValid } from '../../harness/fuzz.ts';
import { ConfigError, loadConfig, parseConfig } from './load.ts';

const RUNS = fuzzSetting('FUZZ_RUNS', 10_000, 1);
const SEED = fuzzSetting('FUZZ_SEED', 20_261_130);

const value = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
);
/** A valid configuration, and up to three of its fields (or new ones) set to anything. */
const BASE = {
  nodeId: 'n1',
  zone: 'z',
  mesh: 'm',
  store: { dir: '/tmp/x', maxBytes: 32_000_000 },
  http: { port: 7480, idleTimeoutMs: 60_000 },
  replication: { factor: 3, writeCopies: 2 },
  controlPlane: { servers: ['nats://a:1'], credentialsFile: '/c', caFile: '/ca' },
  access: { anonymous: 'read' },
  security: { mtls: true, ca: { certFile: '/ca.crt', keyFile: '/ca.key' } },
};
const PATHS = [
  ['nodeId'],
  ['zone'],
  ['mesh'],
  ['store'],
  ['store', 'dir'],
  ['store', 'maxBytes'],
  ['http'],
  ['http', 'port'],
  ['http', 'idleTimeoutMs'],
  ['replication', 'factor'],
  ['replication', 'writeCopies'],
  ['controlPlane', 'servers'],
  ['controlPlane', 'caFile'],
  ['access', 'anonymous'],
  ['access', 'rules'],
  ['security', 'mtls'],
  ['security', 'ca'],
  ['security', 'certificateTtlSeconds'],
  ['peers'],
  ['unknown'],
  ['http', 'unknown'],
];
const config = nearlyValid(BASE, PATHS, value);
const flag = fc.tuple(
  fc.constantFrom(
    '--http.port',
    '--store.max-bytes',
    '--replication.factor',
    '--mesh',
    '--peers',
    '--nope',
    '--access.anonymous',
    '--http.idle-timeout-ms',
  ),
  fc.string({ maxLength: 12 }),
);

describe(`the agent configuration, fuzzed (fast-check, seed ${SEED}, ${RUNS} cases each)`, () => {
  it('a configuration object is accepted or refused with a ConfigError naming the field, nothing else', () => {
    let refused = 0;
    fc.assert(
      fc.property(config, (raw) => {
        try {
          parseConfig(raw);
          return true;
        } catch (error) {
          refused++;
          return error instanceof ConfigError && /: /.test(error.message);
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`# fuzz agent configuration objects: ${RUNS} cases, ${refused} refused with a ConfigError`);
    assert.ok(refused > 0 && refused < RUNS, 'some are valid, some not: both paths are taken');
  });

  it('flags are accepted, or refused as a ConfigError or an unknown or malformed flag (a clear error), nothing else', async () => {
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(flag, { maxLength: 4 }), async (flags) => {
        try {
          // mTLS off: otherwise every case is refused for want of a certificate, and no flag is judged.
          await loadConfig(['--store.dir', '/tmp/x', '--security.mtls', 'false', ...flags.flat()], {});
          return true;
        } catch (error) {
          refused++;
          const code = (error as { code?: string }).code ?? '';
          return error instanceof ConfigError || code.startsWith('ERR_PARSE_ARGS_');
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`# fuzz agent flags: ${RUNS} cases, ${refused} refused with a clear error`);
    assert.ok(refused > 0 && refused < RUNS, 'some are valid, some not: both paths are taken');
  });
});
