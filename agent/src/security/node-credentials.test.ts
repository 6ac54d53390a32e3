import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { appendFile, writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { connect, createServer, type SecureContext, type Server } from 'node:tls';
import { createNodeKey, MeshCa } from '@edgemesh/identity';
import { createTestCa } from '../../harness/test-ca.ts';
import { createLogger } from '../telemetry/logger.ts';
import { type Clock, FakeClock, systemClock } from '../time/clock.ts';
import { FileCaIssuer, fileTrust } from './file-ca.ts';
import { peerTlsOptions } from './grpc-credentials.ts';
import { NodeCredentials, type NodeCredentialsOptions, PeerIdentityError } from './node-credentials.ts';
import { Revocations } from './revocations.ts';

const logger = createLogger({ level: 'silent', nodeId: 'test' });
const mesh = { namespace: 'local', name: 'm' };

async function start(
  node: string,
  ttlMs: number,
  issuerNode = node,
  clock: Clock = systemClock,
  options: Partial<NodeCredentialsOptions> = {},
) {
  const ca = await createTestCa('m');
  const revocations = new Revocations();
  const credentials = await NodeCredentials.start({
    node,
    issuer: new FileCaIssuer({ certFile: ca.certFile, keyFile: ca.keyFile, mesh, node: issuerNode, ttlMs }),
    trust: fileTrust(ca.certFile),
    logger,
    clock,
    revocations,
    ...options,
  });
  return { ca, credentials, revocations };
}

const peerCert = (pem: string) => {
  const x = new X509Certificate(pem);
  return {
    raw: x.raw,
    fingerprint256: x.fingerprint256,
    valid_from: x.validFrom,
    subjectaltname: x.subjectAltName,
  } as never;
};

/** A TLS connection with `context` to `server` (on loopback), which any server certificate satisfies. */
const connectWith = (context: SecureContext, server: Server) =>
  connect({
    host: '127.0.0.1',
    port: (server.address() as { port: number }).port,
    secureContext: context,
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
  });

/**
 * A handshake with `context` against a server of `server`'s certificate and key: the certificate the
 * context presented (DER) and whether it trusted the server's.
 */
async function handshake(context: SecureContext, server: { cert: string; key: string }) {
  const presented = Promise.withResolvers<Buffer>();
  const tlsServer = createServer({ ...server, requestCert: true, rejectUnauthorized: false }, (socket) => {
    presented.resolve(socket.getPeerCertificate().raw);
    socket.end();
  });
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  try {
    const client = connectWith(context, tlsServer);
    client.on('data', () => {});
    try {
      // A failed handshake rejects (the client's error) rather than leaving the test waiting.
      const connected = new Promise((resolve) => client.once('secureConnect', resolve));
      client.on('error', presented.reject);
      await Promise.race([connected, presented.promise]);
      return { presented: await presented.promise, trusted: client.authorized };
    } finally {
      client.destroy();
    }
  } finally {
    await new Promise((resolve) => tlsServer.close(resolve));
  }
}

describe('node credentials', () => {
  it('gives every connection one TLS context, a new one after a renewal or a change of the trust bundle', async () => {
    const { ca, credentials } = await start('edge-1', 60_000);
    try {
      const first = credentials.secureContext;
      assert.equal(credentials.secureContext, first, 'one context, not one per connection');
      assert.equal(peerTlsOptions(credentials, 'edge-2').secureContext, first, "the bulk stream's");
      const own = { cert: credentials.certPem, key: credentials.keyPem };
      const before = await handshake(first, own);
      assert.deepEqual(before.presented, new X509Certificate(credentials.certPem).raw);
      assert.equal(before.trusted, true, 'a node of its own mesh');

      await credentials.renew();
      const renewed = credentials.secureContext;
      const after = await handshake(renewed, own);
      assert.deepEqual(
        after.presented,
        new X509Certificate(credentials.certPem).raw,
        'the renewed certificate',
      );
      assert.notDeepEqual(after.presented, before.presented);

      // A server of a CA new to the bundle: trusted once the bundle holds it.
      const next = await createTestCa('m');
      const key = await createNodeKey('x');
      const cert = await (
        await MeshCa.load(next.material)
      ).issue({ csrPem: key.csrPem, mesh, node: 'edge-2' });
      assert.equal((await handshake(credentials.secureContext, { cert, key: key.keyPem })).trusted, false);
      await appendFile(ca.certFile, `\n${next.material.certPem}`);
      assert.equal(await credentials.refreshTrust(), true);
      assert.equal((await handshake(credentials.secureContext, { cert, key: key.keyPem })).trusted, true);
    } finally {
      credentials.close();
    }
  });

  it('hands TLS a bundle joined without newlines (`cat a.crt b.crt` of files without a last one) as it reads it', async () => {
    const { ca, credentials } = await start('edge-1', 60_000);
    try {
      const next = await createTestCa('m');
      const key = await createNodeKey('x');
      const fromNext = await (
        await MeshCa.load(next.material)
      ).issue({ csrPem: key.csrPem, mesh, node: 'edge-2' });
      // One line holds the first certificate's END and the second's BEGIN: OpenSSL alone loads neither.
      await writeFile(ca.certFile, ca.material.certPem.trimEnd() + next.material.certPem.trimEnd());
      assert.equal(await credentials.refreshTrust(), true);
      assert.equal(credentials.trust.length, 2);
      const own = { cert: credentials.certPem, key: credentials.keyPem };
      assert.equal((await handshake(credentials.secureContext, own)).trusted, true, 'a node of the first CA');
      assert.equal(
        (await handshake(credentials.secureContext, { cert: fromNext, key: key.keyPem })).trusted,
        true,
        'and of the second',
      );
      // Written again with newlines, it is the same bundle: nothing changes.
      await writeFile(ca.certFile, `${ca.material.certPem.trimEnd()}\n${next.material.certPem}`);
      assert.equal(await credentials.refreshTrust(), false);
    } finally {
      credentials.close();
    }
  });

  it('refuses a server’s renegotiation on the connections it opens (a second certificate nothing would check)', async () => {
    const { credentials } = await start('edge-1', 3600_000);
    const server = await start('edge-2', 3600_000);
    const outcome = Promise.withResolvers<string>();
    const tlsServer = createServer(
      { cert: server.credentials.certPem, key: server.credentials.keyPem, maxVersion: 'TLSv1.2' },
      (socket) => {
        // Refused, the second handshake is an error on the connection (the callback comes only when
        // it is done).
        socket.on('error', () => outcome.resolve('refused'));
        socket.on('close', () => outcome.resolve('closed'));
        socket.renegotiate({ requestCert: true }, (error) =>
          outcome.resolve(error ? 'refused' : 'renegotiated'),
        );
      },
    );
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    try {
      const client = connectWith(credentials.secureContext, tlsServer);
      client.on('error', () => {});
      client.on('data', () => {});
      assert.notEqual(await outcome.promise, 'renegotiated');
      client.destroy();
    } finally {
      credentials.close();
      server.credentials.close();
      await new Promise((resolve) => tlsServer.close(resolve));
    }
  });

  it('renews at two thirds of the life, with a fresh key, and tells the TLS stacks', async () => {
    const { credentials } = await start('edge-1', 1500);
    try {
      const first = { cert: credentials.certPem, key: credentials.keyPem };
      assert.ok(credentials.validToMs - Date.now() <= 1500 + 1000, 'short-lived');
      const heard = new Promise<{ certificate: Buffer; privateKey: Buffer } | null>((resolve) => {
        let calls = 0;
        credentials.addIdentityCertificateListener((update) => {
          if (++calls === 2) resolve(update); // the first call is the current material
        });
      });
      const update = (await heard)!;
      assert.equal(credentials.renewals, 1);
      assert.notEqual(update.certificate.toString(), first.cert);
      assert.notEqual(update.privateKey.toString(), first.key, 'a fresh key');
      assert.equal(credentials.authenticate(peerCert(credentials.certPem), 'edge-1'), 'edge-1');
    } finally {
      credentials.close();
    }
  });

  it('refuses a certificate for another node from its issuer', async () => {
    await assert.rejects(start('edge-1', 60_000, 'edge-2'), PeerIdentityError);
  });

  it('takes a new CA into the trust bundle (rotation) and refuses revoked nodes', async () => {
    const warnings: string[] = [];
    const { ca, credentials, revocations } = await start('edge-1', 60_000, 'edge-1', systemClock, {
      logger: pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) }),
      untrustedRenewSpreadMs: 0,
    });
    try {
      const next = await createTestCa('m');
      const fromNext = await (
        await MeshCa.load(next.material)
      ).issue({ csrPem: (await createNodeKey('x')).csrPem, mesh, node: 'edge-2' });
      assert.throws(() => credentials.authenticate(peerCert(fromNext)), /not issued by this mesh/);
      const heard = new Promise<void>((resolve) => {
        let calls = 0;
        credentials.addCaCertificateListener(() => ++calls === 2 && resolve());
      });
      await appendFile(ca.certFile, `\n${next.material.certPem}`);
      assert.equal(await credentials.refreshTrust(), true);
      await heard;
      // Its own CA is still in the bundle: no renewal (it would be decided, and said, in refreshTrust).
      assert.deepEqual(warnings, []);
      assert.equal(credentials.authenticate(peerCert(fromNext)), 'edge-2');
      assert.throws(() => credentials.authenticate(peerCert(fromNext), 'edge-3'), /names edge-2, not edge-3/);
      revocations.replace(['edge-2']);
      assert.throws(() => credentials.authenticate(peerCert(fromNext)), /edge-2 is revoked/);
    } finally {
      credentials.close();
    }
  });

  it('refuses the calls of a node revoked after its handshake (identify)', async () => {
    const { ca, credentials, revocations } = await start('edge-1', 60_000);
    try {
      const peer = await (
        await MeshCa.load(ca.material)
      ).issue({ csrPem: (await createNodeKey('x')).csrPem, mesh, node: 'edge-2' });
      assert.equal(credentials.identify(peerCert(peer)), 'edge-2');
      revocations.replace(['edge-2']);
      assert.throws(() => credentials.identify(peerCert(peer)), /edge-2 is revoked/);
      revocations.replace([]);
      assert.equal(credentials.identify(peerCert(peer)), 'edge-2', 'and again once no longer revoked');
    } finally {
      credentials.close();
    }
  });

  it('refuses a certificate it accepted before once it has expired', async () => {
    const clock = new FakeClock(Date.now());
    const { ca, credentials } = await start('edge-1', 60_000, 'edge-1', clock);
    try {
      const peer = await (
        await MeshCa.load(ca.material)
      ).issue({ csrPem: (await createNodeKey('x')).csrPem, mesh, node: 'edge-2', ttlMs: 60_000 });
      assert.equal(credentials.authenticate(peerCert(peer)), 'edge-2');
      clock.advance(30_000);
      assert.equal(credentials.authenticate(peerCert(peer)), 'edge-2', 'still valid');
      clock.advance(Date.parse(new X509Certificate(peer).validTo) - clock.now() + 1000);
      assert.throws(
        () => credentials.authenticate(peerCert(peer)),
        (e: Error) => e instanceof PeerIdentityError && /not valid now/.test(e.message),
      );
    } finally {
      credentials.close();
    }
  });

  it(
    'renews at once, from the new CA, when the trust bundle no longer holds the CA of its own certificate',
    { timeout: 20_000 },
    async () => {
      // An hour's certificate: its own renewal is 40 minutes away.
      const { ca, credentials } = await start('edge-1', 3_600_000, 'edge-1', systemClock, {
        untrustedRenewSpreadMs: 0,
      });
      try {
        const before = credentials.certPem;
        const renewed = new Promise<void>((resolve) => {
          let calls = 0;
          credentials.addIdentityCertificateListener(() => ++calls === 2 && resolve()); // the first: the current
        });
        // The CA Secret deleted and made again: a new CA signs, and the bundle holds it alone.
        const next = await createTestCa('m');
        await writeFile(ca.keyFile, next.material.keyPem);
        await writeFile(ca.certFile, next.material.certPem);
        assert.equal(await credentials.refreshTrust(), true);
        await renewed;
        assert.equal(credentials.renewals, 1);
        assert.notEqual(credentials.certPem, before);
        // What peers holding the new bundle check: this node's new certificate passes.
        assert.equal(credentials.authenticate(peerCert(credentials.certPem), 'edge-1'), 'edge-1');
        assert.throws(() => credentials.authenticate(peerCert(before)), /not issued by this mesh/);
      } finally {
        credentials.close();
      }
    },
  );

  it(
    'keeps its certificate when a renewal under way comes back from a CA the bundle no longer holds',
    { timeout: 20_000 },
    async () => {
      const ca = await createTestCa('m');
      const file = new FileCaIssuer({
        certFile: ca.certFile,
        keyFile: ca.keyFile,
        mesh,
        node: 'edge-1',
        ttlMs: 3_600_000,
      });
      const signed = Promise.withResolvers<void>();
      const release = Promise.withResolvers<void>();
      let calls = 0;
      // The first renewal is signed by the CA of the moment, then held; the others answer at once.
      const issuer = {
        name: 'held',
        issue: async (csrPem: string) => {
          const held = ++calls === 2; // the first call is the start's
          const pem = await file.issue(csrPem);
          if (held) {
            signed.resolve();
            await release.promise;
          }
          return pem;
        },
      };
      const credentials = await NodeCredentials.start({
        node: 'edge-1',
        issuer,
        trust: fileTrust(ca.certFile),
        logger,
        clock: systemClock,
        untrustedRenewSpreadMs: 0,
      });
      try {
        const renewed = new Promise<void>((resolve) => {
          let heard = 0;
          credentials.addIdentityCertificateListener(() => ++heard === 2 && resolve()); // the first: the current
        });
        const late = credentials.renew();
        await signed.promise; // by the old CA
        const next = await createTestCa('m');
        await writeFile(ca.keyFile, next.material.keyPem);
        await writeFile(ca.certFile, next.material.certPem);
        assert.equal(await credentials.refreshTrust(), true); // a renewal from the new CA, at once
        release.resolve();
        await assert.rejects(late, /not vouched for by the trust bundle/);
        await renewed;
        assert.equal(credentials.renewals, 1);
        assert.equal(credentials.authenticate(peerCert(credentials.certPem), 'edge-1'), 'edge-1');
      } finally {
        credentials.close();
      }
    },
  );

  it(
    'keeps a failed renewal’s backoff when the trust bundle changes again',
    { timeout: 20_000 },
    async () => {
      const ca = await createTestCa('m');
      const file = new FileCaIssuer({
        certFile: ca.certFile,
        keyFile: ca.keyFile,
        mesh,
        node: 'edge-1',
        ttlMs: 3_600_000,
      });
      let issued = 0;
      const issuer = {
        name: 'failing',
        // The start's certificate, then nothing: the issuer is down.
        issue: (csrPem: string) =>
          issued++ === 0 ? file.issue(csrPem) : Promise.reject(new Error('issuer down')),
      };
      const lines: string[] = [];
      const failed = Promise.withResolvers<void>();
      const logger = pino(
        { level: 'warn' },
        {
          write: (line: string) => {
            lines.push(line);
            if (line.includes('renewal failed')) failed.resolve();
          },
        },
      );
      const credentials = await NodeCredentials.start({
        node: 'edge-1',
        issuer,
        trust: fileTrust(ca.certFile),
        logger,
        clock: systemClock,
        untrustedRenewSpreadMs: 0,
      });
      try {
        const renewingNow = () => lines.filter((l) => l.includes('renewing now')).length;
        await writeFile(ca.certFile, (await createTestCa('m')).material.certPem);
        assert.equal(await credentials.refreshTrust(), true);
        assert.equal(renewingNow(), 1);
        await failed.promise; // its retry is set, 1 s on
        await writeFile(ca.certFile, (await createTestCa('m')).material.certPem);
        assert.equal(await credentials.refreshTrust(), true);
        assert.equal(renewingNow(), 1, 'the retry set keeps its backoff; no renewal at once');
      } finally {
        credentials.close();
      }
    },
  );

  it('refuses a certificate of a CA the trust bundle no longer holds, though it accepted it before', async () => {
    const { ca, credentials } = await start('edge-1', 60_000);
    try {
      const peer = await (
        await MeshCa.load(ca.material)
      ).issue({ csrPem: (await createNodeKey('x')).csrPem, mesh, node: 'edge-2' });
      assert.equal(credentials.authenticate(peerCert(peer)), 'edge-2');
      const next = await createTestCa('m');
      await writeFile(ca.certFile, next.material.certPem); // the old CA is gone from the bundle
      assert.equal(await credentials.refreshTrust(), true);
      assert.throws(() => credentials.authenticate(peerCert(peer)), /not issued by this mesh/);
    } finally {
      credentials.close();
    }
  });
});
