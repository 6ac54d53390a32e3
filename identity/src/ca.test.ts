import 'reflect-metadata'; // before @peculiar/x509, which needs it at import
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { createCa, CsrError, MeshCa } from './ca.ts';
import { fromPem, toPem } from './pem.ts';
import { nodeSpiffeId } from './spiffe.ts';

const P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
async function csrFor(keys: webcrypto.CryptoKeyPair, name = 'CN=whoever') {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name,
    keys: keys as never,
    signingAlgorithm: P256,
  });
  return csr.toString('pem');
}
const MESH = { namespace: 'shop', name: 'cdn' };
const newKeys = () => webcrypto.subtle.generateKey(P256, true, ['sign', 'verify']);

describe('the mesh CA', () => {
  it('signs a node certificate naming the node it is told, whatever the request says', async () => {
    const now = new Date('2026-11-30T06:00:00Z');
    const ca = await MeshCa.load(await createCa(MESH, now));
    const pem = await ca.issue({
      csrPem: await csrFor(await newKeys(), 'CN=edge-9'),
      mesh: MESH,
      node: 'edge-1',
      now,
    });
    const cert = new X509Certificate(pem);
    assert.ok(cert.checkIssued(new X509Certificate(ca.certPem)), 'issued by the mesh CA');
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey), 'signed by the mesh CA');
    assert.equal(cert.subjectAltName, `URI:${nodeSpiffeId(MESH, 'edge-1')}`);
    assert.match(cert.subject, /CN=edge-1/);
    assert.equal(cert.ca, false);
    assert.deepEqual(cert.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const life = new Date(cert.validTo).getTime() - now.getTime();
    assert.equal(life, 24 * 3600_000, 'a day by default');
  });

  it('never outlives the CA', async () => {
    const now = new Date();
    const ca = await MeshCa.load(await createCa(MESH, now, 3600_000));
    const pem = await ca.issue({ csrPem: await csrFor(await newKeys()), mesh: MESH, node: 'n', now });
    assert.ok(new Date(new X509Certificate(pem).validTo).getTime() <= now.getTime() + 3600_000);
  });

  it('refuses a request that is not signed by its own key, not P-256, or not a request', async () => {
    const ca = await MeshCa.load(await createCa(MESH));
    const good = await csrFor(await newKeys());
    const der = Buffer.from(good.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 10]! ^= 0xff; // inside the signature
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----`;
    await assert.rejects(ca.issue({ csrPem: forged, mesh: MESH, node: 'n' }), CsrError);
    await assert.rejects(ca.issue({ csrPem: 'garbage', mesh: MESH, node: 'n' }), CsrError);
    const rsa = await webcrypto.subtle.generateKey(
      {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      },
      true,
      ['sign', 'verify'],
    );
    const rsaCsr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=x',
      keys: rsa as never,
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    });
    await assert.rejects(ca.issue({ csrPem: rsaCsr.toString('pem'), mesh: MESH, node: 'n' }), /ECDSA P-256/);
  });

  it('refuses lives it should not give, and a CA that is not valid now', async () => {
    const ca = await MeshCa.load(await createCa(MESH));
    const csrPem = await csrFor(await newKeys());
    for (const ttlMs of [-1, 0, Number.NaN, 10 * 24 * 3600_000])
      await assert.rejects(ca.issue({ csrPem, mesh: MESH, node: 'n', ttlMs }), RangeError, String(ttlMs));
    const expired = await MeshCa.load(await createCa(MESH, new Date('2020-01-01'), 3600_000));
    await assert.rejects(expired.issue({ csrPem, mesh: MESH, node: 'n' }), /not valid now/);
  });

  it('loads only a CA certificate with its own key', async () => {
    const a = await createCa(MESH);
    const b = await createCa(MESH);
    await assert.rejects(MeshCa.load({ certPem: a.certPem, keyPem: b.keyPem }), /not the CA certificate's/);
    // A block that holds the certificate's text again (hex) rather than its DER.
    const hex = toPem(Buffer.from(fromPem(a.certPem, 'CERTIFICATE').toString('hex')), 'CERTIFICATE');
    await assert.rejects(MeshCa.load({ certPem: hex, keyPem: a.keyPem }), /holds no DER/);
  });

  it('refuses a request block that holds an encoding of a request rather than its DER', async () => {
    // The certificate library would read such text as PEM, hex or base64 again (some of it with a
    // regular expression quadratic in the input) and take it; a request is DER, nothing else.
    const ca = await MeshCa.load(await createCa(MESH));
    const csrPem = await csrFor(await newKeys());
    const der = fromPem(csrPem, 'CERTIFICATE REQUEST');
    const label = 'CERTIFICATE REQUEST';
    for (const inner of [
      Buffer.from(csrPem.replaceAll('CERTIFICATE REQUEST', 'FOO BAR')),
      Buffer.from(der.toString('hex')),
      Buffer.from(der.toString('base64')),
    ])
      await assert.rejects(ca.issue({ csrPem: toPem(inner, label), mesh: MESH, node: 'n' }), (e: Error) => {
        assert.ok(e instanceof CsrError, e.message);
        assert.match(e.message, /holds no DER/);
        return true;
      });
    assert.ok(await ca.issue({ csrPem: toPem(der, label), mesh: MESH, node: 'n' }));
  });

  it('keeps meshes apart whose names would join alike, and long node names out of the CN', async () => {
    assert.notEqual(
      nodeSpiffeId({ namespace: 'shop', name: 'cdn-x' }, 'n'),
      nodeSpiffeId({ namespace: 'shop-cdn', name: 'x' }, 'n'),
    );
    const ca = await MeshCa.load(await createCa(MESH));
    const long = `n${'x'.repeat(100)}`;
    const cert = new X509Certificate(
      await ca.issue({ csrPem: await csrFor(await newKeys()), mesh: MESH, node: long }),
    );
    assert.ok(!cert.subject, 'no subject');
    assert.equal(cert.subjectAltName, `URI:${nodeSpiffeId(MESH, long)}`);
  });
});
