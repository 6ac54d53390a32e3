import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { Duplex } from 'node:stream';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect as connectTcp, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type ConnectionOptions, connect, createServer, TLSSocket } from 'node:tls';
import { createTestCa, testCredentials } from '../../harness/test-ca.ts';
import type { NodeCredentials } from '../security/node-credentials.ts';
import { createMutualTlsServer, type MutualTlsServer } from './mutual-tls-server.ts';

/** What tls.Server's handles are: the class whose getPeerX509Certificate leaks in Node 24. */
interface TlsWrapPrototype {
  getPeerX509Certificate: (this: unknown) => unknown;
}

describe('the mutual TLS server (node:tls without the certificate it leaks per connection)', () => {
  let serverId: NodeCredentials;
  let client: NodeCredentials;
  let stranger: NodeCredentials;
  const failures: Error[] = [];
  const reported = new EventEmitter();
  const accepted: TLSSocket[] = [];
  let admit = true;
  let tls: MutualTlsServer;
  let port = 0;

  before(async () => {
    serverId = await testCredentials('srv');
    client = await testCredentials('cli');
    // A certificate from a CA the server does not trust.
    stranger = await testCredentials('cli', { ca: await createTestCa('other') });
    tls = createMutualTlsServer({
      context: { cert: serverId.certPem, key: serverId.keyPem, ca: serverId.bundlePem },
      ALPNProtocols: ['x', 'echo', 'h2'],
      // Ample on a loaded machine: the timeout has a server of its own, below.
      handshakeTimeoutMs: 20_000,
      admit: () => admit,
      secure: (socket) => {
        accepted.push(socket);
        socket.on('error', () => {});
        if (socket.alpnProtocol === 'h2') return void h2.emit('connection', socket);
        if (socket.alpnProtocol === 'echo') return void socket.on('data', (d: Buffer) => socket.write(d));
        socket.end(`hello ${String(socket.getPeerCertificate().subject?.CN)}`);
      },
      failed: (error) => {
        failures.push(error);
        reported.emit('failed');
      },
    });
    await new Promise<void>((resolve) => tls.server.listen(0, '127.0.0.1', resolve));
    port = (tls.server.address() as { port: number }).port;
  });
  after(() => tls.server.close());

  const h2 = createHttp2Server((_req, res) => res.end('over h2'));

  /** Options of a TLS client of `client`'s certificate to the shared server, with `more`. */
  const asClient = (more: ConnectionOptions = {}): ConnectionOptions => ({
    port,
    host: '127.0.0.1',
    cert: client.certPem,
    key: client.keyPem,
    ca: serverId.bundlePem,
    checkServerIdentity: () => undefined,
    ...more,
  });

  /** A TLS client as `who`; resolves with what the server sent before closing, or rejects. */
  const talk = (who: NodeCredentials | undefined, alpn = 'x') =>
    new Promise<string>((resolve, reject) => {
      // No `who`: cert and key set to undefined over asClient's make a client without a certificate.
      const socket = connect(asClient({ cert: who?.certPem, key: who?.keyPem, ALPNProtocols: [alpn] }));
      let got = '';
      socket.on('data', (d: Buffer) => (got += String(d)));
      socket.on('error', reject);
      socket.on('close', () => (got ? resolve(got) : reject(new Error('closed with nothing'))));
    });

  it(
    'takes a client whose certificate its CA issued, marked authorized, with the ALPN protocol it chose',
    { timeout: 20_000 },
    async () => {
      const before = accepted.length;
      assert.match(await talk(client), /^hello /);
      const socket = accepted[before]!;
      assert.equal(socket.authorized, true);
      assert.equal(socket.alpnProtocol, 'x');
      assert.equal(socket.getPeerCertificate().fingerprint256, fingerprintOf(client.certPem));
    },
  );

  it(
    'carries HTTP/2 handed the connection (node:http2 waits for a handshake it sees as unfinished)',
    { timeout: 20_000 },
    async () => {
      const session = connectHttp2(`https://127.0.0.1:${port}`, {
        cert: client.certPem,
        key: client.keyPem,
        ca: serverId.bundlePem,
        checkServerIdentity: () => undefined,
      });
      try {
        const request = session.request({ ':path': '/' });
        let body = '';
        request.on('data', (d: Buffer) => (body += String(d)));
        await once(request, 'end');
        assert.equal(body, 'over h2');
      } finally {
        session.close();
      }
    },
  );

  it(
    'refuses a client without a certificate, and one whose certificate another CA issued',
    { timeout: 20_000 },
    async () => {
      const before = failures.length;
      let first = once(reported, 'failed');
      await assert.rejects(talk(undefined));
      await first;
      first = once(reported, 'failed');
      await assert.rejects(talk(stranger));
      await first;
      // Each refusal is reported once, the second with OpenSSL's verification error.
      assert.equal(failures.length, before + 2);
      assert.equal(
        (failures[before + 1] as Error & { code?: string }).code,
        'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      );
    },
  );

  it('closes a connection whose handshake is not over in time', { timeout: 20_000 }, async () => {
    const timedOut: Error[] = [];
    const quick = createMutualTlsServer({
      context: { cert: serverId.certPem, key: serverId.keyPem, ca: serverId.bundlePem },
      ALPNProtocols: ['x'],
      handshakeTimeoutMs: 200,
      secure: (socket) => socket.destroy(),
      failed: (error) => timedOut.push(error),
    });
    await new Promise<void>((resolve) => quick.server.listen(0, '127.0.0.1', resolve));
    try {
      const silent = connectTcp((quick.server.address() as { port: number }).port, '127.0.0.1');
      silent.on('error', () => {});
      await once(silent, 'close');
      assert.deepEqual(
        timedOut.map((e) => e.message),
        ['TLS handshake timeout'],
      );
    } finally {
      quick.server.close();
    }
  });

  it(
    'closes a connection it does not admit before any handshake, and reports garbage and a client gone mid-handshake',
    { timeout: 20_000 },
    async () => {
      const before = failures.length;
      admit = false;
      try {
        const refused = connectTcp(port, '127.0.0.1');
        refused.on('error', () => {});
        await once(refused, 'close');
      } finally {
        admit = true;
      }
      let next = once(reported, 'failed');
      const garbage = connectTcp(port, '127.0.0.1', () => garbage.write('GET / HTTP/1.1\r\n\r\n'));
      garbage.on('error', () => {});
      await Promise.all([next, once(garbage, 'close')]);
      next = once(reported, 'failed');
      const gone = connectTcp(port, '127.0.0.1', () => gone.end());
      gone.on('error', () => {});
      await next;
      // Nothing for the connection not admitted; once each for the others.
      assert.equal(failures.length, before + 2);
      assert.match(failures.at(-1)!.message, /closed the connection during the handshake/);
    },
  );

  it(
    'closes a connection that attempts renegotiation, never handing it on again (its certificate would go unchecked)',
    { timeout: 20_000 },
    async () => {
      const socket = connect(
        // TLS 1.3 has no renegotiation.
        asClient({ maxVersion: 'TLSv1.2', ALPNProtocols: ['echo'] }),
      );
      socket.on('error', () => {});
      await once(socket, 'secureConnect');
      socket.write('before');
      assert.equal(String((await once(socket, 'data'))[0]), 'before');
      const handedOn = accepted.length;
      const reportedNow = once(reported, 'failed');
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.renegotiate({}, () => socket.write('after'));
      await Promise.all([closed, reportedNow]);
      assert.equal(failures.at(-1)?.message, 'a TLS renegotiation attempted');
      assert.equal(accepted.length, handedOn, 'the connection is not handed on a second time');
    },
  );

  it(
    'serves a client offering a session from before with a full handshake (no ticket issued, no session resumed)',
    { timeout: 20_000 },
    async () => {
      for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
        let session: Buffer | undefined;
        for (const attempt of ['first', 'again']) {
          const socket = connect(
            asClient({ maxVersion, ALPNProtocols: ['x'], ...(session ? { session } : {}) }),
          );
          socket.on('session', (s: Buffer) => (session = s));
          let got = '';
          socket.on('data', (d: Buffer) => (got += String(d)));
          const [error] = await Promise.race([
            once(socket, 'secureConnect').then(() => [undefined]),
            once(socket, 'error'),
          ]);
          assert.equal(
            error,
            undefined,
            `${maxVersion}, ${attempt}: ${(error as Error | undefined)?.message}`,
          );
          assert.equal(socket.isSessionReused(), false, `${maxVersion}, ${attempt}`);
          await once(socket, 'close');
          assert.match(got, /^hello /, `${maxVersion}, ${attempt}`);
        }
        assert.ok(session, `${maxVersion}: the client had a session to offer`);
      }
    },
  );

  it(
    'closes a connection whose records fail their check after the handshake (node:tls leaves it open)',
    { timeout: 20_000 },
    async () => {
      // The client's TLS runs over a stream of the test's, on a real TCP connection: once the
      // handshake is over, the server's bytes stop reaching the client (it would close on the
      // server's alert) while the test writes a record of junk under the TLS layer.
      const tcp = connectTcp(port, '127.0.0.1');
      tcp.on('error', () => {});
      let deaf = false;
      const transport = new Duplex({
        read() {},
        write(chunk: Buffer, _encoding, done) {
          tcp.write(chunk, done);
        },
      });
      tcp.on('data', (d: Buffer) => void (deaf ? undefined : transport.push(d)));
      const socket = connect(asClient({ socket: transport, ALPNProtocols: ['echo'] }));
      socket.on('error', () => {});
      await once(socket, 'secureConnect');
      // A round trip first: the server's side of the handshake is over too.
      socket.write('ping');
      assert.equal(String((await once(socket, 'data'))[0]), 'ping');
      deaf = true;
      const closed = once(tcp, 'close');
      // An application-data record of 32 bytes of junk: its tag cannot match.
      tcp.write(Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x20]), Buffer.alloc(32, 0x78)]));
      await closed; // the server closed it (the client, deaf, would not have)
      socket.destroy();
    },
  );

  it(
    'refuses a resumed session (no certificate in its handshake), should one ever be resumed',
    { timeout: 20_000 },
    async () => {
      // None can be (the context stores none, issues no stateless ticket): the check behind that is
      // tried by having the next handshake say it resumed.
      const real = Object.getOwnPropertyDescriptor(TLSSocket.prototype, 'isSessionReused')!;
      TLSSocket.prototype.isSessionReused = () => true;
      const reportedNow = once(reported, 'failed');
      try {
        await assert.rejects(talk(client));
        await reportedNow;
      } finally {
        Object.defineProperty(TLSSocket.prototype, 'isSessionReused', real);
      }
      assert.match(failures.at(-1)?.message ?? '', /a resumed TLS session/);
    },
  );

  it('gives new connections the context set last (a renewed certificate)', { timeout: 20_000 }, async () => {
    const renewed = await testCredentials('srv2');
    tls.setContext({ cert: renewed.certPem, key: renewed.keyPem, ca: renewed.bundlePem });
    try {
      const socket = connect(asClient());
      socket.on('error', () => {});
      await once(socket, 'secureConnect');
      assert.equal(socket.getPeerCertificate().fingerprint256, fingerprintOf(renewed.certPem));
      socket.destroy();
    } finally {
      tls.setContext({ cert: serverId.certPem, key: serverId.keyPem, ca: serverId.bundlePem });
    }
  });

  it(
    'never takes the reference to the client certificate that node:tls’s server leaks',
    { timeout: 20_000 },
    async () => {
      // The native handle's method tls.Server calls once per handshake (Node 24), counted on the
      // class every TLS socket's handle shares while a few handshakes are made with each server.
      const probe = connect(asClient());
      probe.on('error', () => {});
      await once(probe, 'secureConnect');
      const proto = Object.getPrototypeOf(
        (probe as unknown as { _handle: object })._handle,
      ) as TlsWrapPrototype;
      probe.destroy();
      const original = proto.getPeerX509Certificate;
      let calls = 0;
      proto.getPeerX509Certificate = function (this: unknown) {
        calls += 1;
        return original.call(this);
      };
      try {
        for (let i = 0; i < 3; i++) await talk(client);
        assert.equal(calls, 0, 'the mutual TLS server');
        // The same handshakes with node:tls's own server do call it: the count measures the leak.
        const nodeServer = createServer(
          {
            cert: serverId.certPem,
            key: serverId.keyPem,
            ca: serverId.bundlePem,
            requestCert: true,
            rejectUnauthorized: true,
          },
          (socket) => socket.end('hello'),
        );
        await new Promise<void>((resolve) => nodeServer.listen(0, '127.0.0.1', resolve));
        try {
          const nodePort = (nodeServer.address() as { port: number }).port;
          for (let i = 0; i < 3; i++)
            await new Promise<void>((resolve, reject) => {
              const socket: Socket = connect(asClient({ port: nodePort }));
              socket.on('error', reject);
              socket.resume();
              socket.on('close', () => resolve());
            });
        } finally {
          nodeServer.close();
        }
        assert.equal(calls, 3, 'node:tls’s server, once per handshake');
      } finally {
        proto.getPeerX509Certificate = original;
      }
    },
  );
});

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;
