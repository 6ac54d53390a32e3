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

/** The DER element at `at` of `der`: where its contents start and where it ends. */
function element(der: Uint8Array, at: number): { contents: number; end: number } {
  const first = der[at + 1]!;
  if (first < 0x80) return { contents: at + 2, end: at + 2 + first };
  let length = 0;
  for (let i = 0; i < (first & 0x7f); i++) length = length * 256 + der[at + 2 + i]!;
  const contents = at + 2 + (first & 0x7f);
  return { contents, end: contents + length };
}
/** The elements of a certificate's TBSCertificate, in order (version, serial, algorithm, issuer, validity, subject, ...). */
function tbsFields(der: Uint8Array): Buffer[] {
  const tbs = element(der, element(der, 0).contents);
  const fields: Buffer[] = [];
  for (let at = tbs.contents; at < tbs.end; at = element(der, at).end)
    fields.push(Buffer.from(der.subarray(at, element(der, at).end)));
  return fields;
}
/** A certificate's TBSCertificate (its first element): what its signature covers. */
function tbsOf(der: Uint8Array): Buffer {
  const tbs = element(der, element(der, 0).contents);
  return Buffer.from(der.subarray(element(der, 0).contents, tbs.end));
}

describe('the mesh CA', () => {
  it("writes the certificate the CA library wrote, byte for byte but the key's", async () => {
    // createCa writes its DER by hand; the library built every CA before, and agents and Go verify
    // node certificates against it (issuer bytes, extensions): the same key, serial and dates
    // through the library give the same TBSCertificate. Past 2049 dates are GeneralizedTime.
    for (const [mesh, now, ttlMs] of [
      [MESH, new Date('2026-11-30T06:00:00.789Z'), undefined],
      [{ namespace: 'tenant-with-a-long-name-0123456789', name: 'x.y-z' }, new Date(), 40 * 365 * 86400_000],
      [{ namespace: 'a', name: 'b' }, new Date('2049-12-31T23:59:00Z'), 120_000], // across the change
    ] as const) {
      const made = await createCa(mesh, now, ttlMs);
      const cert = new x509.X509Certificate(fromPem(made.certPem, 'CERTIFICATE'));
      const privateKey = await webcrypto.subtle.importKey(
        'pkcs8',
        fromPem(made.keyPem, 'PRIVATE KEY'),
        P256,
        true,
        ['sign'],
      );
      const publicKey = await cert.publicKey.export(P256, ['verify']);
      const keys = { privateKey, publicKey };
      const library = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: cert.serialNumber,
        name: [
          { O: ['EdgeMesh'] },
          { OU: [`namespace ${mesh.namespace}`] },
          { CN: [`mesh ${mesh.name} CA`] },
        ],
        // The dates asked for, not those read back (a UTCTime for 2050 would read as 1950).
        notBefore: new Date(now.getTime() - 5 * 60_000),
        notAfter: new Date(now.getTime() + (ttlMs ?? 365 * 86400_000)),
        keys: keys as never,
        signingAlgorithm: P256,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(publicKey as never),
        ],
      });
      assert.deepEqual(
        tbsOf(fromPem(made.certPem, 'CERTIFICATE')),
        tbsOf(new Uint8Array(library.rawData)),
        `${mesh.namespace}/${mesh.name}`,
      );
      assert.ok(await cert.verify({ signatureOnly: true }), 'self-signed by its key');
      const node = new X509Certificate(made.certPem);
      assert.ok(node.ca && node.checkIssued(node) && node.verify(node.publicKey), 'and Node agrees');
      // What it says of its validity is what the certificate says (the operator reads no certificate it just made).
      assert.deepEqual(
        { validFromMs: made.validFromMs, validToMs: made.validToMs },
        { validFromMs: Date.parse(node.validFrom), validToMs: Date.parse(node.validTo) },
      );
    }
  });

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

  it('names its CA as the issuer byte for byte, whatever the CA is called', async () => {
    // The issuer was the CA's subject as text, read again: a tab, a backslash sequence or two line
    // breaks came back as other bytes, and the chain broke (Kubernetes names hold none of them).
    for (const mesh of [MESH, { namespace: 'a\tb', name: 'c' }, { namespace: 'a\\0ab', name: 'x\ny\nz' }]) {
      const ca = await MeshCa.load(await createCa(mesh));
      const pem = await ca.issue({ csrPem: await csrFor(await newKeys()), mesh, node: 'n' });
      // Go builds chains by comparing these bytes (OpenSSL's checkIssued compares canonical names).
      const issuer = tbsFields(fromPem(pem, 'CERTIFICATE'))[3]!;
      const subject = tbsFields(fromPem(ca.certPem, 'CERTIFICATE'))[5]!;
      assert.deepEqual(issuer, subject, JSON.stringify(mesh));
      assert.ok(new X509Certificate(pem).checkIssued(new X509Certificate(ca.certPem)), JSON.stringify(mesh));
    }
    await assert.rejects(createCa(MESH, new Date(), 0), RangeError);
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
