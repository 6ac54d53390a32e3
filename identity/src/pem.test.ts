import 'reflect-metadata'; // before @peculiar/x509, which needs it at import
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { createCa } from './ca.ts';
import { fromPem, toPem } from './pem.ts';

describe('PEM', () => {
  it('writes the text @peculiar/x509 writes, and reads back the same bytes', () => {
    for (const size of [0, 1, 2, 3, 47, 48, 49, 96, 1000]) {
      const der = randomBytes(size);
      const pem = toPem(der, 'CERTIFICATE');
      assert.equal(pem, x509.PemConverter.encode(der, 'CERTIFICATE'), `${size} bytes`);
      if (size > 0) assert.deepEqual(fromPem(pem, 'CERTIFICATE'), der);
    }
    const ab = randomBytes(70);
    assert.equal(toPem(ab.buffer.slice(ab.byteOffset, ab.byteOffset + 70), 'X'), toPem(ab, 'X'));
  });

  it('gives what Node and OpenSSL read: a CA certificate and key that load', async () => {
    const { certPem, keyPem } = await createCa({ namespace: 'ns', name: 'm' });
    assert.match(new X509Certificate(certPem).subject, /mesh m CA/);
    assert.equal(fromPem(keyPem, 'PRIVATE KEY')[0], 0x30); // a DER SEQUENCE
  });

  it('finds the block with its label past other text and other blocks, CRLF or not', () => {
    const der = randomBytes(100);
    const text = `Bag Attributes\r\n${toPem(randomBytes(9), 'PUBLIC KEY')}\r\n${toPem(der, 'CERTIFICATE').replaceAll('\n', '\r\n')}\r\n`;
    assert.deepEqual(fromPem(text, 'CERTIFICATE'), der);
  });

  it('refuses a missing block, a missing end, an empty body, headers and anything not base64', () => {
    const good = toPem(randomBytes(30), 'PRIVATE KEY');
    for (const [text, problem] of [
      ['', /no PEM block "PRIVATE KEY"/],
      [good.replace('END', 'FIN'), /no PEM block/],
      [toPem(randomBytes(30), 'EC PRIVATE KEY'), /no PEM block "PRIVATE KEY"/],
      ['-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----', /not base64/],
      [good.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n'), /not base64/],
      [good.replace(/\n(.)/, '\n*$1'), /not base64/],
      [good.replace(/=*\n-----END/, 'A\n-----END'), /not base64/],
      [good.replace('\n', '\n\u00a0'), /not base64/],
      [good.replace('\n', '\n\f'), /not base64/],
    ] as const)
      assert.throws(() => fromPem(text, 'PRIVATE KEY'), problem, JSON.stringify(text));
  });
});
