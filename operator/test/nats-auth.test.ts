import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { subjectFor, subjects } from '@edgemesh/contracts';
import { connect, credsAuthenticator, jwtAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import {
  type NatsServer,
  natsUnavailable,
  startNatsServer,
  subscriptionRefusal,
} from '../../agent/harness/nats-server.ts';
import {
  createNatsAuthKeys,
  meshNatsPermissions,
  type NatsAuthKeys,
  natsServerConfig,
  natsUserCredentials,
  operatorNatsPermissions,
} from '../src/nats/nats-auth.ts';

const unavailable = natsUnavailable();
const A = 'shop_cdn';
const B = 'other_cdn';

/**
 * The bundled NATS's authentication, on a real nats-server started with the configuration the
 * operator writes for the chart's NATS (the ConfigMap it mounts): one mesh's credentials reach its
 * own subjects and nothing else; no credentials, forged ones, expired ones and a bearer JWT without
 * its seed get no connection. Each attempt is counted; none may succeed.
 */
describe('per-mesh NATS credentials on a real nats-server', { skip: unavailable ?? false }, () => {
  let dir: string;
  let keys: NatsAuthKeys;
  let nats: NatsServer;
  const open: NatsConnection[] = [];
  const tally = { attempts: 0, accepted: 0 };
  const as = async (creds: string) => {
    const nc = await connect({
      servers: nats.url,
      authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
      reconnect: false,
    });
    open.push(nc);
    return nc;
  };
  const meshUser = async (mesh: string, ttlSeconds = 3600, nowMs?: number) =>
    (await natsUserCredentials(keys, `mesh ${mesh}`, meshNatsPermissions(mesh), ttlSeconds, nowMs)).creds;
  /** Subscribes on `nc`; resolves the first message's data, or the subscription's error. */
  const firstOf = (nc: NatsConnection, subject: string) =>
    new Promise<string | Error>((resolve) => {
      nc.subscribe(subject, {
        max: 1,
        callback: (error, msg) => resolve(error ?? new TextDecoder().decode(msg.data)),
      });
    });
  /** A connection attempt that must be refused. */
  const refused = async (what: string, opts: Parameters<typeof connect>[0]) => {
    tally.attempts++;
    try {
      const nc = await connect({ servers: nats.url, reconnect: false, ...opts });
      open.push(nc);
      tally.accepted++;
      assert.fail(`${what}: connected`);
    } catch (error) {
      assert.match(String((error as Error).message), /Authorization Violation|authentication/i, what);
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-nats-auth-'));
    keys = createNatsAuthKeys();
    writeFileSync(join(dir, 'nats.conf'), await natsServerConfig(keys));
    nats = await startNatsServer(undefined, { config: join(dir, 'nats.conf') });
  });
  after(async () => {
    for (const nc of open) await nc.close().catch(() => undefined);
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
    console.log(`# NATS attacks: ${tally.accepted} accepted of ${tally.attempts} attempts`);
  });

  it('a mesh’s agents publish and hear their own events', async () => {
    const a1 = await as(await meshUser(A));
    const a2 = await as(await meshUser(A));
    const heard = firstOf(a2, subjects(A).all);
    await a2.flush();
    a1.publish(subjectFor(A, 'member.announce'), 'hello');
    assert.equal(await heard, 'hello');
  });

  it('another mesh’s credentials neither read nor publish this mesh’s subjects', async () => {
    const a = await as(await meshUser(A));
    const b = await as(await meshUser(B));
    for (const subject of [subjects(A).all, subjects(A).stats, 'edgemesh.>', '>', '_INBOX.>', '$SYS.>']) {
      tally.attempts++;
      const got = await subscriptionRefusal(b, subject);
      if (!got) tally.accepted++;
      assert.match(String(got?.message), /permissions violation/i, `B subscribed to ${subject}`);
    }
    // What B publishes on A's subjects never reaches A: A hears its own marker, sent after, first.
    const heard = firstOf(a, subjects(A).all);
    await a.flush();
    for (const type of ['member.announce', 'object.purge', 'mesh.revocations', 'node.stats'] as const) {
      tally.attempts++;
      b.publish(subjectFor(A, type), 'forged');
    }
    await b.flush();
    const marker = await as(await meshUser(A));
    marker.publish(subjectFor(A, 'member.announce'), 'marker');
    assert.equal(await heard, 'marker', 'B’s messages reached mesh A');
    // And B still works on its own subjects: the refusal is about A's, not a broken connection.
    const own = firstOf(b, subjects(B).all);
    await b.flush();
    (await as(await meshUser(B))).publish(subjectFor(B, 'member.announce'), 'b');
    assert.equal(await own, 'b');
  });

  it('the operator’s user for a mesh hears its figures and sends its revocations, and nothing else', async () => {
    const op = await as(
      (await natsUserCredentials(keys, 'operator', operatorNatsPermissions(B), 3600)).creds,
    );
    const heard = firstOf(op, subjects(B).stats);
    await op.flush();
    const agent = await as(await meshUser(B));
    agent.publish(subjects(B).stats, 'stats');
    assert.equal(await heard, 'stats');
    const revocations = firstOf(agent, subjectFor(B, 'mesh.revocations'));
    await agent.flush();
    op.publish(subjectFor(B, 'mesh.revocations'), 'list');
    assert.equal(await revocations, 'list');
    // Anything else, on its own mesh or another: refused. A relay that borrows its session (a mesh
    // whose natsUrl leads through someone's proxy) gains nothing the mesh's agents do not have.
    for (const subject of [subjects(B).all, subjectFor(B, 'member.announce'), subjects(A).stats, '>']) {
      tally.attempts++;
      const got = await subscriptionRefusal(op, subject);
      if (!got) tally.accepted++;
      assert.match(
        String(got?.message),
        /permissions violation/i,
        `the operator's user for B subscribed to ${subject}`,
      );
    }
  });

  it('no credentials, forged, expired or bearer-only credentials: no connection', async () => {
    await refused('no credentials', {});
    await refused('a user name', { user: 'edgemesh', pass: 'edgemesh' });
    // A user of an account of another operator's (keys made by the attacker).
    const forged = createNatsAuthKeys();
    await refused('forged account', {
      authenticator: credsAuthenticator(
        new TextEncoder().encode(
          (await natsUserCredentials(forged, 'x', meshNatsPermissions(A), 3600)).creds,
        ),
      ),
    });
    const expired = await natsUserCredentials(keys, 'old', meshNatsPermissions(A), 60, Date.now() - 3600_000);
    await refused('expired', { authenticator: credsAuthenticator(new TextEncoder().encode(expired.creds)) });
    // The JWT alone (as if read from a log), signed nonce missing: bearer tokens are off.
    const jwt = /-----BEGIN NATS USER JWT-----\n(.+)\n/.exec(await meshUser(A))![1]!;
    await refused('bearer JWT without its seed', { authenticator: jwtAuthenticator(jwt) });
  });
});
