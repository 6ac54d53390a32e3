import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { connect as connectTcp, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect, createServer, type TLSSocket } from 'node:tls';
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
      ALPNProtocols: ['x', 'h2'],
      handshakeTimeoutMs: 300,
      admit: () => admit,
      secure: (socket) => {
        accepted.push(socket);
        socket.on('error', () => {});
        if (socket.alpnProtocol === 'h2') return void h2.emit('connection', socket);
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

  /** A TLS client as `who`; resolves with what the server sent before closing, or rejects. */
  const talk = (who: NodeCredentials | undefined, alpn = 'x') =>
    new Promise<string>((resolve, reject) => {
      const socket = connect({
        port,
        host: '127.0.0.1',
        ...(who ? { cert: who.certPem, key: who.keyPem } : {}),
        ca: serverId.bundlePem,
        ALPNProtocols: [alpn],
        checkServerIdentity: () => undefined,
      });
      let got = '';
      socket.on('data', (d: Buffer) => (got += String(d)));
      socket.on('error', reject);
      socket.on('close', () => (got ? resolve(got) : reject(new Error('closed with nothing'))));
    });

  it('takes a client whose certificate its CA issued, marked authorized, with the ALPN protocol it chose', async () => {
    const before = accepted.length;
    assert.match(await talk(client), /^hello /);
    const socket = accepted[before]!;
    assert.equal(socket.authorized, true);
    assert.equal(socket.alpnProtocol, 'x');
    assert.equal(socket.getPeerCertificate().fingerprint256, fingerprintOf(client.certPem));
  });

  it('carries HTTP/2 handed the connection (node:http2 waits for a handshake it sees as unfinished)', async () => {
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
  });

  it('refuses a client without a certificate, and one whose certificate another CA issued', async () => {
    const before = failures.length;
    let first = once(reported, 'failed');
    await assert.rejects(talk(undefined));
    await first;
    first = once(reported, 'failed');
    await assert.rejects(talk(stranger));
    await first;
    // Each refusal is reported once, the second with OpenSSL's verification error.
    assert.equal(failures.length, before + 2);
    assert.equal((failures[before + 1] as Error & { code?: string }).code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('closes a connection whose handshake is not over in time, and one it does not admit', async () => {
    const before = failures.length;
    const silent = connectTcp(port, '127.0.0.1');
    silent.on('error', () => {});
    await once(silent, 'close');
    assert.match(failures[before]?.message ?? '', /handshake timeout/);
    admit = false;
    try {
      const refused = connectTcp(port, '127.0.0.1');
      refused.on('error', () => {});
      await once(refused, 'close');
      assert.equal(failures.length, before + 1, 'closed before a handshake: nothing to report');
    } finally {
      admit = true;
    }
  });

  it('gives new connections the context set last (a renewed certificate)', async () => {
    const renewed = await testCredentials('srv2');
    tls.setContext({ cert: renewed.certPem, key: renewed.keyPem, ca: renewed.bundlePem });
    try {
      const socket = connect({
        port,
        host: '127.0.0.1',
        cert: client.certPem,
        key: client.keyPem,
        ca: serverId.bundlePem,
        checkServerIdentity: () => undefined,
      });
      socket.on('error', () => {});
      await once(socket, 'secureConnect');
      assert.equal(socket.getPeerCertificate().fingerprint256, fingerprintOf(renewed.certPem));
      socket.destroy();
    } finally {
      tls.setContext({ cert: serverId.certPem, key: serverId.keyPem, ca: serverId.bundlePem });
    }
  });

  it('never takes the reference to the client certificate that node:tls’s server leaks', async () => {
    // The native handle's method tls.Server calls once per handshake (Node 24), counted on the
    // class every TLS socket's handle shares while a few handshakes are made with each server.
    const probe = connect({
      port,
      host: '127.0.0.1',
      cert: client.certPem,
      key: client.keyPem,
      ca: serverId.bundlePem,
      checkServerIdentity: () => undefined,
    });
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
            const socket: Socket = connect({
              port: nodePort,
              host: '127.0.0.1',
              cert: client.certPem,
              key: client.keyPem,
              ca: serverId.bundlePem,
              checkServerIdentity: () => undefined,
            });
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
  });
});

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;
