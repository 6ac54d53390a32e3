import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EdgeMesh } from '../api/edgemesh.ts';
import { meshId } from './desired.ts';

const id = (namespace: string, name: string) => meshId({ metadata: { namespace, name } } as EdgeMesh);

describe('mesh ids on the control plane', () => {
  it('gives no two meshes the same id (their NATS subjects, and what their credentials allow)', () => {
    assert.equal(id('shop', 'cdn'), 'shop_cdn');
    assert.notEqual(id('a-b', 'c'), id('a', 'b-c'));
    assert.notEqual(id('x', 'a.b'), id('x-a', 'b'));
    // A long name is a prefix, `__` and a hash: a short id never holds `__` (a valid name has no `..`),
    // so no mesh can be named to take a long one's id, not even by copying it.
    const long = id('shop', 'images.cdn.europe-west1.production.customer-facing.example.com');
    assert.ok(long.length <= 63 && /^[A-Za-z0-9_-]+$/.test(long), long);
    assert.match(long, /__[0-9a-f]{16}$/);
    const copied = long.slice('shop_'.length);
    for (const name of [copied.replaceAll('_', '.').replace('..', '.'), copied.replaceAll('_', '-')])
      assert.doesNotMatch(id('shop', name), /__/, name);
  });
});
