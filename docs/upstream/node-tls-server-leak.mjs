// A standalone reproduction of the leak agent/src/transport/mutual-tls-server.ts works around, in a
// form to report upstream: Node 24's tls.Server, asking for client certificates, keeps native memory
// (about 4.5 KB) for good after every handshake with a client whose certificate a CA issued.
//
//   node --expose-gc --max-semi-space-size=1 docs/upstream/node-tls-server-leak.mjs [rounds] [client]
//
// with the Node to test first on PATH (this project's 24: `export PATH=$PWD/node_modules/.bin:$PATH`;
// the script prints the version it ran on).
// client: `leaf` (default: a CA-issued certificate, as the mesh's are), `chain` (the leaf and its
// issuer) or `self-signed` (one certificate, its own CA). Each round is 2,000 handshakes, one at a
// time; RSS is read after a full collection, so it is what the connections left behind. Needs the
// `openssl` command. Measured on 2026-12-07 (2 x AMD EPYC vCPU, Debian 12, OpenSSL in the binary):
// Node 24.21.0, the latest 24: leaf and chain grow about 9 MB a round for as long as it runs,
// self-signed does not; Node 20.20.2 and 26.10.0: flat after the first round, all three.
// What sets it off: onServerSocketSecure (lib/internal/tls/wrap.js) calls the handle's native
// getPeerX509Certificate() after every such handshake, a check nodejs/node#64677 added (TLS 1.3
// resumption's authorized state); nodejs/node#65579 reports the same call mutating OpenSSL's peer
// chain (fix: nodejs/node#65602). A server-side TLSSocket that never makes the call does not grow.
/* global process, Buffer, console */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';

const rounds = Number(process.argv[2] ?? 5);
const client = process.argv[3] ?? 'leaf';
if (!['leaf', 'chain', 'self-signed'].includes(client)) throw new Error(`unknown client ${client}`);
if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');

const dir = mkdtempSync(join(tmpdir(), 'tls-leak-'));
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
const file = (name) => readFileSync(join(dir, name));
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1'];
let key, cert, ca;
if (client === 'self-signed') {
  openssl('req', '-x509', ...ec, '-subj', '/CN=localhost', '-keyout', 'key.pem', '-out', 'cert.pem');
  [key, cert, ca] = [file('key.pem'), file('cert.pem'), file('cert.pem')];
} else {
  openssl('req', '-x509', ...ec, '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  openssl('req', ...ec, '-subj', '/CN=localhost', '-keyout', 'key.pem', '-out', 'leaf.csr');
  openssl(
    'x509',
    '-req',
    '-in',
    'leaf.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-days',
    '1',
    '-out',
    'leaf.pem',
  );
  [key, ca] = [file('key.pem'), file('ca.pem')];
  cert = client === 'chain' ? Buffer.concat([file('leaf.pem'), ca]) : file('leaf.pem');
}
rmSync(dir, { recursive: true });

// Server and client share the key pair: what is measured is the server's side of each handshake.
const server = tls.createServer({ key, cert, ca, requestCert: true, rejectUnauthorized: true }, (socket) =>
  socket.end(),
);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const secureContext = tls.createSecureContext({ key, cert, ca });
const handshake = () =>
  new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', secureContext });
    socket.on('error', reject).on('close', resolve).resume();
  });
const settled = () => {
  globalThis.gc();
  const { rss, heapTotal } = process.memoryUsage();
  return `rss ${(rss / 1e6).toFixed(1)} MB (V8 heap ${(heapTotal / 1e6).toFixed(1)} MB)`;
};

console.log(`node ${process.version}, ${client} client certificate: ${settled()}`);
for (let round = 1; round <= rounds; round++) {
  for (let i = 0; i < 2000; i++) await handshake();
  console.log(`after ${round * 2000} handshakes: ${settled()}`);
}
server.close();
