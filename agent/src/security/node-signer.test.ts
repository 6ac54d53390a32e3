import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestCa, testCredentials } from '../../harness/test-ca.ts';
import { rootDigest } from '../cache/chunking.ts';
import type { Manifest } from '../cache/manifest.ts';
import { NodeSigner, ManifestTrustError, StaleSignerError } from './node-signer.ts';
import { Revocations } from './revocations.ts';

const digest = 'ab'.repeat(32);
const unsigned = (over: Partial<Manifest> = {}): Omit<Manifest, 'signature'> => ({
  key: 'a/b',
  size: 10,
  chunkSize: 16,
  chunks: [digest],
  root: rootDigest(10, 16, [digest]),
  createdAtMs: Date.now(),
  ...over,
});

describe('manifest signatures', () => {
  it('a node signs; another node of the mesh verifies, and names the signer', async () => {
    const revocations = new Revocations();
    const [a, b] = await Promise.all([testCredentials('node-a'), testCredentials('node-b')]);
    const signer = new NodeSigner(a);
    const checker = new NodeSigner(b, { revocations });
    const m = unsigned();
    const signed: Manifest = { ...m, signature: signer.sign(m) };
    assert.equal(checker.verify(signed), 'node-a');
    // A verdict once given does not carry over to the same signature under another certificate.
    const otherCert = {
      ...signed,
      signature: { ...signed.signature!, certificate: new NodeSigner(b).sign(m).certificate },
    };
    assert.throws(() => checker.verify(otherCert), ManifestTrustError);
    assert.throws(
      () => checker.verify({ ...signed, signature: { ...signed.signature!, certificate: 'AAAA' } }),
      ManifestTrustError,
    );
    revocations.replace(['node-a']);
    assert.throws(
      () => checker.verify(signed),
      (e) => e instanceof StaleSignerError && /revoked/.test(e.message),
    );
    a.close();
    b.close();
  });

  it('refuses unsigned, altered, foreign, other-mesh and future-dated manifests', async () => {
    const foreignCa = await createTestCa('default');
    const [a, b, foreign, otherMesh] = await Promise.all([
      testCredentials('node-a'),
      testCredentials('node-b'),
      testCredentials('node-a', { ca: foreignCa }),
      testCredentials('node-a', { mesh: 'other' }),
    ]);
    const checker = new NodeSigner(b);
    const m = unsigned();
    const signedBy = (who: typeof a, manifest = m): Manifest => ({
      ...manifest,
      signature: new NodeSigner(who).sign(manifest),
    });
    const good = signedBy(a);
    const cases: [string, Manifest][] = [
      ['unsigned', m],
      ['another key under the signature', { ...good, key: 'a/c' }],
      ['a longer life', { ...good, expiresAtMs: Date.now() + 1e9 }],
      [
        'another root',
        {
          ...good,
          ...unsigned({ size: 11, root: rootDigest(11, 16, [digest]) }),
          signature: good.signature!,
        },
      ],
      ['another CA', signedBy(foreign)],
      [
        'another CA, dated before its certificate',
        signedBy(foreign, unsigned({ createdAtMs: Date.now() - 3 * 86_400_000 })),
      ],
      ['another mesh', signedBy(otherMesh)],
      ['dated after the certificate', signedBy(a, unsigned({ createdAtMs: Date.now() + 4 * 3600_000 }))],
      ['dated before the certificate', signedBy(a, unsigned({ createdAtMs: Date.now() - 3 * 86_400_000 }))],
      ['a signature of garbage', { ...m, signature: { certificate: 'AAAA', value: 'AAAA' } }],
    ];
    for (const [what, manifest] of cases)
      assert.throws(
        () => checker.verify(manifest),
        // Only a signer this node no longer trusts is no sign that the holder lied (PeerFetcher).
        (e) => e instanceof ManifestTrustError && e instanceof StaleSignerError === (what === 'another CA'),
        what,
      );
    for (const c of [a, b, foreign, otherMesh]) c.close();
  });

  it('signs a purge with the client that asked for it, and refuses it with another client named', async () => {
    const [a, b] = await Promise.all([testCredentials('node-a'), testCredentials('node-b')]);
    const checker = new NodeSigner(b);
    const at = Date.now();
    const signature = new NodeSigner(a).signPurge('k', at, 'token:ci');
    assert.equal(signature.by, 'token:ci');
    assert.equal(checker.verifyPurge('k', at, signature), 'node-a');
    assert.throws(
      () => checker.verifyPurge('k', at, { ...signature, by: 'token:other' }),
      ManifestTrustError,
    );
    assert.throws(() => checker.verifyPurge('k', at + 1, signature), ManifestTrustError);
    assert.throws(() => checker.verifyPurge('k2', at, signature), ManifestTrustError);
    a.close();
    b.close();
  });
});
