import 'reflect-metadata'; // before @peculiar/x509, which needs it at import
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { createCa, MeshCa } from './ca.ts';
import { createNodeKey } from './node-key.ts';
import { fromPem } from './pem.ts';

const MESH = { namespace: 'shop', name: 'cdn' };

/** `der` parsed by the CA's library and encoded again from what it parsed (its rawData alone is `der`). */
function reencoded(der: Buffer): Buffer {
  const parsed = new x509.Pkcs10CertificateRequest(der);
  const asn = (parsed as unknown as { asn: never }).asn; // protected: the parsed structure
  return Buffer.from(new x509.Pkcs10CertificateRequest(asn).rawData);
}
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe('a node key and its request (written without an ASN.1 library)', () => {
  it('is a PKCS#8 P-256 key, and a request the CA reads, checks and signs for that key', async () => {
    const { keyPem, csrPem } = await createNodeKey('edge-1');
    const key = createPrivateKey(keyPem);
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----$/);
    // The library reads it field by field, and checks its signature with the key it holds.
    const csr = await MeshCa.readRequest(csrPem);
    assert.equal(csr.subject, 'CN=edge-1');
    assert.equal(csr.extensions.length, 0);
    const spki = Buffer.from(csr.publicKey.rawData);
    assert.deepEqual(spki, createPublicKey(key).export({ type: 'spki', format: 'der' }));
    // Its DER is canonical: encoded again from what the library parsed, it is the same bytes.
    const der = fromPem(csrPem, 'CERTIFICATE REQUEST');
    assert.deepEqual(reencoded(der), der);
    const ca = await MeshCa.load(await createCa(MESH));
    const cert = new X509Certificate(await ca.issue({ csrPem, mesh: MESH, node: 'edge-1' }));
    assert.ok(cert.checkPrivateKey(key), 'the certificate is for the key made here');
  });

  it('names the node as the CA would (1 to 64 characters, UTF-8), else names nobody', async () => {
    const subject = async (node: string) =>
      (await MeshCa.readRequest((await createNodeKey(node)).csrPem)).subject;
    assert.equal(await subject('nœud-été'), 'CN=nœud-été');
    // Wide enough that the lengths take DER's long form (over 127 bytes in the subject).
    assert.equal(await subject('€'.repeat(64)), `CN=${'€'.repeat(64)}`);
    // Longer than a common name may be, empty, or not a well-formed string: no name.
    for (const node of ['n'.repeat(65), '', `${'n'.repeat(10)}\uD83D`])
      assert.equal(await subject(node), '', node);
  });

  it('is canonical DER for any name, the long forms included', async () => {
    for (const node of ['', 'a', '€'.repeat(40), '😀'.repeat(16), 'n'.repeat(200)]) {
      const der = fromPem((await createNodeKey(node)).csrPem, 'CERTIFICATE REQUEST');
      assert.deepEqual(reencoded(der), der, node);
      assert.ok(await new x509.Pkcs10CertificateRequest(der).verify(), node);
    }
  });

  it('is a request OpenSSL verifies', { skip: !hasOpenssl && 'no openssl on this machine' }, async () => {
    const { csrPem } = await createNodeKey('edge-1');
    const checked = spawnSync('openssl', ['req', '-verify', '-noout', '-subject'], { input: `${csrPem}\n` });
    assert.equal(checked.status, 0, checked.stderr.toString());
    assert.match(checked.stdout.toString() + checked.stderr.toString(), /verify OK/i);
    assert.match(checked.stdout.toString(), /CN\s*=\s*edge-1/);
    // Every field RFC 2986 requires, the empty attributes included, which lenient readers let pass.
    const parsed = spawnSync('openssl', ['asn1parse'], { input: `${csrPem}\n` });
    assert.equal(parsed.status, 0, parsed.stderr.toString());
    const layout = parsed.stdout
      .toString()
      .trim()
      .split('\n')
      .map((line) => /(?:prim|cons): (.*)$/.exec(line)![1]!.replace(/\s+/g, ' ').replace(/ :$/, '').trim());
    assert.deepEqual(
      layout.map((field) => field.replace(/ :[0-9A-F]+$/, '')),
      [
        'SEQUENCE',
        'SEQUENCE',
        'INTEGER',
        'SEQUENCE',
        'SET',
        'SEQUENCE',
        'OBJECT :commonName',
        'UTF8STRING :edge-1',
        'SEQUENCE',
        'SEQUENCE',
        'OBJECT :id-ecPublicKey',
        'OBJECT :prime256v1',
        'BIT STRING',
        'cont [ 0 ]',
        'SEQUENCE',
        'OBJECT :ecdsa-with-SHA256',
        'BIT STRING',
      ],
    );
    assert.match(parsed.stdout.toString(), /INTEGER\s+:00\n/, 'version 1 (0)');
  });

  it('makes a fresh key every time', async () => {
    const [a, b] = await Promise.all([createNodeKey('n'), createNodeKey('n')]);
    assert.notEqual(a.keyPem, b.keyPem);
    assert.notEqual(a.csrPem, b.csrPem);
  });
});
