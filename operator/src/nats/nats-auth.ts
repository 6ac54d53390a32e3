import { createHash } from 'node:crypto';
import { Algorithms, encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt';
import { createAccount, createOperator, createUser, fromSeed, type KeyPair } from '@nats-io/nkeys';
import { subjectFor, subjects } from '@edgemesh/contracts';

/**
 * The bundled NATS's authentication, in NATS's own decentralised model (JWTs signed with nkeys): the
 * operator holds an operator key and one account key; the NATS server's configuration names the
 * operator and carries the account (no key in it, only signed, public JWTs); every mesh's agents get
 * a user of that account whose permissions allow its own subjects and nothing else. A user needs
 * no change on the server: it is valid because the account key signed it, until it expires (the
 * server cuts the connection then; the client reconnects with the renewed file). See
 * docs/security.md, "Control plane".
 */

/** The seeds (secret): the operator's, the system account's and the agents' account's. */
export interface NatsAuthKeys {
  operator: string;
  system: string;
  account: string;
}

const seedOf = (kp: KeyPair) => new TextDecoder().decode(kp.getSeed());
const pair = (seed: string) => fromSeed(new TextEncoder().encode(seed));
const signing = { algorithm: Algorithms.v2 };

export function createNatsAuthKeys(): NatsAuthKeys {
  return {
    operator: seedOf(createOperator()),
    system: seedOf(createAccount()),
    account: seedOf(createAccount()),
  };
}

/** Checks that a stored set of seeds is whole and of the right kinds; throws otherwise. */
export function checkNatsAuthKeys(keys: Partial<NatsAuthKeys>): NatsAuthKeys {
  const kinds = { operator: 'O', system: 'A', account: 'A' } as const;
  for (const [name, kind] of Object.entries(kinds) as [keyof NatsAuthKeys, string][]) {
    const seed = keys[name];
    if (!seed?.startsWith(`S${kind}`)) throw new Error(`the NATS ${name} key is missing or not an nkey seed`);
    pair(seed); // throws on a bad checksum
  }
  return keys as NatsAuthKeys;
}

/** The public keys the server's configuration names: these are what must match the stored seeds. */
export function natsAuthPublicKeys(keys: NatsAuthKeys): NatsAuthKeys {
  return {
    operator: pair(keys.operator).getPublicKey(),
    system: pair(keys.system).getPublicKey(),
    account: pair(keys.account).getPublicKey(),
  };
}

/**
 * The authentication part of nats-server's configuration (`nats.conf`, included by the chart's NATS
 * with its ports on the command line): the operator, the system account, and the agents' account
 * preloaded into a memory resolver. Its users may do nothing but what their own JWT allows (the
 * account's default permissions deny everything).
 */
export async function natsServerConfig(keys: NatsAuthKeys): Promise<string> {
  const operator = pair(keys.operator);
  const system = pair(keys.system);
  const account = pair(keys.account);
  const operatorJwt = await encodeOperator(
    'edgemesh',
    operator,
    { system_account: system.getPublicKey() },
    signing,
  );
  const systemJwt = await encodeAccount('SYS', system, {}, { ...signing, signer: operator });
  const accountJwt = await encodeAccount(
    'EDGEMESH',
    account,
    {
      default_permissions: { pub: { deny: ['>'] }, sub: { deny: ['>'] } },
      // No JetStream, no imports or exports: the control plane is plain publish and subscribe.
      limits: { imports: 0, exports: 0, wildcards: true, conn: -1, leaf: 0, subs: -1, data: -1, payload: -1 },
    },
    { ...signing, signer: operator },
  );
  return [
    '# Made by the EdgeMesh operator: who may connect to this NATS (docs/security.md, "Control plane").',
    "# Only public, signed JWTs; the keys that signed them stay in the operator's Secret.",
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    'resolver: MEMORY',
    'resolver_preload: {',
    `  ${system.getPublicKey()}: ${systemJwt}`,
    `  ${account.getPublicKey()}: ${accountJwt}`,
    '}',
    '',
  ].join('\n');
}

/** What a NATS user may publish and subscribe to. */
export interface NatsPermissions {
  pub: readonly string[];
  sub: readonly string[];
}

/** Mesh `meshId`'s agents: their own mesh's subjects, and no other. */
export const meshNatsPermissions = (meshId: string): NatsPermissions => ({
  pub: [subjects(meshId).all],
  sub: [subjects(meshId).all],
});

/**
 * The operator, for one mesh: it hears the mesh's figures and sends its revocation lists, nothing
 * more. One user per mesh, so that a mesh whose `natsUrl` leads somewhere else (a relay, say) gets
 * nothing from the operator's connection that its own agents' user does not already give.
 */
export const operatorNatsPermissions = (meshId: string): NatsPermissions => ({
  pub: [subjectFor(meshId, 'mesh.revocations')],
  sub: [subjects(meshId).stats],
});

/** A user's credentials file (JWT and seed), as nats.js and the nats CLI read it, and when it expires. */
export interface NatsCredentials {
  creds: string;
  expiresAtMs: number;
}

/**
 * A fresh user of the agents' account, allowed `permissions` (nothing else: no request-reply
 * inboxes, no system subjects), valid `ttlSeconds` from `nowMs`.
 */
export async function natsUserCredentials(
  keys: NatsAuthKeys,
  name: string,
  permissions: NatsPermissions,
  ttlSeconds: number,
  nowMs = Date.now(),
): Promise<NatsCredentials> {
  const user = createUser();
  const iat = Math.floor(nowMs / 1000);
  const jwt = await encodeUser(
    name,
    user,
    pair(keys.account),
    {
      pub: { allow: [...permissions.pub] },
      sub: { allow: [...permissions.sub] },
      // Events are small (the agent refuses any above 64 KiB); no bearer tokens: the seed must sign.
      payload: 256 * 1024,
      subs: 64,
      data: -1,
      bearer_token: false,
    },
    { ...signing, exp: iat + ttlSeconds },
  );
  return { creds: new TextDecoder().decode(fmtCreds(jwt, user)), expiresAtMs: (iat + ttlSeconds) * 1000 };
}

/** A short fingerprint of credentials, to tell connections apart without keeping the secret in a key. */
export const credentialsFingerprint = (creds: Uint8Array | string): string =>
  createHash('sha256').update(creds).digest('hex').slice(0, 16);
