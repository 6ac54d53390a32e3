import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { eventually } from '../harness/agent-process.ts';
import { type GeoLab, geoLabUnavailable, startGeoLab } from '../harness/geo-lab.ts';

const unavailable = geoLabUnavailable();
if (unavailable) console.log(`# geo lab set-up skipped: ${unavailable}`);

const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });
const small = () => startGeoLab({ regions: 1, zones: ['a'], delayMs: 1 });
/** The lab's name prefix (its namespaces are `<prefix><role>`, its host link `<prefix>H`). */
const prefixOf = (lab: GeoLab) => lab.services.netns.slice(0, -'svc'.length);

describe('geo lab set-up', { skip: unavailable ?? false }, () => {
  it('removes what a lab killed before it left behind (its namespaces and their processes, and its host link with the lab’s address)', async () => {
    // What a lab killed with -9 leaves: a namespace, and the host's veth holding 198.18.0.1/24,
    // whose route would take this lab's traffic to nowhere (EHOSTUNREACH).
    const old = `em${randomBytes(2).toString('hex')}`;
    assert.equal(ip('netns', 'add', `${old}core`).status, 0);
    assert.equal(
      ip('link', 'add', `${old}H`, 'type', 'veth', 'peer', 'name', `${old}G`, 'netns', `${old}core`).status,
      0,
    );
    ip('addr', 'add', '198.18.0.1/24', 'dev', `${old}H`);
    ip('link', 'set', `${old}H`, 'up');
    // And a process of it still running in there (an orphaned agent, say), holding the namespace.
    const orphan = spawn('ip', ['netns', 'exec', `${old}core`, 'sleep', '600'], { stdio: 'ignore' });
    const orphanGone = once(orphan, 'exit');
    await eventually(
      () => Promise.resolve(ip('netns', 'pids', `${old}core`).stdout.trim() ? true : undefined),
      10_000,
      'the orphan running',
    );
    const lab = await small();
    try {
      const killed = await Promise.race([
        orphanGone.then(() => true),
        new Promise<false>((r) => setTimeout(r, 10_000, false).unref()),
      ]);
      if (!killed) orphan.kill('SIGKILL'); // (ip netns exec's child stays: the test says so below)
      assert.ok(killed, 'the orphan in the old namespace was killed');

      assert.doesNotMatch(ip('netns', 'list').stdout, new RegExp(old), 'the old namespace is gone');
      assert.notEqual(ip('link', 'show', `${old}H`).status, 0, 'the old host link is gone');
      const route = ip('-o', 'route', 'get', lab.hosts[0]!.ip).stdout;
      assert.match(route, new RegExp(`dev ${prefixOf(lab)}H`), `the lab's own link carries it: ${route}`);
    } finally {
      lab.close();
    }
    assert.doesNotMatch(
      ip('netns', 'list').stdout,
      new RegExp(prefixOf(lab)),
      'and it cleans up after itself',
    );
  });

  it('runs one lab at a time on a machine (they share their addresses): the next waits until the first closes', async () => {
    const first = await small();
    let waiting!: () => void;
    const waited = new Promise<'waiting'>((resolve) => (waiting = () => resolve('waiting')));
    const second = startGeoLab({ regions: 1, zones: ['a'], delayMs: 1, onWaiting: waiting });
    // It finds the lock held and waits (an event), rather than starting beside the first.
    const early = await Promise.race([waited, second.then(() => 'started' as const)]);
    if (early !== 'waiting') {
      first.close();
      (await second).close();
      assert.fail('a second lab started while the first was up');
    }
    first.close();
    const lab = await second;
    lab.close();
    assert.notEqual(prefixOf(lab), prefixOf(first));
  });
});
