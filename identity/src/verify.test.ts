import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import { createCa, MeshCa } from './ca.ts';
import { createNodeKey } from './node-key.ts';
import { readPemBundle, UntrustedCertificateError, verifyNodeCertificate } from './verify.ts';

const MESH = { namespace: 'shop', name: 'cdn' };
const NOW = new Date('2026-11-30T08:00:00Z');

describe('verifying a node certificate', () => {
  it('accepts one from any CA of the bundle, and names its node', async () => {
    const [old, next] = await Promise.all([createCa(MESH, NOW), createCa(MESH, NOW)]);
    const bundle = readPemBundle(old.certPem + next.certPem);
    assert.equal(bundle.length, 2);
    for (const material of [old, next]) {
      const ca = await MeshCa.load(material);
      const pem = await ca.issue({
        csrPem: (await createNodeKey('n')).csrPem,
        mesh: MESH,
        node: 'edge-1',
        now: NOW,
      });
      const identity = verifyNodeCertificate(new X509Certificate(pem), bundle, NOW.getTime() + 1000);
      assert.deepEqual(identity, { mesh: MESH, node: 'edge-1' });
    }
  });

  it('refuses another CA’s, an expired one, a CA certificate and garbage', async () => {
    const ca = await MeshCa.load(await createCa(MESH, NOW));
    const other = await MeshCa.load(await createCa(MESH, NOW));
    const bundle = readPemBundle(ca.certPem);
    const foreign = new X509Certificate(
      await other.issue({ csrPem: (await createNodeKey('n')).csrPem, mesh: MESH, node: 'edge-1', now: NOW }),
    );
    assert.throws(() => verifyNodeCertificate(foreign, bundle, NOW.getTime()), /not issued by this mesh/);
    const own = new X509Certificate(
      await ca.issue({ csrPem: (await createNodeKey('n')).csrPem, mesh: MESH, node: 'edge-1', now: NOW }),
    );
    assert.throws(() => verifyNodeCertificate(own, bundle, NOW.getTime() + 25 * 3600_000), /not valid now/);
    assert.throws(
      () => verifyNodeCertificate(new X509Certificate(ca.certPem), bundle, NOW.getTime()),
      UntrustedCertificateError,
    );
    assert.throws(() => readPemBundle('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'));
  });
});
