import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type AgentProcess,
  type AgentStatus,
  eventually,
  startAgentProcess,
} from '../harness/agent-process.ts';
import { type NatsServer, natsUnavailable, startNatsServer } from '../harness/nats-server.ts';
import {
  buildPreviousRelease,
  type PreviousRelease,
  previousReleaseRef,
} from '../harness/previous-release.ts';

/**
 * A DaemonSet rollout, frozen half way: agents of the previous release (built from its git tag, as
 * its image would bundle them) and of this build in one mesh, on a real nats-server, over mTLS. The
 * skew policy (docs/upgrades.md) says they interoperate; this shows it. Until a release is tagged
 * there is nothing to run beside this build, and the test skips, saying so.
 * `EDGEMESH_PREVIOUS_RELEASE=<ref>` runs it against any tag or commit instead.
 */
const MESH = 'rollout';
const found = previousReleaseRef();
const skip = natsUnavailable() ?? ('none' in found ? found.none : false);

type Member = { nodeId: string; state: string };
const membersAt = async (a: AgentProcess) =>
  ((await a.status()) as AgentStatus & { mesh: { members: Member[] } }).mesh.members;

describe('the previous release and this build in one mesh', { skip }, () => {
  let dir: string;
  let nats: NatsServer;
  let release: PreviousRelease;
  const agents: Record<string, AgentProcess> = {};
  const start = (node: string, main?: string) =>
    startAgentProcess(
      [
        ...['--node-id', node, '--zone', 'z1', '--region', 'r1', '--store.dir', join(dir, node)],
        ...['--mesh', MESH, '--control-plane.servers', nats.url],
        ...['--membership.probe-interval-ms', '200', '--membership.announce-interval-ms', '500'],
      ],
      30_000,
      main ? { main } : {},
    ).then((agent) => (agents[node] = agent));

  before(async () => {
    if ('none' in found) return;
    const started = Date.now();
    release = buildPreviousRelease(found.ref);
    console.log(
      `# previous release ${release.ref} (${release.commit.slice(0, 12)}): ${release.main}, ready in ${Date.now() - started} ms`,
    );
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-release-skew-'));
    nats = await startNatsServer();
    await Promise.all([start('old-a', release.main), start('old-b', release.main), start('new-a')]);
  });
  after(async () => {
    await Promise.all(Object.values(agents).map((a) => a.stop('SIGKILL')));
    await nats?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('old and new agents become members of each other', async () => {
    const everyone = Object.keys(agents).sort();
    for (const [node, agent] of Object.entries(agents)) {
      const others = everyone.filter((n) => n !== node).join();
      await eventually(
        async () => {
          const alive = (await membersAt(agent)).filter((m) => m.state === 'alive').map((m) => m.nodeId);
          return alive.sort().join() === others ? true : undefined;
        },
        20_000,
        `${node} sees ${others} alive`,
      );
    }
  });

  it('an object written on either side is read on the other, byte for byte', async () => {
    for (const [writer, reader] of [
      ['old-a', 'new-a'],
      ['new-a', 'old-b'],
    ] as const) {
      const body = randomBytes(2 * 2 ** 20 + 11);
      const key = `rollout/${writer}`;
      const put = await fetch(`${agents[writer]!.url}/v1/objects/${key}`, { method: 'PUT', body });
      assert.equal(put.status, 201, `PUT on ${writer}`);
      const got = await fetch(`${agents[reader]!.url}/v1/objects/${key}`);
      assert.equal(got.status, 200, `GET on ${reader}`);
      assert.equal(got.headers.get('etag'), put.headers.get('etag'));
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(body), `${key} byte-identical on ${reader}`);
    }
  });
});
