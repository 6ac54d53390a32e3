import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { identityOfSan, nodeSpiffeId, parseNodeSpiffeId, sanUris } from './spiffe.ts';

const MESH = { namespace: 'shop', name: 'cdn' };

describe('node SPIFFE ids', () => {
  it('round-trips, with namespace, mesh and node kept apart', () => {
    for (const node of ['edge-1', 'a/b', 'ü', '%41', 'x'.repeat(253)]) {
      const id = nodeSpiffeId(MESH, node);
      assert.deepEqual(parseNodeSpiffeId(id), { mesh: MESH, node });
    }
    assert.notEqual(
      nodeSpiffeId({ namespace: 'a-b', name: 'c' }, 'n'),
      nodeSpiffeId({ namespace: 'a', name: 'b-c' }, 'n'),
    );
  });

  it('refuses anything but the canonical form of our trust domain', () => {
    for (const uri of [
      'spiffe://other.dev/ns/shop/mesh/cdn/node/edge-1',
      'spiffe://edgemesh.p2p.dev/ns/shop/mesh/cdn/node/edge-1/extra',
      'spiffe://edgemesh.p2p.dev/ns/shop/mesh/cdn/node/',
      'spiffe://edgemesh.p2p.dev/ns/shop/mesh/cdn/node/%2',
      'spiffe://edgemesh.p2p.dev/ns/shop/mesh/cdn/node/%65dge', // 'edge' spelled another way
      'https://edgemesh.p2p.dev/ns/shop/mesh/cdn/node/edge-1',
    ])
      assert.equal(parseNodeSpiffeId(uri), undefined, uri);
  });

  it('reads the URIs of a subjectAltName as Node writes it, quoted values too', () => {
    assert.deepEqual(sanUris('URI:a, DNS:b, URI:c'), ['a', 'c']);
    assert.deepEqual(sanUris('URI:"x, URI:y", DNS:z'), ['x, URI:y']);
    assert.deepEqual(sanUris(undefined), []);
  });

  it('takes a certificate as a node identity only with exactly one URI, ours', () => {
    const id = nodeSpiffeId(MESH, 'edge-1');
    assert.deepEqual(identityOfSan(`URI:${id}`), { mesh: MESH, node: 'edge-1' });
    assert.deepEqual(identityOfSan(`DNS:edge-1, URI:${id}`), { mesh: MESH, node: 'edge-1' });
    assert.equal(identityOfSan(`URI:${id}, URI:${nodeSpiffeId(MESH, 'edge-2')}`), undefined);
    // A quoted value that would read as a second entry if split naively.
    assert.equal(identityOfSan(`URI:"x, URI:${id}"`), undefined);
    assert.equal(identityOfSan('DNS:edge-1'), undefined);
  });
});
