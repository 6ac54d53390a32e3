import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeEvent, subjects } from '@edgemesh/contracts';
import { connect, credsAuthenticator } from '@nats-io/transport-node';
import { parse } from 'yaml';
import { type NatsServer, natsUnavailable, startNatsServer } from '../../agent/harness/nats-server.ts';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import type { Operator } from '../src/controller.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import { natsUserCredentials, meshNatsPermissions } from '../src/nats/nats-auth.ts';
import { eventually, node } from './support.ts';

const unavailable = natsUnavailable();
/** The bundled NATS, as the tests reach it: `localhost` (its certificate names it). */
const NATS = { authName: 'edgemesh-nats', credentialsTtlSeconds: 3600, hosts: ['localhost'] };

type Obj = {
  metadata: { ownerReferences?: { kind: string; name: string }[]; annotations?: Record<string, string> };
  data: Record<string, string>;
};
type Ds = {
  spec: {
    template: {
      spec: {
        volumes: { name: string; secret?: { secretName: string } }[];
        containers: { volumeMounts: { name: string; mountPath: string }[] }[];
      };
    };
  };
};

/**
 * An operator that manages the bundled NATS's authentication, against a real nats-server started
 * with the configuration it writes: it makes each mesh a NATS user in a Secret the mesh owns and its
 * agents mount, and reads the mesh's figures over its own user. A mesh that names its own Secret
 * gets that one instead.
 */
