import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CaMaterial, createCa } from '@edgemesh/identity';
import { FileCaIssuer, fileTrust } from '../src/security/file-ca.ts';
import { NodeCredentials } from '../src/security/node-credentials.ts';
import { Revocations } from '../src/security/revocations.ts';
import { peerChannelCredentials } from '../src/security/grpc-credentials.ts';
import { GrpcPeer } from '../src/transport/peer-client.ts';
import { createLogger } from '../src/telemetry/logger.ts';
import { systemClock } from '../src/time/clock.ts';

/** A file-based mesh CA for tests: its files, removed when the process exits. */
export interface TestCa {
  dir: string;
  certFile: string;
  keyFile: string;
  material: CaMaterial;
  /** The flags that make an agent process use it. */
  flags: string[];
}

/**
 * Makes a file-based CA (the `namespace` its certificates name is 'local'), in `dir`, or else in a
 * temporary directory removed when the process exits.
 */
export async function createTestCa(name = 'test', dir?: string): Promise<TestCa> {
  // Valid since yesterday, so tests can have it issue certificates that have already expired.
  const material = await createCa({ namespace: 'local', name }, new Date(Date.now() - 86_400_000));
  if (dir) mkdirSync(dir, { recursive: true });
  else {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-ca-'));
    const temporary = dir;
    process.once('exit', () => rmSync(temporary, { recursive: true, force: true }));
  }
  const certFile = join(dir, 'ca.crt');
  const keyFile = join(dir, 'ca.key');
  writeFileSync(certFile, material.certPem);
  writeFileSync(keyFile, material.keyPem, { mode: 0o600 });
  return {
    dir,
    certFile,
    keyFile,
    material,
    flags: ['--security.ca.cert-file', certFile, '--security.ca.key-file', keyFile],
  };
}

let shared: Promise<TestCa> | undefined;
/** One CA for every agent a test process starts (so they form one mesh), made at first use. */
export function sharedTestCa(): Promise<TestCa> {
  shared ??= createTestCa();
  return shared;
}

/** A node's credentials from `ca` (default the shared one), in the process, as an agent makes them. */
export async function testCredentials(
  node: string,
  opts: {
    ca?: Pick<TestCa, 'certFile' | 'keyFile'>;
    mesh?: string;
    ttlMs?: number;
    revocations?: Revocations;
  } = {},
): Promise<NodeCredentials> {
  const ca = opts.ca ?? (await sharedTestCa());
  return NodeCredentials.start({
    node,
    issuer: new FileCaIssuer({
      certFile: ca.certFile,
      keyFile: ca.keyFile,
      mesh: { namespace: 'local', name: opts.mesh ?? 'default' },
      node,
      ttlMs: opts.ttlMs ?? 3600_000,
    }),
    trust: fileTrust(ca.certFile),
    logger: createLogger({ level: 'silent', nodeId: node }),
    clock: systemClock,
    revocations: opts.revocations ?? new Revocations(),
  });
}

/**
 * A gRPC connection to the agent at `address` as node `as` (default `tester`) of the shared CA's
 * mesh `mesh` (default `default`), over mTLS, accepting whichever node of the mesh answers.
 */
export async function testPeer(
  address: string,
  opts: { as?: string; mesh?: string; timeoutMs?: number } = {},
): Promise<GrpcPeer> {
  const as = opts.as ?? 'tester';
  const timeoutMs = opts.timeoutMs ?? 5000;
  const identity = await testCredentials(as, opts.mesh ? { mesh: opts.mesh } : {});
  return new GrpcPeer({
    id: address,
    address,
    flowControlWindow: 16 * 2 ** 20,
    timeoutMs,
    from: as,
    credentials: (seen) => peerChannelCredentials(identity, undefined, seen),
  });
}
