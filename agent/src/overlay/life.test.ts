import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startAgent } from '../agent.ts';
import { parseConfig } from '../config/load.ts';
import { createLogger } from '../telemetry/logger.ts';
import { FakeClock, MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import { sharedTestCa } from '../../harness/test-ca.ts';
import { FOLLOW_AHEAD_S, LIFE_FILE, startLife } from './life.ts';
import { REFUTATIONS_PER_LIFE } from './membership.ts';

const logger = createLogger({ level: 'silent', nodeId: 't' });
const T = 1_800_000_000_000; // ms

describe('startLife', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-life-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  let n = 0;
  const fresh = async () => {
    const d = join(dir, String(n++));
    const { mkdir } = await import('node:fs/promises');
    await mkdir(d);
    return d;
  };
  const saved = async (d: string) =>
    (JSON.parse(await readFile(join(d, LIFE_FILE), 'utf8')) as { life: number }).life;

  it('starts at the clock’s second the first time, and saves it', async () => {
    const d = await fresh();
    assert.equal(await startLife(d, T + 999, logger), T / 1000);
    assert.equal(await saved(d), T / 1000);
  });

  it('follows the last life when the clock is behind it, or in the same second', async () => {
    const d = await fresh();
    await startLife(d, T, logger);
    assert.equal(await startLife(d, T - 30_000, logger), T / 1000 + 1, 'the clock went back 30 s');
    assert.equal(await startLife(d, T, logger), T / 1000 + 2, 'a crash loop within a second');
    assert.equal(await saved(d), T / 1000 + 2);
    assert.equal(await startLife(d, T + 60_000, logger), T / 1000 + 60, 'the clock again once ahead');
  });

  it('starts at the clock when the last life is too far ahead to follow', async () => {
    const d = await fresh();
    await startLife(d, T + MAX_CLOCK_SKEW_MS + 10_000, logger); // a clock far ahead, then set right
    assert.equal(await startLife(d, T, logger), T / 1000);
    const near = await fresh();
    await startLife(near, T + (FOLLOW_AHEAD_S - 1) * 1000, logger);
    assert.equal(await startLife(near, T, logger), T / 1000 + FOLLOW_AHEAD_S, 'followed up to the margin');
    assert.equal(await startLife(near, T, logger), T / 1000, 'not past it');
  });

  it('ignores a file it cannot read, and starts when it cannot save', async () => {
    const d = await fresh();
    await writeFile(join(d, LIFE_FILE), '{"life": "soon"');
    assert.equal(await startLife(d, T, logger), T / 1000);
    assert.equal(await saved(d), T / 1000, 'rewritten');
    await writeFile(join(d, LIFE_FILE), JSON.stringify({ life: -5 }));
    assert.equal(await startLife(d, T, logger), T / 1000);
    const blocked = await fresh();
    await writeFile(join(blocked, 'tmp'), 'a file where the folder should be');
    assert.equal(await startLife(blocked, T, logger), T / 1000, 'not saved, started anyway');
  });
});

describe('an agent restarted with its clock behind', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-life-agent-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('announces a life after its last one, so peers see the restart', async () => {
    const ca = await sharedTestCa();
    const config = parseConfig({
      nodeId: 'n1',
      zone: 'z1',
      region: 'r1',
      http: { port: 0 },
      grpc: { host: '127.0.0.1', port: 0 },
      store: { dir, maxBytes: '16Mi', maxObjectBytes: '1Mi', memoryBytes: '1Mi' },
      security: { ca: { certFile: ca.certFile, keyFile: ca.keyFile } },
      access: { anonymous: 'all' },
    });
    const incarnation = async (clock: FakeClock) => {
      const agent = await startAgent(config, { logger, clock });
      try {
        const status = (await (await fetch(`http://127.0.0.1:${agent.httpPort}/v1/status`)).json()) as {
          mesh: { incarnation: number };
        };
        return status.mesh.incarnation;
      } finally {
        await agent.close();
      }
    };
    // Now, not a fixed time: the node's certificate is checked against the clock.
    const now = Math.floor(Date.now() / 1000) * 1000;
    const first = await incarnation(new FakeClock(now));
    assert.equal(first, (now / 1000) * REFUTATIONS_PER_LIFE);
    const second = await incarnation(new FakeClock(now - 120_000)); // rebooted before its clock was set
    assert.equal(second, (now / 1000 + 1) * REFUTATIONS_PER_LIFE, 'a new life, above the last');
  });
});