describe('per-mesh NATS credentials made by the operator', { skip: unavailable ?? false }, () => {
  let api: FakeApiServer;
  let operator: Operator;
  let nats: NatsServer;
  /** The same, as the chart runs it: TLS with the certificate the operator made. */
  let tlsNats: NatsServer;
  let dir: string;
  const conf = () =>
    (api.get('configmaps', 'edgemesh-system', 'edgemesh-nats-config') as unknown as Obj).data['nats.conf']!;
  const creds = (namespace: string, name: string) =>
    Buffer.from((api.get('secrets', namespace, name) as unknown as Obj).data.creds!, 'base64');
  const mesh = (namespace: string, name: string, controlPlane: Record<string, string>) =>
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name, namespace },
      spec: { controlPlane, security: { mtls: false } },
    });
  /** Publishes a node's figures with `agentCreds` until the mesh's status shows them. */
  const figuresArrive = async (
    namespace: string,
    name: string,
    agentCreds: Uint8Array,
    on: { servers: string; tls?: { ca: string } } = { servers: nats.url },
  ) => {
    const nc = await connect({ ...on, authenticator: credsAuthenticator(agentCreds) });
    try {
      const id = `${namespace}_${name}`;
      await eventually(async () => {
        nc.publish(
          subjects(id).stats,
          encodeEvent({
            v: 1,
            type: 'node.stats',
            mesh: id,
            from: 'edge-0',
            sentAtMs: Date.now(),
            body: { hits: 3, misses: 1, bytesFromPeers: 0, bytesFromOrigin: 0, startedAtMs: 1 },
          }),
        );
        await nc.flush();
        return (api.get('edgemeshes', namespace, name) as { status?: { hitRatio?: string } }).status
          ?.hitRatio;
      }, 30_000);
    } finally {
      await nc.close();
    }
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-nats-credentials-'));
    api = await startFakeApiServer();
    api.put(node('edge-0', 'z1', 'r1'));
    operator = await startTestOperator(api, { workers: 1, nats: NATS });
    writeFileSync(join(dir, 'nats.conf'), conf());
    nats = await startNatsServer(undefined, { config: join(dir, 'nats.conf') });
    const tls = (api.get('secrets', 'edgemesh-system', 'edgemesh-nats-tls') as unknown as Obj).data;
    writeFileSync(join(dir, 'tls.crt'), Buffer.from(tls['tls.crt']!, 'base64'));
    writeFileSync(join(dir, 'tls.key'), Buffer.from(tls['tls.key']!, 'base64'));
    tlsNats = await startNatsServer(undefined, {
      config: join(dir, 'nats.conf'),
      args: ['--tls', '--tlscert', join(dir, 'tls.crt'), '--tlskey', join(dir, 'tls.key')],
    });
  });
  after(async () => {
    await operator?.stop();
    await nats?.stop();
    await tlsNats?.stop();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps its keys: a restarted operator leaves the NATS configuration as it was', async () => {
    const before = conf();
    assert.match(before, /^operator: /m);
    // The seeds the operator keeps: none of them, nor anything shaped like a seed (a whole 58-letter
    // base32 word starting S), is in the server's configuration. (Public keys are base32 too, so
    // a pattern that is not anchored to a whole word matches inside them now and then.)
    const keys = (api.get('secrets', 'edgemesh-system', 'edgemesh-nats-keys') as unknown as Obj).data;
    for (const seed of ['operator', 'system', 'account'].map((k) =>
      Buffer.from(keys[k]!, 'base64').toString(),
    )) {
      assert.match(seed, /^S[OA][A-Z2-7]{56}$/, 'the Secret holds seeds');
      assert.ok(!before.includes(seed), 'no seed in the server’s configuration');
    }
    assert.doesNotMatch(before, /(?<![A-Z2-7])S[OAU][A-Z2-7]{56}(?![A-Z2-7])/, 'nothing shaped like a seed');
    await operator.stop();
    operator = await startTestOperator(api, { workers: 1, nats: NATS });
    assert.equal(conf(), before);
  });

  it('gives a mesh its own NATS user, mounted by its agents, and reads its figures over its own', async () => {
    mesh('shop', 'cdn', { natsUrl: nats.url });
    const ds = await eventually(
      () => api.get('daemonsets', 'shop', 'edgemesh-cdn') as unknown as Ds | undefined,
    );
    const secret = api.get('secrets', 'shop', 'edgemesh-cdn-nats') as unknown as Obj;
    assert.deepEqual(
      secret.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`),
      ['EdgeMesh/cdn'],
      'the credentials go with the mesh',
    );
    const expires = Date.parse(secret.metadata.annotations?.['edgemesh.p2p.dev/expires-at'] ?? '');
    assert.ok(Math.abs(expires - Date.now() - 3600_000) < 60_000, 'valid for the configured life');
    const pod = ds.spec.template.spec;
    assert.deepEqual(pod.volumes.find((v) => v.name === 'nats-credentials')?.secret, {
      secretName: 'edgemesh-cdn-nats',
    });
    assert.equal(
      pod.containers[0]!.volumeMounts.find((m) => m.name === 'nats-credentials')?.mountPath,
      '/etc/edgemesh/nats',
    );
    const config = (api.get('configmaps', 'shop', 'edgemesh-cdn') as unknown as Obj).data['agent.yaml']!;
    assert.equal(
      (parse(config) as { controlPlane: { credentialsFile?: string } }).controlPlane.credentialsFile,
      '/etc/edgemesh/nats/creds',
    );
    // The agents' user reaches the mesh's subjects on the real server; the operator hears them
    // over its own user.
    await figuresArrive('shop', 'cdn', creds('shop', 'edgemesh-cdn-nats'));
  });

  it('uses the Secret a mesh names instead, for its agents and for itself', async () => {
    const keys = api.get('secrets', 'edgemesh-system', 'edgemesh-nats-keys') as unknown as Obj;
    const own = await natsUserCredentials(
      {
        operator: Buffer.from(keys.data.operator!, 'base64').toString(),
        system: Buffer.from(keys.data.system!, 'base64').toString(),
        account: Buffer.from(keys.data.account!, 'base64').toString(),
      },
      'made by hand',
      meshNatsPermissions('team_cdn'),
      3600,
    );
    api.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'team-nats', namespace: 'team' },
      data: { creds: Buffer.from(own.creds).toString('base64') },
    });
    mesh('team', 'cdn', { natsUrl: nats.url, credentialsSecret: 'team-nats' });
    const ds = await eventually(
      () => api.get('daemonsets', 'team', 'edgemesh-cdn') as unknown as Ds | undefined,
    );
    assert.deepEqual(ds.spec.template.spec.volumes.find((v) => v.name === 'nats-credentials')?.secret, {
      secretName: 'team-nats',
    });
    assert.equal(api.get('secrets', 'team', 'edgemesh-cdn-nats'), undefined, 'no user of its own made');
    await figuresArrive('team', 'cdn', Buffer.from(own.creds));
  });

  it('serves a mesh on the bundled NATS over TLS: its agents and the operator check the certificate the operator made', async () => {
    const url = `nats://localhost:${tlsNats.port}`;
    mesh('edge', 'cdn', { natsUrl: url });
    await eventually(() => api.get('daemonsets', 'edge', 'edgemesh-cdn'));
    const secret = (api.get('secrets', 'edge', 'edgemesh-cdn-nats') as unknown as Obj).data;
    const ca = Buffer.from(secret['ca.crt']!, 'base64').toString();
    const tls = (api.get('secrets', 'edgemesh-system', 'edgemesh-nats-tls') as unknown as Obj).data;
    assert.equal(ca, Buffer.from(tls['tls.crt']!, 'base64').toString(), 'the server’s own certificate');
    const config = (api.get('configmaps', 'edge', 'edgemesh-cdn') as unknown as Obj).data['agent.yaml']!;
    assert.deepEqual((parse(config) as { controlPlane: Record<string, unknown> }).controlPlane, {
      servers: [url],
      credentialsFile: '/etc/edgemesh/nats/creds',
      caFile: '/etc/edgemesh/nats/ca.crt',
    });
    const creds = Buffer.from(secret.creds!, 'base64');
    // Without the certificate, the server is not taken on trust (TLS is required; its certificate
    // is the operator's own).
    await assert.rejects(
      connect({ servers: url, authenticator: credsAuthenticator(creds), reconnect: false }),
      /certificate/i,
    );
    // With it: the agents' user reaches its subjects, and the operator (over TLS too) hears it.
    await figuresArrive('edge', 'cdn', creds, { servers: url, tls: { ca } });
  });
});
